"""The robustness set: printed, handwriting-font and handwritten digits that are not MNIST, and a
trained model's accuracy on them."""

import shutil

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from mnist_exp.data import DIGITS, robustness
from mnist_exp.data.images import (
    STROKE_BOX,
    STROKE_WIDTH,
    cropped,
    fitted,
    preprocess_image,
    stroke_width,
    with_mnist_strokes,
)
from mnist_exp.data.robustness import (
    cached_set,
    fonts,
    handwriting_fonts_missing,
    label,
    make_set,
    part_of,
    printed_fonts,
)
from mnist_exp.evaluate import evaluate_split
from mnist_exp.groups.dataset import scoring_set
from mnist_exp.names import part_metric
from mnist_exp.robustness import accuracy

from .helpers import run_module


def test_the_set_is_seeded_labelled_and_covers_every_font_and_digit(tmp_path):
    if missing := handwriting_fonts_missing():
        pytest.skip(
            f"Debian's handwriting fonts are not installed ({len(missing)} missing): make fonts"
        )
    paths = make_set(tmp_path / "a", per_font=1, seed=3, per_digit=2)
    again = make_set(tmp_path / "b", per_font=1, seed=3, per_digit=2)
    assert len(paths) == 10 * len(fonts()) + 20 and all(font.is_file() for font in fonts())
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    assert sorted({label(p) for p in paths}) == list(range(10))
    counts = {name: sum(part_of(p) == name for p in paths) for name in ("printed", "writers")}
    assert counts == {"printed": 170, "writers": 20}  # 17 of matplotlib's fonts; the rest Debian's
    assert len(fonts()) == 33
    sides = {Image.open(p).size for p in paths}
    assert len(sides) > 10  # sheets of many sizes, not MNIST's 28x28
    image = np.asarray(Image.open(paths[0]).convert("L"), np.float32)
    assert image.mean() > 150  # dark ink on light paper


def test_the_stroke_width_preprocessing_aims_at_is_mnists_median(mnist_raw):
    widths = [
        stroke_width(fitted(cropped(np.float32(x)), STROKE_BOX))
        for x in mnist_raw["x_train"][:3000]
    ]
    assert abs(np.median(widths) - STROKE_WIDTH) < 0.25, np.median(widths)


def drawn(digit: str, font: int, weight: int) -> np.ndarray:
    """A digit in one of matplotlib's fonts, drawn `weight` pixels bolder than the font (0..255)."""
    glyph = Image.new("L", (300, 300), 0)
    ImageDraw.Draw(glyph).text((150, 150), digit, fill=255, anchor="mm", stroke_width=weight,
        stroke_fill=255, font=ImageFont.truetype(str(printed_fonts()[font]), 100))  # fmt: skip
    return np.asarray(glyph, np.float32)


def test_thin_and_bold_digits_get_strokes_near_mnists(tmp_path):
    """DejaVu Sans and STIX 1, 6, 8 at three weights: stroke widths 6.4-21.5 before, 5.2-11.4
    after (measured; MNIST's is 8.5); a bold 8 through `preprocess_image` inks 0.7 of what a thin
    one does (1.9 times as much before the strokes were matched)."""
    before, after = [], []
    for font in (0, 8):
        for digit in "168":
            for weight in (0, 3, 8):
                ink = cropped(drawn(digit, font, weight))
                before.append(stroke_width(fitted(ink, STROKE_BOX)))
                matched = with_mnist_strokes(ink)
                after.append(stroke_width(matched) * STROKE_BOX / max(matched.shape))
    assert max(before) - min(before) > 12, before
    assert max(after) - min(after) < 8 and all(abs(w - STROKE_WIDTH) < 4 for w in after), after
    ink = {}
    for weight in (0, 8):
        path = tmp_path / f"{weight}.png"
        Image.fromarray(255 - drawn("8", 0, weight).astype(np.uint8)).save(path)
        ink[weight] = preprocess_image(path).mean()
    assert 0.5 < ink[8] / ink[0] < 1.2, ink


