"""`make bench`: time prediction and start-up against plain Keras; print a table, write JSON."""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_exp.config import CNNConfig, DatasetConfig
from mnist_exp.data import fetch_mnist


def timed(call, repeats: int) -> list[float]:
    """Seconds taken by each of `repeats` calls."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def row(name: str, samples: list[float], unit: str, scale: float = 1.0) -> dict:
    values = [s * scale for s in samples]
    return {
        "name": name,
        "unit": unit,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def bench_prediction(images: np.ndarray, repeats: int) -> list[dict]:
    """One image through `predict_digit` (preprocessing included) vs `model.predict`; a batch."""
    from mnist_exp.model import build_model
    from mnist_exp.predict import Predictor

    model = build_model(CNNConfig())  # latency does not depend on the weights' values
    predictor = Predictor(model, "bench")
    digit, one = images[0], (images[:1, :, :, None] / np.float32(255))
    batch = images[:, :, :, None] / np.float32(255)
    for _ in range(10):  # warm-up: trace and compile both paths
        predictor.predict_digit(digit)
        model.predict(one, verbose=0)
    rows = [
        row(
            "predict_digit, 1 image",
            timed(lambda: predictor.predict_digit(digit), repeats),
            "ms",
            1000,
        ),
        row(
            "model.predict, 1 image",
            timed(lambda: model.predict(one, verbose=0), repeats),
            "ms",
            1000,
        ),
    ]
    throughput = [len(batch) / s for s in timed(lambda: predictor.probabilities(batch), 5)]
    rows.append(row(f"batch inference, {len(batch)} test images", throughput, "images/s"))
    return rows


def bench_cli(images: np.ndarray, workdir: Path) -> dict:
    """`python -m mnist_exp.predict` on a folder of PNG files, start-up included."""
    from mnist_exp.model import build_model

    folder = workdir / "pngs"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(255 - image).resize((84, 84)).save(folder / f"{i:05d}.png")
    model_path = workdir / "bench.keras"
    build_model(CNNConfig()).save(model_path)
    command = [sys.executable, "-m", "mnist_exp.predict", str(folder), "--model", str(model_path)]
    seconds = timed(lambda: subprocess.run(command, check=True, capture_output=True), 3)
    return row(
        f"predict CLI, folder of {len(images)} PNGs", [len(images) / s for s in seconds], "images/s"
    )


def bench_startup(repeats: int) -> list[dict]:
    """Seconds until `--help` and `--cfg job` answer: neither may import TensorFlow."""
    rows = []
    for flag in ("--help", "--cfg job"):
        command = [sys.executable, "-m", "mnist_exp.run", *flag.split()]
        seconds = timed(
            lambda c=command: subprocess.run(c, check=True, capture_output=True), repeats
        )
        rows.append(row(f"python -m mnist_exp.run {flag}", seconds, "s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mnist_exp.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and images")
    parser.add_argument("--output", default="outputs/bench.json", help="where to write the JSON")
    args = parser.parse_args()
    repeats, files = (20, 100) if args.quick else (300, 1000)

    test_images = fetch_mnist(DatasetConfig())["x_test"]
    rows = bench_prediction(test_images if not args.quick else test_images[:2000], repeats)
    with tempfile.TemporaryDirectory() as workdir:
        rows.append(bench_cli(test_images[:files], Path(workdir)))
    rows += bench_startup(2 if args.quick else 5)

    speedup = rows[1]["median"] / rows[0]["median"]
    print(f"{'benchmark':45} {'median':>10} {'min':>10} {'max':>10}  unit")
    for r in rows:
        print(f"{r['name']:45} {r['median']:10.2f} {r['min']:10.2f} {r['max']:10.2f}  {r['unit']}")
    print(f"predict_digit is {speedup:.0f}x faster than model.predict on one image")
    result = {
        "machine": platform.platform(),
        "processor": platform.processor(),
        "quick": args.quick,
        "rows": rows,
        "predict_digit_speedup": speedup,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
