"""The robustness set, seeded image files of digits that are not MNIST: printed in matplotlib's and
Debian's handwriting fonts, and scikit-learn's real handwriting, all as ink on paper."""

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from mnist_exp.errors import DataError

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
GENERATOR_VERSION = 1  # raise it when the images change: cached sets are written anew
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
    """One of scikit-learn's 8x8 handwritten digits (0-16 per pixel), upscaled and on paper."""
    glyph = Image.fromarray((image * 255 / 16).astype(np.uint8)).resize(
        (48, 48), Image.Resampling.BICUBIC
    )
    return on_paper(glyph.crop(glyph.getbbox()), rng)


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
    per_digit: int = 20,
    fonts_used: list[Path] | None = None,
) -> list[Path]:
    """Write `per_font` versions of each digit in each font (default: `fonts()`), named
    `<digit>_<font>_<n>.png` (or .jpg), and `per_digit` of each digit by scikit-learn's writers
    (`<digit>_sklearn_<n>`), to `folder`; return the paths."""
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
    for digit in range(10):
        chosen = rng.choice(np.flatnonzero(writers.target == digit), per_digit, replace=False)
        for n, index in enumerate(chosen):
            image = written(writers.images[index], rng)
            paths.append(save(image, folder / f"{digit}_sklearn_{n}", rng))
    return paths


def part_of(path: Path) -> str:
    """Which part of the set a file is in: `printed`, `handwriting fonts` or `writers`."""
    source = path.stem.split("_")[1]
    if source == "sklearn":
        return "writers"
    return "printed" if f"{source}.ttf" in FONT_FILES else "handwriting fonts"


def label(path: Path) -> int:
    """The digit a file of the set shows, from its name."""
    return int(path.name.split("_", 1)[0])


def cached_set(cache_dir: str, per_font: int = 5, seed: int = 0, per_digit: int = 20) -> list[Path]:
    """The set's files as `python -m mnist_exp.robustness` writes it by default, written once
    under `cache_dir` for these settings and the fonts installed, and reused after."""
    used = fonts()
    settings = repr((GENERATOR_VERSION, per_font, seed, per_digit, [font.name for font in used]))
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
            make_set(aside, per_font, seed, per_digit, used)
            aside.chmod(0o755)  # mkdtemp's is the owner's only
            aside.rename(folder)  # whole or not at all
        except OSError:
            if not folder.is_dir():  # not another run that wrote it first
                raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))
