"""Every figure the project draws, from plain values: a run's confusion matrix, curves, mistakes and
architecture; a sweep's summary; two runs' disagreements; a prediction's before/after."""

import textwrap
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure  # no pyplot: figures are only saved, never shown
from matplotlib.ticker import MaxNLocator

from mnist_exp.names import FINISHED

if TYPE_CHECKING:
    import keras
    import optuna


def confusion_figure(confusion: np.ndarray, title: str, classes: Sequence[str]) -> Figure:
    """Heatmap of a confusion matrix, rows true, columns predicted, each labelled by its class;
    empty cells stay blank (half the drawing time of annotating all, and easier to read)."""
    figure = Figure(figsize=(6.5, 5.5))
    axes = figure.subplots()
    axes.imshow(confusion, cmap="Blues", interpolation="nearest")
    dark = confusion.max() / 2
    for (row, column), count in np.ndenumerate(confusion):
        if count:
            colour = "white" if count > dark else "black"
            axes.text(column, row, f"{count}", ha="center", va="center", color=colour)
    names = max(map(len, classes)) > 2  # not digits: vertical, and room made for them
    axes.set_xticks(range(len(classes)), classes, rotation="vertical" if names else "horizontal")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("Predicted label")
    axes.set_ylabel("True label")
    accuracy = np.trace(confusion) / confusion.sum()
    axes.set_title(f"{title}: accuracy {accuracy:.2%}")
    if names:
        figure.tight_layout()
    else:
        figure.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.93)
    return figure


def curves_figure(history: dict[str, list[float]]) -> Figure:
    """Loss and accuracy per epoch, training and validation."""
    figure = Figure(figsize=(10, 4))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = range(1, len(history["loss"]) + 1)
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.plot(epochs, history[metric], marker="o", label="train")
        axes.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    return figure


