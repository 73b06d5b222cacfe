"""The bench's table: timing samples as rows (median, min, max), the ratios between rows, and
the printed table."""

import statistics
import time


def timed(call, repeats: int) -> list[float]:
    """Seconds taken by each of `repeats` calls."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def row(name: str, samples: list[float], unit: str, scale: float = 1.0, of: int = 0) -> dict:
    """Median, min and max of the samples; `of`: how many tries the samples came from (a time to
    accuracy has none where a seed never reached it)."""
    values = [s * scale for s in samples]
    return {
        "name": name,
        "unit": unit,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "of": of or len(values),
    }


def ratios(median: dict[str, float]) -> dict[str, float]:
    """The ratios the README quotes, each made of the rows it names (medians by row name)."""
    plain = median["training, plain Keras model.fit, fp32"]
    default = median["training, project run, default"]
    found = {
        "project fp32 / plain Keras fp32": median["training, project run, fp32"] / plain,
        "project default / plain Keras fp32": default / plain,
        "project default / plain Keras mixed_bfloat16": default
        / median["training, plain Keras model.fit, mixed_bfloat16"],
        "project default / same, system metrics off": default
        / median["training, project run, default, system metrics off"],
        "project default, augment=light / project default": median[
            "training, project run, default, augment=light"
        ]
        / default,
        "model.predict / predict_digit (1 image)": median["model.predict, 1 image"]
        / median["predict_digit, 1 image"],
    }
    deterministic = median.get("training, project run, fp32, deterministic")
    if deterministic:
        found["project fp32 deterministic / project fp32"] = (
            deterministic / median["training, project run, fp32"]
        )
    return found


def lines(rows: list[dict], found: dict[str, float], accuracy: dict[str, float]):
    """The printed table: every row, every ratio, and each contender's test accuracy."""
    yield f"{'benchmark':52} {'median':>10} {'min':>10} {'max':>10}  unit"
    for r in rows:
        tries = f" ({r['n']} of {r['of']})" if r["n"] < r["of"] else ""
        yield (
            f"{r['name']:52} {r['median']:10.2f} {r['min']:10.2f} {r['max']:10.2f}  "
            f"{r['unit']}{tries}"
        )
    for name, value in found.items():
        yield f"{name:52} {value:10.2f}x"
    for name, value in accuracy.items():
        yield f"test accuracy, {name:37} {value:10.4f}"


def clock_problems(rows: list[dict], recipes: list[str]) -> list[str]:
    """What is wrong with a time-to-accuracy table: a recipe or contender without its wall time,
    start-up or phases, or a time that cannot be (not positive)."""
    median = {r["name"]: r["median"] for r in rows}
    found = []
    for recipe in recipes:
        for contender in ("project run", "plain Keras"):
            for measure in ("wall", "start-up to first step"):
                if f"{measure}, {recipe}, {contender}" not in median:
                    found.append(f"row {measure!r} of {recipe}, {contender} is missing")
        if not any(
            n.startswith("phase ") and n.endswith(f", {recipe}, project run") for n in median
        ):
            found.append(f"the phases of {recipe}, project run are missing")
    found += [f"{n}: {v} is not > 0" for n, v in median.items() if not v > 0]
    return found
