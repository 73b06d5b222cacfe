"""Predict digits in new images: MNIST-style preprocessing, a fast predictor and a CLI."""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_exp.errors import MnistExpError, exit_with

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_PIXELS = 50_000_000  # refuse larger images instead of exhausting memory
WORK_SIDE = 512  # larger images are downscaled to this side before any pixel work
INK_THRESHOLD = 0.2  # fraction of the ink range below which a pixel counts as background
MIN_INK_RANGE = 24  # grey levels between background and ink; less means no digit


class ImageError(MnistExpError):
    """An image that cannot be read or holds no digit."""


class ModelError(MnistExpError):
    """A model that cannot be found, loaded or used on 28x28x1 digits."""


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float
    probabilities: np.ndarray  # (10,) softmax output


def open_image(file: Path | BinaryIO, name: str | None = None) -> Image.Image:
    """Open an image file or upload (first frame of an animation), refusing huge ones before
    decoding. `name` is what error messages call it (default: the path)."""
    name = name or str(file)
    try:
        image = Image.open(file)
        if image.width * image.height > MAX_PIXELS:
            raise ImageError(
                f"{name}: {image.width}x{image.height} is larger than the "
                f"{MAX_PIXELS:,}-pixel limit; downscale it first."
            )
        image.seek(0)
        image.draft("L", (WORK_SIDE, WORK_SIDE))  # JPEG: decode at a reduced size
        image.load()
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file.") from None
    except Image.DecompressionBombError:
        raise ImageError(
            f"{name}: larger than the {MAX_PIXELS:,}-pixel limit; downscale it first."
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not a readable image (not PNG, JPEG, GIF, BMP, TIFF or WebP data)."
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{name}: not a readable image ({error}).") from None
    return image


def to_grey(image: Image.Image) -> np.ndarray:
    """Grey levels 0..255 as float32 from any mode; transparent pixels become background."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        grey = np.asarray(image, dtype=np.float32)
        return grey * (255 / 65535) if grey.max() > 255 else grey
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        luminance = rgba[..., :3] @ np.float32([0.299, 0.587, 0.114])
        alpha = rgba[..., 3] / 255
        opaque = luminance[alpha > 0.5]
        # Ink on a transparent canvas: lay it on the background that contrasts with the ink.
        background = 255.0 if opaque.size == 0 or opaque.mean() < 128 else 0.0
        return luminance * alpha + background * (1 - alpha)
    return np.asarray(image.convert("L"), dtype=np.float32)


def center_of_mass(ink: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(ink.shape)
    return float((rows * ink).sum() / ink.sum()), float((cols * ink).sum() / ink.sum())


def preprocess_image(image: Image.Image | np.ndarray | str | Path) -> np.ndarray:
    """Make a user's digit look like MNIST: white ink on black, fitted into 20x20 and centred by
    centre of mass in 28x28, scaled to [0, 1]. Returns float32 (28, 28, 1)."""
    name = str(image) if isinstance(image, str | Path) else "image"
    if isinstance(image, str | Path):
        image = open_image(Path(image))
    if isinstance(image, np.ndarray):
        image = Image.fromarray(
            image.squeeze().astype(np.uint8)
            if image.max() > 1
            else (image.squeeze() * 255).astype(np.uint8)
        )
    if max(image.size) > WORK_SIDE:
        image = image.copy()
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    grey = to_grey(image)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 127:  # dark ink on a light background: MNIST is the other way round
        grey, border = 255 - grey, 255 - border
    background = np.median(border)
    ink = np.clip(grey - background, 0, None)
    if ink.max() < MIN_INK_RANGE:
        raise ImageError(f"{name}: no digit found (the image is blank or has too little contrast).")
    ink[ink < INK_THRESHOLD * ink.max()] = 0
    rows, cols = np.nonzero(ink)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    ink = ink * (255 / ink.max())
    scale = 20 / max(ink.shape)
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    digit = np.asarray(
        Image.fromarray(ink.astype(np.uint8)).resize(size, Image.Resampling.LANCZOS),
        dtype=np.float32,
    )
    digit = np.clip(digit, 0, 255)
    com_row, com_col = center_of_mass(digit)
    top = int(np.clip(round(14 - com_row), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(14 - com_col), 0, 28 - digit.shape[1]))
    frame = np.zeros((28, 28), np.float32)
    frame[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return (frame / 255)[:, :, None]


def explain_figure(path: Path, original: Image.Image, seen: np.ndarray, prediction: Prediction):
    """Before/after picture: the user's image and the 28x28 digit the model received."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.2))
    left, right = figure.subplots(1, 2)
    left.imshow(ImageOps.exif_transpose(original.convert("RGB")))
    left.set_title(path.name, fontsize=9)
    right.imshow(seen.squeeze(), cmap="gray", vmin=0, vmax=1)
    right.set_title(f"model input: {prediction.digit} ({prediction.confidence:.1%})", fontsize=9)
    for axes in (left, right):
        axes.axis("off")
    figure.tight_layout()
    return figure


class Predictor:
    """A loaded model with a compiled forward pass: one image costs a few milliseconds."""

    def __init__(self, model, source: str):
        import tensorflow as tf

        if tuple(model.input_shape[1:]) != (28, 28, 1) or model.output_shape[-1] != 10:
            raise ModelError(
                f"{source} takes input {model.input_shape} and gives "
                f"{model.output_shape}; expected (None, 28, 28, 1) -> (None, 10)."
            )
        self.model, self.source = model, source
        self.forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32)],
        )

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax outputs (N, 10) for preprocessed images (N, 28, 28, 1)."""
        return self.forward(np.asarray(images, dtype=np.float32)).numpy()

    def predict_digit(self, image: Image.Image | np.ndarray | str | Path) -> Prediction:
        """The digit in one image (a path, a PIL image or an array), preprocessed like MNIST."""
        return to_prediction(self.probabilities(preprocess_image(image)[None])[0])


def to_prediction(probabilities: np.ndarray) -> Prediction:
    digit = int(np.argmax(probabilities))
    return Prediction(digit, float(probabilities[digit]), probabilities)


def load_predictor(model: str | Path | None = None) -> Predictor:
    """Load a model from a .h5/.keras path, an MLflow URI (runs:/, models:/name@alias) or, with
    None, the finished run with the best validation accuracy in the tracking store."""
    import keras

    from mnist_exp import tracking
    from mnist_exp.config import MlflowConfig

    store = MlflowConfig()
    source = str(model) if model is not None else tracking.best_model_uri(store)
    if Path(source).suffix in (".h5", ".keras"):
        if not Path(source).is_file():
            raise ModelError(f"Model file {source} does not exist.")
        try:
            loaded = keras.models.load_model(source, compile=False, safe_mode=True)
        except (OSError, ValueError) as error:
            raise ModelError(f"Cannot load {source}: {str(error).splitlines()[0]}") from None
    else:
        loaded = tracking.load_logged_model(source, store)
    return Predictor(loaded, source)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist_exp.predict", description=__doc__)
    parser.add_argument("paths", nargs="+", help="image files and folders of images")
    parser.add_argument(
        "--model",
        help="a .h5/.keras file or an MLflow URI (runs:/<id>/model, "
        "models:/mnist-cnn@champion); default: the best finished run",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument(
        "--top-k",
        type=int,
        default=1,
        choices=range(1, 11),
        metavar="K",
        help="also show the K most likely digits (1-10)",
    )
    parser.add_argument(
        "--explain", metavar="DIR", help="save a before/after picture per image into DIR"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per model call")
    args = parser.parse_args(argv)

    files, failures = image_files(args.paths)
    try:
        predictor = load_predictor(args.model)
    except MnistExpError as error:
        exit_with(error)
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
            prediction = to_prediction(probs)
            report(path, prediction, args)
            if args.explain:
                save_explanation(path, seen, prediction, Path(args.explain))
    for failure in failures:
        if args.json:
            print(json.dumps(failure))
        else:
            print(f"error: {failure['error']}", file=sys.stderr)
    return 1 if failures else 0


def report(path: Path, prediction: Prediction, args: argparse.Namespace) -> None:
    top = np.argsort(prediction.probabilities)[::-1][: max(1, args.top_k)]
    if args.json:
        print(
            json.dumps(
                {
                    "file": str(path),
                    "digit": prediction.digit,
                    "confidence": round(prediction.confidence, 6),
                    "probabilities": [round(float(p), 6) for p in prediction.probabilities],
                    "top_k": [
                        {
                            "digit": int(d),
                            "probability": round(float(prediction.probabilities[d]), 6),
                        }
                        for d in top
                    ],
                }
            )
        )
    else:
        ranked = "  ".join(f"{d}:{prediction.probabilities[d]:.3f}" for d in top)
        print(
            f"{path}: {prediction.digit} ({prediction.confidence:.1%})"
            + (f"  top-{len(top)} {ranked}" if args.top_k > 1 else "")
        )


def save_explanation(path: Path, seen: np.ndarray, prediction: Prediction, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    figure = explain_figure(path, open_image(path), seen, prediction)
    figure.savefig(folder / f"{path.stem}.explain.png", dpi=100)


if __name__ == "__main__":
    sys.exit(main())