def digit_grid(
    images: np.ndarray, captions: list[str], colours: list[str], columns: int, title: str
) -> Figure:
    """Images (pixels in [0, 1]) tiled into one, each captioned below: one axes, so it draws in a
    tenth of the time of a subplot per image."""
    rows = max(1, -(-len(images) // columns))
    tiles = np.ones((rows * 36, columns * 32))  # white: 28x28 digits with gaps for captions
    for n, image in enumerate(images):
        row, column = divmod(n, columns)
        tiles[row * 36 + 2 : row * 36 + 30, column * 32 + 2 : column * 32 + 30] = (
            1 - image.squeeze()
        )
    figure = Figure(figsize=(columns * 1.3, rows * 1.5 + 0.5))
    axes = figure.add_axes((0.01, 0.01, 0.98, 0.98 - 0.45 / (rows * 1.5 + 0.5)))
    axes.imshow(tiles, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes.axis("off")
    for n, (caption, colour) in enumerate(zip(captions, colours, strict=True)):
        row, column = divmod(n, columns)
        axes.text(column * 32 + 16, row * 36 + 34, caption, ha="center", fontsize=8, color=colour)
    figure.suptitle(title, fontsize=9)
    return figure


def misclassified_figure(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    classes: Sequence[str],
    count: int = 36,
) -> Figure:
    """A grid of the first `count` misclassified images, captioned true -> predicted."""
    all_wrong = np.flatnonzero(labels != predicted)
    wrong = all_wrong[:count]
    return digit_grid(
        images[wrong],
        [f"{classes[labels[i]]} -> {classes[predicted[i]]}" for i in wrong],
        ["black"] * len(wrong),
        columns=6,
        title=f"Misclassified test images, true -> predicted: first {len(wrong)} of "
        f"{len(all_wrong)}",
    )


def sweep_figure(rows: list[dict], curves: dict[str, list[float]]) -> Figure:
    """A sweep at a glance: best validation accuracy per job (failed ones marked), and every
    job's validation accuracy per epoch overlaid."""
    labels = [textwrap.fill(row["overrides"], 40) for row in rows]
    height = sum(label.count("\n") + 1 for label in labels)
    figure = Figure(figsize=(14, max(4.0, 0.3 * height + 1.5)))
    bars, lines = figure.subplots(1, 2, width_ratios=(3, 2))
    finished = [row["val_accuracy"] for row in rows if row["status"] == FINISHED]
    low = min(finished) - 0.02 if finished else 0.0
    for y, row in enumerate(rows):
        ok = row["status"] == FINISHED
        value = row["val_accuracy"] if ok else low
        bars.barh(y, value - low, left=low, color="tab:blue" if ok else "tab:red")
        bars.text(value, y, f" {value:.4f}" if ok else f" {row['status']}", va="center", fontsize=8)
    bars.set_yticks(range(len(rows)), labels, fontsize=8)
    bars.set_xlim(low, 1.0)
    bars.invert_yaxis()
    bars.set_xlabel("best validation accuracy")
    for label, series in curves.items():
        lines.plot(range(1, len(series) + 1), series, marker="o", label=textwrap.fill(label, 40))
    lines.set_xlabel("epoch")
    lines.xaxis.set_major_locator(MaxNLocator(integer=True))
    lines.set_ylabel("validation accuracy")
    lines.grid(alpha=0.3)
    if curves:
        lines.legend(fontsize=7)
    figure.tight_layout()
    return figure


def config_figure(grouped: list[dict]) -> Figure:
    """Configurations repeated over seeds or folds: validation and test accuracy as the mean and
    its 95% interval (a bare dot where n < 2 gives none)."""
    labels = [f"{textwrap.fill(row['overrides'], 40)}\n(n={row['n']})" for row in grouped]
    height = sum(label.count("\n") + 1 for label in labels)
    figure = Figure(figsize=(10, max(3.0, 0.35 * height + 1.5)))
    axes = figure.subplots()
    for shift, split, colour in ((-0.15, "val", "tab:blue"), (0.15, "test", "tab:orange")):
        for y, row in enumerate(grouped):
            mean, low, high = (row[f"{split}_{s}"] for s in ("mean", "ci_low", "ci_high"))
            error = [[mean - low], [high - mean]] if high == high else None
            name = ("validation" if split == "val" else "test") if y == 0 else None
            axes.errorbar(mean, y + shift, xerr=error, fmt="o", color=colour, capsize=3, label=name)
    axes.set_yticks(range(len(grouped)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("accuracy: mean and 95% t interval over seeds and folds")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def architecture_figure(model: "keras.Model") -> Figure:
    """The model layer by layer, input at the top: each layer's type and output shape, and a bar
    for its parameters (log scale), so one sees where the weights are."""
    layers = model.layers
    labels = [f"{type(layer).__name__} {tuple(layer.output.shape[1:])}" for layer in layers]
    counts = [layer.count_params() for layer in layers]
    figure = Figure(figsize=(8, 0.28 * len(layers) + 1.2))
    axes = figure.subplots()
    axes.barh(range(len(layers)), [max(c, 0.8) for c in counts], color="tab:blue")
    for y, count in enumerate(counts):
        axes.text(max(count, 1), y, f" {count:,}" if count else "", va="center", fontsize=7)
    axes.set_yticks(range(len(layers)), labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlim(0.8, max(counts) * 20)
    axes.set_xlabel("parameters")
    axes.set_title(f"{model.name}: {model.count_params():,} parameters", fontsize=9)
    figure.tight_layout()
    return figure


def flipped_figure(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: tuple[np.ndarray, np.ndarray],
    p_value: float,
    count: int = 48,
) -> Figure:
    """A grid of the test digits only one of two runs (A, B) got right, captioned with the truth
    and both guesses: blue where A was right, red where B was."""
    right_a, right_b = (p == labels for p in predicted)
    flipped = np.flatnonzero(right_a != right_b)
    shown = flipped[:count]
    predicted_a, predicted_b = predicted
    return digit_grid(
        images[shown],
        [f"{labels[i]}: A {predicted_a[i]}, B {predicted_b[i]}" for i in shown],
        ["tab:blue" if right_a[i] else "tab:red" for i in shown],
        columns=8,
        title=f"Test digits only one run got right (true: A, B), first {len(shown)} of "
        f"{len(flipped)}; blue: A right ({np.sum(right_a & ~right_b)}), red: B right "
        f"({np.sum(right_b & ~right_a)}); McNemar p = {p_value:.3g}",
    )


def explain_figure(title: str, original: np.ndarray, seen: np.ndarray, caption: str) -> Figure:
    """Before/after picture: the user's image (RGB) and the 28x28 digit the model received."""
    figure = Figure(figsize=(6, 3.2))
    left, right = figure.subplots(1, 2)
    left.imshow(original)
    left.set_title(title, fontsize=9)
    right.imshow(seen.squeeze(), cmap="gray", vmin=0, vmax=1)
    right.set_title(f"model input: {caption}", fontsize=9)
    for axes in (left, right):
        axes.axis("off")
    figure.tight_layout()
    return figure


def study_figures(study: "optuna.Study") -> dict[str, Figure]:
    """Optuna's optimization history, parameter importances and parallel coordinates."""
    import matplotlib

    matplotlib.use("Agg")  # Optuna's plots draw through pyplot
    from optuna.visualization import matplotlib as plots

    figures = {}
    for name, plot in (
        ("history", plots.plot_optimization_history),
        ("importances", plots.plot_param_importances),
        ("parallel_coordinates", plots.plot_parallel_coordinate),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" warnings of the matplotlib backend
            try:
                axes = plot(study)
            except (ValueError, RuntimeError):  # too few trials for importances, say
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        figures[name] = figure
    return figures


def time_to_accuracy_figure(curves: dict[str, list[list[tuple[float, float]]]]) -> Figure:
    """Test accuracy against wall seconds from the command's start, one colour per recipe and
    contender, one line per seed."""
    figure = Figure(figsize=(8, 5))
    axes = figure.subplots()
    for index, (name, seeds) in enumerate(curves.items()):
        for number, curve in enumerate(seeds):
            seconds, accuracy = zip(*curve, strict=True)
            style = "--" if "plain" in name else "-"
            axes.plot(
                seconds,
                np.array(accuracy) * 100,
                style,
                marker="o",
                markersize=3,
                color=f"C{index}",
                label=name if number == 0 else None,
            )
    axes.set_xlabel("wall seconds from the command's start (test watching excluded)")
    axes.set_ylabel("test accuracy (%)")
    lowest = min(accuracy for seeds in curves.values() for c in seeds for _, accuracy in c)
    axes.set_ylim(min(97.0, lowest * 100), 100)  # the last half-percent is what differs
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure
