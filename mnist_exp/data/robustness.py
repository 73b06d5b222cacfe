"""The robustness set, seeded image files of digits that are not MNIST: printed in matplotlib's and
Debian's handwriting fonts, and scikit-learn's real handwriting (a validation part and a held-out
one), all as ink on paper."""

import hashlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from mnist_exp.errors import DataError
from mnist_exp.names import FONTS_PART, PRINTED_PART, WRITERS_HELD_OUT, WRITERS_VALIDATION

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
GENERATOR_VERSION = 2  # raise it when the images change: cached sets are written anew
# scikit-learn's 1,797 digits (the UCI optdigits test set) in two contiguous blocks of the file, not
# drawn at random: the writers' validation part, which selection may read, and the held-out rows,
# reported beside it and never chosen on.
HELD_OUT_ROWS, VALIDATION_ROWS = range(0, 899), range(899, 1797)
PER_ROW = 2  # renders of each row: each its own filter, resolution, pen, paper and noise
UPSAMPLING = (
    Image.Resampling.NEAREST,
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
)
CACHE_SUBDIR = "robustness"  # under the cache: the set `evaluate.extra=[robustness]` scores
DEBIAN_FONTS = Path("/usr/share/fonts")
HANDWRITING_FONTS = (  # Debian's packages (make fonts): fonts-dkg-handwriting, fonts-breip, ...
    "truetype/fifthhorseman/dkg.ttf",
    "truetype/fifthhorseman/dkgBd.ttf",
    "truetype/breip/Breip.ttf",
    *(
        f"opentype/bwht/BecauseWe{s}-Regular.otf"
        for s in ("Build", "Connect", "Create", "Learn", "Mentor", "Organize")
    ),
    "truetype/humor-sans/Humor-Sans.ttf",
    "truetype/rufscript/Rufscript010.ttf",
    "truetype/sjfonts/Delphine.ttf",
    "truetype/sjfonts/SteveHand.ttf",
    "opentype/comic-neue/ComicNeue-Regular.otf",
    "opentype/comic-neue/ComicNeue-Bold.otf",
    "truetype/klee/KleeOne-Regular.ttf",
)  # fmt: skip  (not femkeklaver: its digits are outlines)


def printed_fonts() -> list[Path]:
    """The TrueType fonts matplotlib ships (present wherever it is)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [folder / name for name in FONT_FILES]


def fonts() -> list[Path]:
    """The fonts of the set: matplotlib's, then those of Debian's handwriting fonts that are
    installed (`handwriting_fonts_missing` names the others)."""
    handwriting = [DEBIAN_FONTS / name for name in HANDWRITING_FONTS]
    return printed_fonts() + [path for path in handwriting if path.is_file()]


def handwriting_fonts_missing() -> list[str]:
    """The Debian handwriting fonts the set would use but this machine lacks."""
    return [name for name in HANDWRITING_FONTS if not (DEBIAN_FONTS / name).is_file()]


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
    return on_paper(glyph.crop(glyph.getbbox()), rng)


def on_paper(glyph: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A grey glyph (ink 255) as dark ink on a sheet of noisy, tinted paper, at a random size and
    place; blurred half the time."""
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


def written(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One of scikit-learn's 8x8 handwritten digits (0-16 per pixel: the ink in each 4x4 block of
    a writer's 32x32 bitmap) as a scan or a photo may show it, then on paper: upsampled by one of
    four filters to a resolution of 12-56 px, and half the time traced as ink density, where it
    passes a level, by a pen of random width."""
    side = int(rng.integers(12, 57))
    upsampling = UPSAMPLING[int(rng.integers(len(UPSAMPLING)))]
    density = Image.fromarray((image * 255 / 16).astype(np.uint8)).resize((side, side), upsampling)
    if rng.random() < 0.5:
        level = rng.uniform(0.25, 0.6) * max(1, np.asarray(density).max())
        trace = Image.fromarray(np.where(np.asarray(density) > level, 255, 0).astype(np.uint8))
        pen = 2 * int(rng.integers(0, 1 + side // 24)) + 1  # odd, at most a third of a cell
        density = trace.filter(ImageFilter.MaxFilter(pen)) if pen > 1 else trace
    return on_paper(density.crop(density.getbbox()), rng)


def save(image: Image.Image, path: Path, rng: np.random.Generator) -> Path:
    """Save as PNG, or (three times in ten) as a JPEG of random quality; the path written."""
    if rng.random() < 0.3:
        image.save(path := path.with_suffix(".jpg"), quality=int(rng.integers(60, 95)))
    else:
        image.save(path := path.with_suffix(".png"))
    return path


def make_set(
    folder: Path,
    per_font: int = 5,
    seed: int = 0,
    per_row: int = PER_ROW,
    fonts_used: list[Path] | None = None,
    rows: Sequence[int] | None = None,
) -> list[Path]:
    """Write `per_font` versions of each digit in each font (default: `fonts()`), named
    `<digit>_<font>_<n>.png` (or .jpg), and `per_row` of each row of scikit-learn's digits
    (default all 1,797; `rows`, some), `<digit>_sklearn_<row>_<n>`, to `folder`; return the
    paths."""
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for font in fonts() if fonts_used is None else fonts_used:
        for digit in range(10):
            for n in range(per_font):
                image = render(digit, font, rng)
                paths.append(save(image, folder / f"{digit}_{font.stem}_{n}", rng))
    writers = load_digits()
    for row in range(len(writers.images)) if rows is None else rows:
        for n in range(per_row):
            image = written(writers.images[row], rng)
            name = f"{writers.target[row]}_sklearn_{row:04d}_{n}"
            paths.append(save(image, folder / name, rng))
    return paths


def source_row(path: Path) -> int | None:
    """The row of scikit-learn's digits a file of the set renders; None for a font's."""
    _, source, *rest = path.stem.split("_")
    return int(rest[0]) if source == "sklearn" else None


def part_of(path: Path) -> str:
    """Which part of the set a file is in: `printed`, `handwriting fonts`, `writers validation`
    (rows 899-1796 of scikit-learn's digits) or `writers held out` (rows 0-898)."""
    row = source_row(path)
    if row is not None:
        return WRITERS_VALIDATION if row in VALIDATION_ROWS else WRITERS_HELD_OUT
    return PRINTED_PART if f"{path.stem.split('_')[1]}.ttf" in FONT_FILES else FONTS_PART


def label(path: Path) -> int:
    """The digit a file of the set shows, from its name."""
    return int(path.name.split("_", 1)[0])


def cached_set(
    cache_dir: str, per_font: int = 5, seed: int = 0, per_row: int = PER_ROW
) -> list[Path]:
    """The set's files as `python -m mnist_exp.robustness` writes it by default, written once
    under `cache_dir` for these settings and the fonts installed, and reused after."""
    used = fonts()
    settings = repr((GENERATOR_VERSION, per_font, seed, per_row, [font.name for font in used]))
    key = hashlib.sha256(settings.encode()).hexdigest()[:16]
    folder = Path(cache_dir).expanduser() / CACHE_SUBDIR / key
    if not folder.is_dir():
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            aside = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".writing-"))
        except OSError as error:
            raise DataError(
                f"The robustness set cannot be written to {folder.parent} ({error.strerror}); "
                "free space there or make it writable."
            ) from None
        try:
            make_set(aside, per_font, seed, per_row, used)
            aside.chmod(0o755)  # mkdtemp's is the owner's only
            aside.rename(folder)  # whole or not at all
        except OSError:
            if not folder.is_dir():  # not another run that wrote it first
                raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))
