"""`python -m mnist_exp.bench [--quick | --time-to-accuracy]`: run the measurements, print and
write the table, and log it to MLflow as a run of its own experiment (`mnist_exp-bench`)."""

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

from mnist_exp.bench.clock import clock_ratios, clock_rows, time_to_accuracy
from mnist_exp.bench.serving import (
    bench_cli,
    bench_prediction,
    bench_serve,
    bench_startup,
    untrained_model,
)
from mnist_exp.bench.table import clock_problems, lines, ratios
from mnist_exp.bench.training import (
    CPU_SETTINGS,
    bench_cpu_settings,
    bench_logging,
    bench_system_metrics,
    bench_training,
)
from mnist_exp.config.schema import MlflowConfig
from mnist_exp.data import fetch_mnist
from mnist_exp.errors import MnistExpError
from mnist_exp.machine import cpu_flags, cpu_model
from mnist_exp.results.records import check_name, machine, make_record, write_record
from mnist_exp.tracking.recorded import log_measurement, model_versions
from mnist_exp.tracking.store import Store, open_store

EXPERIMENT = "mnist_exp-bench"  # never the runs' experiment: a bench registers and promotes nothing


def throughput_rows(quick: bool, workdir: Path) -> tuple[list[dict], dict, dict]:
    """Training throughput against plain Keras, logging, prediction, serving and start-up."""
    limit, epochs, repeats, calls, files = (
        (2000, 2, 1, 20, 50) if quick else (None, 3, 2, 300, 1000)
    )
    test_images = fetch_mnist()["x_test"]
    rows, accuracy = bench_training(limit, epochs, repeats, workdir, not quick)
    project_fp32 = next(r for r in rows if r["name"] == "training, project run, fp32")
    epoch_seconds = (limit or 55000) / project_fp32["median"]
    rows.append(bench_logging(epoch_seconds, calls, workdir))
    rows.append(bench_system_metrics(3 if quick else 10, 1 if quick else 3, workdir))
    rows += bench_prediction(test_images, calls)
    model_path = untrained_model(workdir)
    rows.append(bench_cli(test_images[:files], 1 if quick else 3, model_path, workdir))
    rows.append(bench_serve(test_images[0], calls, model_path))
    rows += bench_startup(2 if quick else 5)
    # 19,200 images: 150 steps of 128, which 30 steps a call divide
    rows += bench_cpu_settings("fast", limit or 19200, 2 if quick else 3, repeats)
    found = ratios({r["name"]: r["median"] for r in rows})
    return rows, found, {f"after {epochs} epochs, {name}": a for name, a in accuracy.items()}


# Every row a bench writes, quick or full: a missing one means a measurement silently broke.
EXPECTED_ROWS = (
    "training, plain Keras model.fit, fp32",
    "training, plain Keras model.fit, mixed_bfloat16",
    "training, project run, fp32",
    "training, project run, default",
    "training, project run, default, system metrics off",
    "training, project run, default, augment=light",
    "system metrics sampler CPU / machine CPU",
    "MLflow logging per epoch / epoch time",
    "predict_digit, 1 image",
    "model.predict, 1 image",
    "POST /predict (HTTP, one 280x280 PNG)",
)


def problems(rows: list[dict], accuracy: dict[str, float]) -> list[str]:
    """What is wrong with a finished table: missing rows, impossible figures, models that did not
    learn (2 epochs on 2,000 images reach far above chance, 0.1)."""
    median = {r["name"]: r["median"] for r in rows}
    expected = [*EXPECTED_ROWS, *(f"CPU setting, fast: {name}" for name in CPU_SETTINGS)]
    found = [f"row {name!r} is missing" for name in expected if name not in median]
    if not any(name.startswith("predict CLI") for name in median):
        found.append("the predict CLI row is missing")
    found += [f"{name}: {value} is not > 0" for name, value in median.items() if not value > 0]
    sampler = median.get("system metrics sampler CPU / machine CPU", 0)
    if not sampler < 5:
        found.append(f"the system metrics sampler takes {sampler}% of the CPU (>= 5%)")
    found += [f"{name} reached test accuracy {a}" for name, a in accuracy.items() if not a > 0.5]
    return found


def log_bench(uri: str, result: dict, figure) -> str:
    """The table as an MLflow run of the bench's experiment in the user's store `uri`: params,
    metrics, figure, JSON."""
    return log_measurement(
        Store(uri, EXPERIMENT),
        "time to accuracy" if figure else "bench",
        params={k: result[k] for k in ("cpu", "flags", "cores", "quick")},
        metrics={clean(f"{r['name']} in {r['unit']}"): r["median"] for r in result["rows"]},
        artifacts={"bench.json": result},
        figures={"time_to_accuracy.png": figure} if figure else {},
    )


