"""A robustness set of digits that are not MNIST, and the predictor's accuracy on it.

Digits printed in the fonts matplotlib ships (sans, serif, Computer Modern, STIX, typewriter;
regular, bold, italic), thin or heavy, slanted, rotated, scaled and off-centre, in dark ink on
noisy, tinted paper, some blurred or saved as JPEG. `python -m mnist_exp.robustness` writes the set
(seeded) and scores a model on it through the same preprocessing as `python -m mnist_exp.predict`.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from mnist_exp.errors import MnistExpError, exit_with

FONT_FILES = (
    *(f"DejaVuSans{s}.ttf" for s in ("", "-Bold", "-Oblique", "-BoldOblique")),
    *(f"DejaVuSerif{s}.ttf" for s in ("", "-Bold", "-Italic", "-BoldItalic")),
    *(f"STIXGeneral{s}.ttf" for s in ("", "Bol", "Italic", "BolIta")),
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmti10.ttf",
)  # fmt: skip  (not DejaVu Sans Mono: its zero has a dot inside)


def fonts() -> list[Path]:
    """The TrueType fonts of the set, from matplotlib's own data (present wherever it is)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [folder / name for name in FONT_FILES]


def render(digit: int, font: Path, rng: np.random.Generator) -> Image.Image:
    """One printed digit on a sheet of paper, every property drawn from `rng`."""
    size = 100
    glyph = Image.new("L", (3 * size, 3 * size), 0)
    stroke = int(rng.integers(0, 6))  # 0: the font's own weight; up to a heavy marker
    ImageDraw.Draw(glyph).text(
        (1.5 * size, 1.5 * size),
        str(digit),
        fill=255,
        font=ImageFont.truetype(str(font), size),
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=255,
    )
    slant = rng.uniform(-0.3, 0.3)
    shear = (1, slant, -slant * 1.5 * size, 0, 1, 0)  # slanted about the centre
    glyph = glyph.transform(glyph.size, Image.Transform.AFFINE, shear, Image.Resampling.BILINEAR)
    glyph = glyph.rotate(rng.uniform(-12, 12), Image.Resampling.BILINEAR)
    glyph = glyph.crop(glyph.getbbox())
    side = int(rng.integers(64, 200))
    height = int(side * rng.uniform(0.35, 0.8))
    width = max(1, min(side - 2, round(glyph.width * height / glyph.height)))
    glyph = glyph.resize((width, height), Image.Resampling.LANCZOS)
    paper = np.array([rng.uniform(215, 255), rng.uniform(205, 250), rng.uniform(185, 245)])
    gradient = np.linspace(-1, 1, side)[:, None, None] * rng.uniform(-15, 15)
    sheet = paper + gradient + rng.normal(0, rng.uniform(1, 6), (side, side, 3))
    canvas = Image.fromarray(np.clip(sheet, 0, 255).astype(np.uint8))
    ink = tuple(int(c) for c in rng.uniform([0, 0, 20], [70, 70, 120]))
    offset = (int(rng.integers(0, side - width + 1)), int(rng.integers(0, side - height + 1)))
    canvas.paste(Image.new("RGB", glyph.size, ink), offset, glyph)
    if rng.random() < 0.5:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    return canvas


def make_set(folder: Path, per_font: int = 5, seed: int = 0) -> list[Path]:
    """Write `per_font` versions of each digit in each font to `folder`, named
    `<digit>_<font>_<n>.png` (or .jpg); return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for font in fonts():
        for digit in range(10):
            for n in range(per_font):
                image = render(digit, font, rng)
                jpeg = rng.random() < 0.3
                path = folder / f"{digit}_{font.stem}_{n}.{'jpg' if jpeg else 'png'}"
                image.save(path, quality=int(rng.integers(60, 95))) if jpeg else image.save(path)
                paths.append(path)
    return paths


def label(path: Path) -> int:
    """The digit a file of the set shows, from its name."""
    return int(path.name.split("_", 1)[0])


def accuracy(paths: list[Path], model: str | None = None) -> tuple[float, list[Path]]:
    """The share of `paths` the predictor (default: the store's best model) reads right, with
    the preprocessing of `python -m mnist_exp.predict`; and the files it got wrong."""
    from mnist_exp.data.images import preprocess_image
    from mnist_exp.serving.predict import load_predictor

    predictor = load_predictor(model)
    images = np.stack([preprocess_image(path) for path in paths])
    predicted = predictor.probabilities(images).argmax(axis=1)
    wrong = [path for path, digit in zip(paths, predicted, strict=False) if digit != label(path)]
    return 1 - len(wrong) / len(paths), wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_exp.robustness", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--folder", type=Path, default=Path("outputs/robustness"))
    parser.add_argument("--per-font", type=int, default=5, help="versions of each digit per font")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="as for mnist_exp.predict (default: the best in the store)")
    args = parser.parse_args(argv)
    try:
        paths = make_set(args.folder, args.per_font, args.seed)
        share, wrong = accuracy(paths, args.model)
    except MnistExpError as error:
        exit_with(error)
    print(f"{len(paths)} images ({len(fonts())} fonts) in {args.folder}")
    print(f"accuracy {share:.4f} ({len(wrong)} wrong: {', '.join(p.name for p in wrong[:10])}"
          f"{' ...' if len(wrong) > 10 else ''})")  # fmt: skip
    return 0