@pytest.mark.slow
def test_a_trained_model_reads_most_printed_digits(trained_run, tmp_path):
    """Two epochs of the narrow CNN on MNIST read 92.1% of this 860-image set (measured
    2026-12-04; 89.5% before strokes were matched to MNIST's, and 91.2% and 90.0% on two other
    seeds' sets then); chance is 10%, so the bar (85%) fails a broken preprocessing or model."""
    paths = make_set(tmp_path / "set", per_font=2, seed=1)
    share, wrong = accuracy(paths, str(trained_run.output_dir / "mnist.keras"))
    assert share >= 0.85, [p.name for p in wrong]


@pytest.mark.slow
def test_the_cli_writes_the_set_and_prints_its_accuracy(trained_run, tmp_path):
    model = str(trained_run.output_dir / "mnist.keras")
    done = run_module("mnist_exp.robustness", "--folder", str(tmp_path), "--per-font", "1",
                      "--per-digit", "3", "--model", model, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{10 * len(fonts()) + 30} images ({len(fonts())} fonts, 30 by hand)" in done.stdout
    assert "  writers: " in done.stdout and "of 30" in done.stdout
    share, _ = accuracy(sorted(tmp_path.iterdir()), model)
    assert f"accuracy {share:.4f}" in done.stdout


@pytest.mark.slow
def test_a_run_scores_the_set_as_the_command_does_written_once(trained_run, tmp_path, monkeypatch):
    """`evaluate.extra=[robustness]` (here with two fonts and the writers: 300 images)."""
    monkeypatch.setattr(robustness, "fonts", lambda: printed_fonts()[:2])
    scored = scoring_set("robustness", DIGITS, str(tmp_path))
    files = cached_set(str(tmp_path))
    assert len(files) == 2 * 10 * 5 + 200 and scored.source == str(files[0].parent)
    assert (scored.labels.argmax(axis=1) == [label(f) for f in files]).all()
    written = [f.stat().st_mtime_ns for f in files]
    again = scoring_set("robustness", DIGITS, str(tmp_path))
    assert [f.stat().st_mtime_ns for f in cached_set(str(tmp_path))] == written  # not rewritten
    assert np.array_equal(again.images, scored.images)
    model = str(trained_run.output_dir / "mnist.keras")
    predicted = keras.models.load_model(model).predict(scored.images, verbose=0).argmax(axis=1)
    share, _ = accuracy(files, model)
    assert np.mean(predicted == [label(f) for f in files]) == pytest.approx(share, abs=0.01)
    assert scored.parts == tuple(part_of(f) for f in files)
    loaded = keras.models.load_model(model)
    report = evaluate_split(loaded, scored.images, scored.labels, DIGITS, scored.parts)
    writers = np.array(scored.parts) == "writers"
    assert set(report.parts) == {"printed", "writers"}  # each part scored apart, as a run logs it
    right = predicted == scored.labels.argmax(axis=1)
    assert report.parts["writers"] == pytest.approx(np.mean(right[writers]))
    assert part_metric("extra_robustness_accuracy", "handwriting fonts") == (
        "extra_robustness_handwriting_fonts_accuracy"
    )


def test_a_set_another_run_wrote_first_is_the_one_used_and_nothing_is_left_aside(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(robustness, "fonts", lambda: printed_fonts()[:1])
    first = cached_set(str(tmp_path), per_font=1, per_digit=1)
    written = make_set

    def racing(folder, *args):  # another run renames its copy into place meanwhile
        shutil.copytree(first[0].parent, tmp_path / "other" / "robustness" / first[0].parent.name)
        return written(folder, *args)

    monkeypatch.setattr(robustness, "make_set", racing)
    again = cached_set(str(tmp_path / "other"), per_font=1, per_digit=1)
    assert [f.name for f in again] == [f.name for f in first] and len(first) == 10 + 10
    assert [p.name for p in (tmp_path / "other" / "robustness").iterdir()] == [first[0].parent.name]