def clean(name: str) -> str:
    """A row name as an MLflow metric key (letters, digits, _ - . space : / only)."""
    kept = "".join(
        c if c.isalnum() or c in "_-. :/" else " " for c in name.replace("%", " percent")
    )
    return " ".join(kept.split())


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    found = argparse.ArgumentParser(prog="python -m mnist_exp.bench", description=__doc__)
    found.add_argument(
        "--quick",
        action="store_true",
        help="every row on a 2,000-image subset, 2 epochs, one repetition (a few minutes)",
    )
    found.add_argument(
        "--time-to-accuracy",
        action="store_true",
        help="seconds to 99.0/99.5/99.6/99.7%% test accuracy, project and plain Keras (hours)",
    )
    found.add_argument("--recipes", default="default,fast,best", help="for --time-to-accuracy")
    found.add_argument("--seeds", type=int, default=3, help="for --time-to-accuracy")
    found.add_argument(
        "--override",
        action="append",
        default=[],
        help="for --time-to-accuracy: a Hydra override for every run (e.g. precision=fp32; repeat)",
    )
    found.add_argument("--output", help="the JSON's path (default: outputs/bench*.json)")
    found.add_argument(
        "--record", metavar="NAME", help="also write the record docs/results/NAME.json"
    )
    found.add_argument("--title", default="", help="for --record: what was measured, in words")
    return found


def clocked_rows(args: argparse.Namespace, recipes: list[str], workdir: Path) -> tuple:
    """Time to accuracy, project and plain Keras, seed by seed: rows, ratios, each run's last
    accuracy, the figure, each run as watched and the precisions the runs used."""
    seeds = [1] if args.quick else list(range(1, args.seeds + 1))
    runs = time_to_accuracy(recipes, seeds, args.quick, workdir, args.override)
    watched_runs = {f"{r}, {c}": seen for (r, c), seen in runs.items()}
    rows = clock_rows(runs)
    found = clock_ratios({r["name"]: r["median"] for r in rows}, recipes)
    accuracy = {
        f"last epoch, {recipe}, {contender}, seed {seed}": run["curve"][-1][1]
        for (recipe, contender), seen in runs.items()
        for seed, run in zip(seeds, seen, strict=True)
    }
    precision = {run["precision"] for seen in runs.values() for run in seen}
    print(f"precision used: {', '.join(sorted(precision))}")
    from mnist_exp.figures import time_to_accuracy_figure

    figure = time_to_accuracy_figure(
        {name: [run["curve"] for run in seen] for name, seen in watched_runs.items()}
    )
    return rows, found, accuracy, figure, watched_runs, precision


def write_bench_record(args: argparse.Namespace, figures: dict, precision: set, run_id: str):
    """The record docs/results/NAME.json (`--record NAME`) of this bench; its path."""
    from mnist_exp.train import POLICIES  # the runs report Keras' policy names

    command = shlex.join(["python", "-m", "mnist_exp.bench", *sys.argv[1:]])
    named = {policy: name for name, policy in POLICIES.items()}
    on = machine(", ".join(sorted(named.get(p, p) for p in precision)))
    title = args.title or ("time to accuracy" if args.time_to_accuracy else "bench")
    record = make_record(args.record, "bench", title, command, figures, runs=[run_id], on=on)
    return write_record(record)


def main(argv: list[str] | None = None) -> None:
    arguments = parser()
    args = arguments.parse_args(argv)
    if args.record:  # before hours of measuring, not after
        try:
            check_name(args.record)
        except MnistExpError as error:
            arguments.error(str(error))
    recipes = args.recipes.split(",")
    default = (
        "outputs/bench-time-to-accuracy.json" if args.time_to_accuracy else "outputs/bench.json"
    )
    output = Path(args.output or default)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")  # an AVX-512/AMX CPU standing in for an AVX2 one
    limit = f", oneDNN limited to {isa} (ONEDNN_MAX_CPU_ISA)" if isa else ""
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {cpu_flags() or 'no AVX2'}{limit}")

    rows, found, accuracy, figure, watched_runs, precision = [], {}, {}, None, {}, set()
    # the user's store, resolved before the measurements (which log to temporary stores of their
    # own), and its registry, to which a bench must add no model version
    user_store = open_store(MlflowConfig())
    versions = model_versions(user_store)
    with tempfile.TemporaryDirectory() as folder:
        if args.quick or args.time_to_accuracy:
            rows, found, accuracy, figure, watched_runs, precision = clocked_rows(
                args, recipes, Path(folder)
            )
        if not args.time_to_accuracy:
            more_rows, more_ratios, more_accuracy = throughput_rows(args.quick, Path(folder))
            rows, found, accuracy = rows + more_rows, found | more_ratios, accuracy | more_accuracy

    for line in lines(rows, found, accuracy):
        print(line)
    result = {
        "cpu": cpu_model(),
        "flags": cpu_flags(),
        "cores": os.cpu_count(),
        "quick": args.quick,
        "rows": rows,
        "ratios": found,
        "test_accuracy": accuracy,
        "runs": watched_runs,  # each time-to-accuracy run: its curve, phases, start-up and wall
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    run_id = log_bench(user_store.uri, result, figure)
    print(f"wrote {output}; MLflow run {run_id} in experiment {EXPERIMENT}")
    if args.record:
        figures = {"recipes": recipes if watched_runs else [], "rows": rows, "ratios": found}
        print(f"wrote {write_bench_record(args, figures, precision, run_id)}")
    wrong = problems(rows, accuracy) if not args.time_to_accuracy else []
    if args.quick or args.time_to_accuracy:
        wrong += clock_problems(rows, recipes)
    if (now := model_versions(user_store)) != versions:
        wrong.append(f"the user's registry went from {versions} to {now} model versions")
    if wrong:
        raise SystemExit("bench check failed:\n  " + "\n  ".join(wrong))


if __name__ == "__main__":
    main()
