"""The blocks a page can hold, each rendered from records: the headline, a recipe's seeds, what each
lever of a recipe changed, a bench's rows, a carried-over table, single figures inline, and where
each record was measured."""

import statistics

from mnist_exp.errors import MnistExpError
from mnist_exp.names import (
    BEST_EPOCH,
    BEST_TRAIN_ACCURACY,
    BEST_VAL_ACCURACY,
    EPOCHS_RUN,
    FONTS_PART,
    PRINTED_PART,
    TEST_ACCURACY,
    TRAIN_ACCURACY,
    TRAIN_SECONDS,
    WALL_SECONDS,
    WRITERS_HELD_OUT,
    WRITERS_VALIDATION,
    extra_metrics,
    part_metric,
)
from mnist_exp.results.markdown import (
    NONE,
    block,
    code,
    mean_range,
    number,
    percent,
    seconds,
    table,
)

# The README's headline table: a row per recipe, its record and the command that runs one seed (a
# recipe that joins the table adds its row here).
HEADLINE = (
    ("best", "python -m mnist_exp.run experiment=best"),
    ("fast", "python -m mnist_exp.run experiment=fast"),
    ("default", "python -m mnist_exp.run"),
    ("best-bn", "python -m mnist_exp.run experiment=best_bn"),
    ("seed", "python -m mnist_exp.run experiment=seed"),
)
ROBUSTNESS = extra_metrics("robustness")[1]
# Real handwriting: the writers' held-out rows, never chosen on. A run recorded before the writers
# were split has in its place the one writers part of then (200 digits drawn from all the rows).
HANDWRITING = part_metric(ROBUSTNESS, WRITERS_HELD_OUT)
EARLIER = {HANDWRITING: part_metric(ROBUSTNESS, "writers")}


def figure(run: dict, metric: str) -> float | None:
    """A run's metric, or what a run recorded before the metric existed has in its place."""
    metrics = run["metrics"]
    return metrics[metric] if metric in metrics else metrics.get(EARLIER.get(metric, metric))


def values(record: dict, metric: str) -> list[float]:
    """One metric of each of a `runs` record's runs that has it (`figure`)."""
    found = [figure(run, metric) for run in record["figures"]["runs"]]
    return [value for value in found if value is not None]


def avx2_class(machine: dict) -> bool:
    """Whether its training ran on AVX2 kernels in fp32: an AVX2-only CPU, or a bigger one with
    oneDNN capped at AVX2 (the stand-in)."""
    flags = set(machine.get("flags", "").split())
    capped = machine.get("isa_limit", "").upper() == "AVX2"
    return capped or ("avx2" in flags and not flags & {"avx512_bf16", "amx_bf16"})


def record_seconds(record: dict) -> float | None:
    """A timed command's seconds, or the median of a recipe's runs (its seeds), start to end."""
    if record["kind"] == "timed":
        return record["figures"]["seconds"]
    walls = values(record, WALL_SECONDS)
    return statistics.median(walls) if walls else None


def record_minutes(record: dict) -> str:
    taken = record_seconds(record)
    return NONE if taken is None else f"{taken / 60:.1f}"


def record_handwriting(record: dict) -> str:
    """The mean share of real handwriting read right, and over which seeds if not all."""
    found = values(record, HANDWRITING)
    runs = record["figures"]["runs"]
    if not found:
        return NONE
    if len(found) == len(runs):
        return percent(statistics.mean(found))
    seeds = ", ".join(str(r["seed"]) for r in runs if figure(r, HANDWRITING) is not None)
    return f"{percent(statistics.mean(found))} (seed {seeds})"


def headline(records: dict[str, dict]) -> str:
    """A row per recipe: MNIST test over its seeds, real handwriting, minutes a seed on AVX2."""
    if missing := [name for name, _ in HEADLINE if name not in records]:
        raise MnistExpError(f"The headline needs the records {', '.join(missing)}.")
    rows = []
    for name, command in HEADLINE:
        record = records[name]
        avx2 = record_minutes(record) if avx2_class(record["machine"]) else NONE
        test = mean_range(values(record, TEST_ACCURACY))
        rows.append([record["title"], code(command), test, record_handwriting(record), avx2])
    head = ["recipe", "command", "MNIST test, mean (min - max) over seeds", "real handwriting"]
    return block(table([*head, "minutes a seed, 2 AVX2 cores"], rows))


