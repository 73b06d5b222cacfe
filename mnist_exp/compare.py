"""`python -m mnist_exp.compare RUN_A RUN_B`: are two models really different? McNemar's exact
test on the test digits only one of them gets right, and a figure of those digits."""

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_exp.config.schema import MlflowConfig
from mnist_exp.errors import MnistExpError, exit_with
from mnist_exp.sweeps.stats import mcnemar

if TYPE_CHECKING:
    from mnist_exp.tracking.store import Store

SIGNIFICANCE = 0.05  # below it, a difference is called unlikely to be chance


@dataclass(frozen=True)
class Comparison:
    """Two runs' predictions on the same test digits, and the test of their difference."""

    names: tuple[str, str]  # how each run is called: "<run name> (<id>)"
    labels: np.ndarray
    predicted: tuple[np.ndarray, np.ndarray]
    only_a: int  # test digits only A got right
    only_b: int
    p_value: float

    @property
    def accuracies(self) -> tuple[float, float]:
        return tuple(float(np.mean(p == self.labels)) for p in self.predicted)


def compare(run_a: str, run_b: str, store: "Store") -> Comparison:
    """Pair two runs' test predictions digit by digit; a MnistExpError if they cannot be paired."""
    from mnist_exp.tracking import read

    a, b = (read.load_predictions(run, store) for run in (run_a, run_b))
    if not np.array_equal(a["labels"], b["labels"]):
        raise MnistExpError(
            f"Runs {run_a} and {run_b} were not scored on the same test digits; "
            "only runs on MNIST's test set can be paired."
        )
    names = tuple(f"{read.run_name(run, store)} ({run})" for run in (run_a, run_b))
    only_a, only_b, p_value = mcnemar(a["predicted"] == a["labels"], b["predicted"] == b["labels"])
    return Comparison(names, a["labels"], (a["predicted"], b["predicted"]), only_a, only_b, p_value)


def verdict(comparison: Comparison) -> str:
    """What a person reads: both accuracies, the disagreements, the p-value and its meaning."""
    (name_a, name_b), (acc_a, acc_b) = comparison.names, comparison.accuracies
    only_a, only_b, p = comparison.only_a, comparison.only_b, comparison.p_value
    right_a, right_b = (predicted == comparison.labels for predicted in comparison.predicted)
    if p < SIGNIFICANCE:
        better = "A" if only_a > only_b else "B"
        meaning = f"is unlikely to be chance (p < {SIGNIFICANCE}): {better} is better"
    else:
        meaning = f"could well be chance (p >= {SIGNIFICANCE}): no evidence that they differ"
    return (
        f"A {name_a}: test accuracy {acc_a:.2%}\n"
        f"B {name_b}: test accuracy {acc_b:.2%}\n"
        f"Of {len(comparison.labels):,} test digits both got {np.sum(right_a & right_b):,} right "
        f"and {np.sum(~right_a & ~right_b):,} wrong; only A got {only_a} right, only B {only_b}.\n"
        f"McNemar's exact test: p {f'= {p:.3g}' if p else '< 1e-300'}; the difference {meaning}.\n"
    )


def test_images(dataset: dict[str, Any]) -> np.ndarray:
    """The test images (pixels in [0, 1]) of the dataset group's node the runs were scored on."""
    from mnist_exp.config.build import build
    from mnist_exp.groups.split import holdout

    def no_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # only the test set is used
        return holdout(labels, size=1)

    return build("dataset", dataset, split=no_split).x_test


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    found = argparse.ArgumentParser(prog="python -m mnist_exp.compare", description=__doc__)
    found.add_argument("run_a", help="an MLflow run id (see `mlflow ui`)")
    found.add_argument("run_b", help="another run id, scored on the same test set")
    found.add_argument("--out", help="the figure (default: outputs/compare/<a>_vs_<b>.png)")
    return found


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    from mnist_exp.figures import flipped_figure
    from mnist_exp.tracking.store import open_store

    out = Path(args.out or f"outputs/compare/{args.run_a[:8]}_vs_{args.run_b[:8]}.png")
    try:
        comparison = compare(args.run_a, args.run_b, open_store(MlflowConfig()))
        images = test_images({"_target_": "mnist_exp.groups.dataset.mnist"})
        if len(images) != len(comparison.labels):
            raise MnistExpError(
                f"The runs were scored on {len(comparison.labels):,} test images, not MNIST's "
                f"{len(images):,}: this command draws MNIST runs; compare others in a sweep."
            )
        figure = flipped_figure(images, comparison.labels, comparison.predicted, comparison.p_value)
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=80)
    except MnistExpError as error:
        exit_with(error)
    except OSError as error:
        exit_with(MnistExpError(f"Cannot write {out} ({error.strerror}); choose another --out."))
    print(verdict(comparison) + f"Digits that flipped: {out}")


if __name__ == "__main__":
    main()
