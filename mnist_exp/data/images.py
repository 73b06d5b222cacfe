"""All image preprocessing: open a user's image safely, and turn it into an MNIST-like 28x28 digit
(grey, inverted if light, cropped to the ink, strokes made as thick as MNIST's, fitted into 20x20,
centred by mass) or, for images that are not digits, into the whole picture at 28x28."""

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from mnist_exp.errors import MnistExpError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_PIXELS = 50_000_000  # refuse larger images instead of exhausting memory
WORK_SIDE = 512  # larger images are downscaled to this side before any pixel work
INK_THRESHOLD = 0.2  # fraction of the ink range below which a pixel counts as background
MIN_INK_RANGE = 24  # grey levels between background and ink; less means no digit
STROKE_BOX = 64  # strokes are measured and adjusted with the digit's longer side this long
STROKE_WIDTH = 8.5  # MNIST's median stroke width at that size (test_robustness measures it)
PREPROCESSING_VERSION = 2  # raise it when preprocess_image changes: cached folders are redone


class ImageError(MnistExpError):
    """An image that cannot be read or holds no digit."""


def open_image(file: Path | BinaryIO, name: str | None = None) -> Image.Image:
    """Open an image file or upload (first frame of an animation), refusing huge ones before
    decoding. `name` is what error messages call it (default: the path)."""
    name = name or str(file)
    try:
        with warnings.catch_warnings():  # PIL warns of a huge image that we refuse below anyway
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
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


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the ink's area over its outline (ink: half the max)."""
    mask = ink > 0.5 * ink.max()
    outline = mask & ~ndimage.binary_erosion(mask)
    return 2 * mask.sum() / max(1, outline.sum())


def cropped(ink: np.ndarray) -> np.ndarray:
    """Ink below `INK_THRESHOLD` of its peak set to 0, cut to the bounding box of the rest."""
    ink = np.where(ink < INK_THRESHOLD * ink.max(), 0, ink)
    rows, cols = np.nonzero(ink)
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def fitted(ink: np.ndarray, side: int) -> np.ndarray:
    """Ink (0..255) resized so that its longer side is `side` pixels."""
    scale = side / max(ink.shape)
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    resized = Image.fromarray(ink.astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, np.float32), 0, 255)


def with_mnist_strokes(ink: np.ndarray) -> np.ndarray:
    """Cropped ink (0..255) fitted to `STROKE_BOX` and thickened or thinned (grey dilation or
    erosion by one disk) by the difference between its stroke width and MNIST's; cropped."""
    ink = np.pad(fitted(ink, STROKE_BOX), STROKE_BOX // 4)
    width = stroke_width(ink)
    radius = abs(round((STROKE_WIDTH - width) / 2))
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    disk = x * x + y * y <= radius * (radius + 0.5)
    if width < STROKE_WIDTH:
        ink = ndimage.grey_dilation(ink, footprint=disk)
    elif (thinned := ndimage.grey_erosion(ink, footprint=disk)).max() >= INK_THRESHOLD * 255:
        ink = thinned  # else the digit would vanish: left as it is
    return cropped(ink)


def preprocess_image(
    image: Image.Image | np.ndarray | str | Path, digit_style: bool = True
) -> np.ndarray:
    """Make a user's digit look like MNIST: white ink on black, strokes of MNIST's width, fitted
    into 20x20 and centred by centre of mass in 28x28, scaled to [0, 1]. Returns float32
    (28, 28, 1). Not `digit_style`: the whole picture, light on dark, squeezed into 28x28."""
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
    if not digit_style:
        whole = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
        return (np.asarray(whole.resize((28, 28), Image.Resampling.LANCZOS), np.float32) / 255)[
            :, :, None
        ]
    ink = with_mnist_strokes(cropped(ink) * (255 / ink.max()))
    digit = fitted(ink * (255 / ink.max()), 20)
    com_row, com_col = center_of_mass(digit)
    top = int(np.clip(round(14 - com_row), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(14 - com_col), 0, 28 - digit.shape[1]))
    frame = np.zeros((28, 28), np.float32)
    frame[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return (frame / 255)[:, :, None]