def minutes_of(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


# The columns of a table of seeds: heading, metric, how a value (or the mean) reads
SEED_COLUMNS = (
    ("validation", BEST_VAL_ACCURACY, percent),
    ("test", TEST_ACCURACY, percent),
    ("best epoch", BEST_EPOCH, lambda value: f"{value:.0f}"),
    ("real handwriting", HANDWRITING, percent),
    ("robustness set", ROBUSTNESS, percent),
    ("minutes", WALL_SECONDS, minutes_of),
)


def seeds(records: dict[str, dict], name: str) -> str:
    """Seed by seed, then the mean: validation, test, best epoch, handwriting, minutes, run; a
    column no run has is left out."""
    record = records[name]
    runs = record["figures"]["runs"]
    shown = [column for column in SEED_COLUMNS if values(record, column[1])]
    rows = [
        [str(run["seed"])]
        + [NONE if (v := figure(run, m)) is None else show(v) for _, m, show in shown]
        + [code(run["run_id"])]
        for run in runs
    ]
    if len(runs) > 1:
        means = [
            "" if m == BEST_EPOCH else show(statistics.mean(values(record, m)))
            for _, m, show in shown
        ]
        rows.append(["**mean**", *means, ""])
    return block(table(["seed", *(heading for heading, _, _ in shown), "MLflow run"], rows))


def summary(records: dict[str, dict], *names: str) -> str:
    """A row per record: what, command, seeds, validation and test over the seeds, minutes."""
    rows = []
    for name in names:
        record = records[name]
        runs = record["figures"]["runs"]
        accuracies = [mean_range(values(record, m)) for m in (BEST_VAL_ACCURACY, TEST_ACCURACY)]
        rows.append(
            [
                record["title"],
                code(record["command"]),
                str(len(runs)),
                *accuracies,
                record_minutes(record),
            ]
        )
    head = ["what", "command", "seeds", "validation", "test", "minutes a seed"]
    return block(table(head, rows))


# What a lever changes, MNIST's and the robustness set's parts: (heading, metric)
LEVER_COLUMNS = (
    ("MNIST validation", BEST_VAL_ACCURACY),
    ("MNIST test", TEST_ACCURACY),
    ("writers validation", part_metric(ROBUSTNESS, WRITERS_VALIDATION)),
    ("writers held out", HANDWRITING),
    ("printed", part_metric(ROBUSTNESS, PRINTED_PART)),
    ("handwriting fonts", part_metric(ROBUSTNESS, FONTS_PART)),
)


def levers(records: dict[str, dict], base: str, *names: str) -> str:
    """A row per record that changes one thing of `base`: the mean of each column over its seeds,
    and in brackets the change from `base`'s runs of the same seeds (a lever is chosen on the
    writers' validation part and MNIST validation; the rest is reported beside)."""
    by_seed = {run["seed"]: run for run in records[base]["figures"]["runs"]}
    rows = []
    for name in names:
        runs = records[name]["figures"]["runs"]
        if missing := [run["seed"] for run in runs if run["seed"] not in by_seed]:
            raise MnistExpError(f"{base} has no run of seed {missing[0]} to compare {name} with.")
        cells = []
        for _, metric in LEVER_COLUMNS:
            pairs = [(figure(run, metric), figure(by_seed[run["seed"]], metric)) for run in runs]
            if any(value is None or was is None for value, was in pairs):
                cells.append(NONE)
                continue
            change = 100 * statistics.mean(value - was for value, was in pairs)
            cells.append(f"{percent(statistics.mean(v for v, _ in pairs))} ({change:+.2f})")
        seeds_run = ", ".join(str(run["seed"]) for run in runs)
        rows.append([records[name]["title"], code(records[name]["command"]), seeds_run, *cells])
    head = ["what", "command", "seeds", *(heading for heading, _ in LEVER_COLUMNS)]
    return block(table(head, rows))


def zoo(records: dict[str, dict], name: str) -> str:
    """A row per architecture: parameters, epochs run (the best), validation, test, minutes."""
    rows = []
    for run in records[name]["figures"]["runs"]:
        model = next(o for o in run["overrides"].split() if o.startswith("model="))
        metrics = run["metrics"]
        rows.append([
            code(model), f"{run['parameters']:,}",
            f"{metrics[EPOCHS_RUN]:.0f} ({metrics[BEST_EPOCH]:.0f})",
            percent(metrics[BEST_VAL_ACCURACY]), percent(metrics[TEST_ACCURACY]),
            f"{metrics[TRAIN_SECONDS] / 60:.1f}", code(run["run_id"]),
        ])  # fmt: skip
    head = ["model", "parameters", "epochs run (best)", "validation", "test", "training minutes"]
    return block(table([*head, "MLflow run"], rows))


# The seed document's own report (SEED.md): train, validation and test accuracy.
SEED_REPORT = (0.9158, 0.9404, 0.9240)


def single(records: dict[str, dict], *names: str) -> str:
    """One run of each record beside the seed's own report: train (dropout off and running),
    validation and test accuracy, epochs, minutes."""
    train, val, test = SEED_REPORT
    rows = [["the seed's own report", NONE, "up to 50", *map(percent, (train, None, val, test))]]
    for name in names:
        record = records[name]
        metrics = record["figures"]["runs"][0]["metrics"]
        rows.append([
            record["title"], code(record["command"]),
            f"{metrics[EPOCHS_RUN]:.0f} ({metrics[BEST_EPOCH]:.0f})",
            percent(metrics.get(TRAIN_ACCURACY)), percent(metrics.get(BEST_TRAIN_ACCURACY)),
            percent(metrics[BEST_VAL_ACCURACY]), percent(metrics[TEST_ACCURACY]),
        ])  # fmt: skip
    head = ["run", "command", "epochs run (best)", "train", "train (running)", "validation"]
    return block(table([*head, "test"], rows))


def contenders(median: dict[str, dict], measure: str, recipe: str) -> str:
    """A bench's median of `measure` for the project run / for plain Keras, in seconds."""
    found = [median.get(f"{measure}, {recipe}, {c}") for c in ("project run", "plain Keras")]
    return " / ".join(NONE if row is None else seconds(row["median"]) for row in found)


def time_to_accuracy(records: dict[str, dict], *names: str) -> str:
    """A row per recipe a bench timed: each contender's median wall, time to 99.0 and 99.5% test
    and to the first training step (project / plain Keras), and the project's time after the
    last epoch."""
    rows = []
    for name in names:
        figures = records[name]["figures"]
        median = {row["name"]: row for row in figures["rows"]}
        for recipe in figures["recipes"]:
            ratio = figures["ratios"].get(f"wall, {recipe}: project / plain Keras")
            after = median.get(f"after the last epoch, {recipe}, project run")
            pairs = [
                contenders(median, measure, recipe)
                for measure in ("time to 99.0%", "time to 99.5%", "start-up to first step")
            ]
            rows.append([
                code(recipe), str(median[f"wall, {recipe}, project run"]["n"]),
                contenders(median, "wall", recipe), NONE if ratio is None else f"**{ratio:.2f}x**",
                *pairs, NONE if after is None else seconds(after["median"]),
            ])  # fmt: skip
    head = ["recipe", "seeds", "wall s, project / plain Keras", "ratio", "to 99.0% s", "to 99.5% s"]
    return block(table([*head, "to the first step s", "after the last epoch s"], rows))


def bench(records: dict[str, dict], name: str) -> str:
    """`make bench`'s rows (median, min, max) and the ratios it draws from them."""
    figures = records[name]["figures"]
    rows = [
        [row["name"], *(number(row.get(key)) for key in ("median", "min", "max")), row["unit"]]
        for row in figures["rows"]
    ]
    rows += [
        [f"ratio: {key}", f"{ratio:.2f}x", "", "", ""] for key, ratio in figures["ratios"].items()
    ]
    return block(table(["benchmark", "median", "min", "max", "unit"], rows))


def carried(records: dict[str, dict], name: str) -> str:
    """A table carried over from the docs of before records existed, as they quoted it."""
    figures = records[name]["figures"]
    return block(table(figures["columns"], [[str(c) for c in row] for row in figures["rows"]]))


def output(records: dict[str, dict], name: str) -> str:
    """The last lines a timed command printed, as a code block."""
    return block("```text\n" + "\n".join(records[name]["figures"]["output"]) + "\n```")


def duration(records: dict[str, dict], name: str) -> str:
    """How long a timed command, or a recipe's median seed, took: `53 seconds`, `13 minutes`."""
    taken = record_seconds(records[name])
    if taken is None:
        return NONE
    return f"{taken:.0f} seconds" if taken < 120 else f"{taken / 60:.0f} minutes"


def handwriting(records: dict[str, dict], name: str) -> str:
    return record_handwriting(records[name])


def mean_test(records: dict[str, dict], name: str) -> str:
    return percent(statistics.mean(values(records[name], TEST_ACCURACY)))


def passed(records: dict[str, dict], name: str) -> str:
    """How many tests a timed suite passed."""
    return str(records[name]["figures"]["passed"])


def machine_text(machine: dict) -> str:
    cap = f", oneDNN capped at {machine['isa_limit']}" if machine.get("isa_limit") else ""
    flags = machine.get("flags") or "no AVX2"
    return f"{machine['cpu']}, {machine['cores']} cores ({flags}{cap})"


def measured(records: dict[str, dict]) -> str:
    """Where each record came from: the command, the machine, the precision, the libraries, the
    date and the MLflow runs."""
    rows = []
    for name, record in records.items():
        machine = record["machine"]
        runs = record["runs"] or [r["run_id"] for r in record["figures"].get("runs", [])]
        shown = ", ".join(code(run[:8]) for run in runs[:3]) + (" ..." if len(runs) > 3 else "")
        versions = f"{machine.get('tensorflow', '?')} / {machine.get('keras', '?')}"
        rows.append([
            code(name), code(record["command"]), machine_text(machine),
            machine.get("precision") or NONE, versions, record["measured"],
            "carried over" if record.get("carried_over") else "recorded", shown or NONE,
        ])  # fmt: skip
    head = ["record", "command", "machine", "precision", "TensorFlow / Keras", "measured", "how"]
    return block(table([*head, "MLflow runs"], rows))
