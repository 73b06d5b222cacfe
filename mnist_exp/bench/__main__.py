"""`python -m mnist_exp.bench [--quick]`: run every measurement and write the table."""

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from mnist_exp.bench.serving import (
    bench_cli,
    bench_prediction,
    bench_serve,
    bench_startup,
    untrained_model,
)
from mnist_exp.bench.table import lines, problems, ratios
from mnist_exp.bench.training import bench_logging, bench_system_metrics, bench_training
from mnist_exp.config.schema import DatasetConfig
from mnist_exp.data import fetch_mnist


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mnist_exp.bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a 2,000-image subset, 2 epochs, one repetition (a few minutes)",
    )
    parser.add_argument("--output", default="outputs/bench.json", help="where to write the JSON")
    args = parser.parse_args()
    limit, epochs, repeats, calls, files = (
        (2000, 2, 1, 20, 50) if args.quick else (None, 3, 2, 300, 1000)
    )

    test_images = fetch_mnist(DatasetConfig())["x_test"]
    with tempfile.TemporaryDirectory() as workdir:
        rows, accuracy = bench_training(limit, epochs, repeats, Path(workdir), not args.quick)
        project_fp32 = next(r for r in rows if r["name"] == "training, project run, fp32")
        epoch_seconds = (limit or 55000) / project_fp32["median"]
        rows.append(bench_logging(epoch_seconds, calls, Path(workdir)))
        rows.append(
            bench_system_metrics(3 if args.quick else 10, 1 if args.quick else 3, Path(workdir))
        )
        rows += bench_prediction(test_images, calls)
        model_path = untrained_model(Path(workdir))
        rows.append(
            bench_cli(test_images[:files], 1 if args.quick else 3, model_path, Path(workdir))
        )
        rows.append(bench_serve(test_images[0], calls, model_path))
    rows += bench_startup(2 if args.quick else 5)

    found = ratios({r["name"]: r["median"] for r in rows})
    for line in lines(rows, found, accuracy, epochs):
        print(line)
    result = {
        "machine": platform.platform(),
        "processor": platform.processor(),
        "cores": os.cpu_count(),
        "quick": args.quick,
        "epochs": epochs,
        "train_images": limit or 55000,
        "rows": rows,
        "ratios": found,
        "test_accuracy": accuracy,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")
    if wrong := problems(rows, accuracy):
        raise SystemExit("bench check failed:\n  " + "\n  ".join(wrong))


if __name__ == "__main__":
    main()
