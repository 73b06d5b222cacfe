"""Predict digits in new images: a fast predictor over a loaded model, and the CLI."""

import argparse
import json
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mnist_exp.console import OPTIMIZER_SKIPPED, import_tensorflow, warnings_ignored
from mnist_exp.data import DIGITS
from mnist_exp.data.images import IMAGE_SUFFIXES, ImageError, open_image, preprocess_image
from mnist_exp.errors import MnistExpError, exit_with


class ModelError(MnistExpError):
    """A model that cannot be found, loaded or used on 28x28x1 digits."""


@dataclass(frozen=True)
class Prediction:
    digit: int  # the class's index
    confidence: float
    probabilities: np.ndarray  # (classes,) softmax output
    label: str  # the class's name: the digit itself for MNIST


class Predictor:
    """A loaded model with a compiled forward pass: one image costs a few milliseconds. `classes`
    names its outputs (default: the digits)."""

    def __init__(
        self, model, source: str, classes: Sequence[str] | None = None, chosen: str | None = None
    ):
        import tensorflow as tf

        classes = tuple(classes or (DIGITS if model.output_shape[-1] == 10 else ()))
        if tuple(model.input_shape[1:]) != (28, 28, 1) or model.output_shape[-1] != len(classes):
            raise ModelError(
                f"{source} takes input {model.input_shape} and gives {model.output_shape}; "
                f"expected (None, 28, 28, 1) -> (None, {len(classes) or 10}) (a bare file is read "
                "as digits: load a model of other classes by its run, runs:/<id>/model)."
            )
        self.model, self.source, self.classes = model, source, classes
        self.chosen = chosen  # what a default model was chosen on; None: the caller named it
        self.forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32)],
        )

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax outputs (N, 10) for preprocessed images (N, 28, 28, 1)."""
        return self.forward(np.asarray(images, dtype=np.float32)).numpy()

    def predict_digit(self, image: Image.Image | np.ndarray | str | Path) -> Prediction:
        """The digit in one image (a path, a PIL image or an array), preprocessed like MNIST."""
        return to_prediction(self.probabilities(preprocess_image(image)[None])[0], self.classes)


def to_prediction(probabilities: np.ndarray, classes: Sequence[str] = DIGITS) -> Prediction:
    digit = int(np.argmax(probabilities))
    return Prediction(digit, float(probabilities[digit]), probabilities, classes[digit])


def load_predictor(model: str | Path | None = None) -> Predictor:
    """Load a model from a .h5/.keras path, an MLflow URI (runs:/, models:/name@alias) or, with
    None, the finished run on MNIST's default split with the best validation accuracy in the
    tracking store (`read.default_model`)."""
    import_tensorflow()
    import keras

    from mnist_exp.config.schema import MlflowConfig
    from mnist_exp.tracking import read
    from mnist_exp.tracking.store import open_store

    store = open_store(MlflowConfig())
    source, chosen = (str(model), None) if model is not None else read.default_model(store)
    if Path(source).suffix in (".h5", ".keras"):
        if not Path(source).is_file():
            raise ModelError(f"Model file {source} does not exist.")
        if source.endswith(".keras") and not zipfile.is_zipfile(source):  # Keras: "not found"
            raise ModelError(f"Cannot load {source}: not a .keras archive (truncated or damaged).")
        try:
            with warnings_ignored(OPTIMIZER_SKIPPED):
                loaded = keras.models.load_model(source, compile=False, safe_mode=True)
        except (OSError, ValueError) as error:
            raise ModelError(f"Cannot load {source}: {str(error).splitlines()[0]}") from None
        return Predictor(loaded, source)
    loaded = read.load_logged_model(source, store)
    run = read.model_run(source, store)
    classes = read.run_classes(run.info.run_id, store) if run else None
    return Predictor(loaded, source, classes, chosen)


def predict_digit(
    image: Image.Image | np.ndarray | str | Path, predictor: Predictor | None = None
) -> Prediction:
    """The digit in one image, with the best tracked model unless a predictor is given."""
    return (predictor or default_predictor()).predict_digit(image)


_default: list[Predictor] = []


def default_predictor() -> Predictor:
    if not _default:
        _default.append(load_predictor())
    return _default[0]


def image_files(paths: list[str]) -> tuple[list[Path], list[dict[str, str]]]:
    """Expand folders into their image files (sorted); report paths that give no image."""
    files, problems = [], []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            if not found:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                problems.append({"file": name, "error": f"{name}: no image files ({suffixes})."})
        elif path.exists():
            files.append(path)
        else:
            problems.append({"file": name, "error": f"{name}: no such file or directory."})
    return files, problems


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    found = argparse.ArgumentParser(prog="python -m mnist_exp.predict", description=__doc__)
    found.add_argument("paths", nargs="+", help="image files and folders of images")
    found.add_argument(
        "--model",
        help="a .h5/.keras file or an MLflow URI (runs:/<id>/model, "
        "models:/mnist-cnn@champion); default: the best finished run",
    )
    found.add_argument("--json", action="store_true", help="one JSON object per image")
    found.add_argument(
        "--top-k",
        type=int,
        default=1,
        choices=range(1, 11),
        metavar="K",
        help="also show the K most likely classes (1-10)",
    )
    found.add_argument(
        "--explain", metavar="DIR", help="save a before/after picture per image into DIR"
    )
    found.add_argument("--batch-size", type=int, default=256, help="images per model call")
    return found


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    files, failures = image_files(args.paths)
    if not files:  # nothing to read: said before a model is looked for, let alone loaded
        tell(failures, args.json)
        return 2
    try:
        predictor = load_predictor(args.model)
    except MnistExpError as error:
        exit_with(error)
    chosen = f", chosen as {predictor.chosen}" if predictor.chosen else ""
    print(f"model: {predictor.source}{chosen}", file=sys.stderr)  # stdout: the answers alone
    answered = 0
    for start in range(0, len(files), args.batch_size):
        readable, inputs = [], []
        for path in files[start : start + args.batch_size]:
            try:
                inputs.append(preprocess_image(path))
                readable.append(path)
            except ImageError as error:
                failures.append({"file": str(path), "error": str(error)})
        if not readable:
            continue
        probabilities = predictor.probabilities(np.stack(inputs))
        for path, seen, probs in zip(readable, inputs, probabilities, strict=True):
            prediction = to_prediction(probs, predictor.classes)
            report(path, prediction, args, predictor.classes)
            answered += 1
            if args.explain:
                save_explanation(path, seen, prediction, Path(args.explain))
    tell(failures, args.json)
    return 0 if not failures else 1 if answered else 2


def tell(failures: list[dict[str, str]], as_json: bool) -> None:
    """Each path that gave no answer: a JSON object on stdout with --json, else a line on stderr."""
    for failure in failures:
        if as_json:
            print(json.dumps(failure))
        else:
            print(f"error: {failure['error']}", file=sys.stderr)


def report(
    path: Path, prediction: Prediction, args: argparse.Namespace, classes: Sequence[str]
) -> None:
    """One image's answer: `path: 7 (99.1%)`, a class's name where the classes are not digits."""
    top = np.argsort(prediction.probabilities)[::-1][: max(1, args.top_k)]
    if args.json:
        print(
            json.dumps(
                {
                    "file": str(path),
                    "digit": prediction.digit,
                    "label": prediction.label,
                    "confidence": round(prediction.confidence, 6),
                    "probabilities": [round(float(p), 6) for p in prediction.probabilities],
                    "top_k": [
                        {
                            "digit": int(d),
                            "label": classes[d],
                            "probability": round(float(prediction.probabilities[d]), 6),
                        }
                        for d in top
                    ],
                }
            )
        )
    else:
        ranked = "  ".join(f"{classes[d]}:{prediction.probabilities[d]:.3f}" for d in top)
        print(
            f"{path}: {prediction.label} ({prediction.confidence:.1%})"
            + (f"  top-{len(top)} {ranked}" if args.top_k > 1 else "")
        )


def save_explanation(path: Path, seen: np.ndarray, prediction: Prediction, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    from mnist_exp.figures import explain_figure

    original = np.asarray(ImageOps.exif_transpose(open_image(path).convert("RGB")))
    caption = f"{prediction.label} ({prediction.confidence:.1%})"
    figure = explain_figure(path.name, original, seen, caption)
    figure.savefig(folder / f"{path.stem}.explain.png", dpi=100)
