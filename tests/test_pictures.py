"""`make pictures`: the README's pictures, retaken from a short real run in headless Chromium."""

import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from PIL import Image

from .helpers import chromium, run_module


def scratch_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("mnist_exp-pictures-*"))


def colours(path: Path) -> int:
    with Image.open(path) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 24))


@pytest.mark.slow
def test_the_picture_maker_writes_the_mlflow_run_and_the_answering_draw_page(tmp_path):
    chromium()  # skipped, saying why, without it
    before = scratch_folders()
    images = tmp_path / "images"
    done = run_module(
        "tests.pictures",
        str(images),
        "experiment=fast",
        "epochs=1",
        "dataset.limit=1000",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_page, draw_page = images / "mlflow-run.png", images / "draw-page.png"
    assert done.stdout.splitlines()[-2:] == [f"wrote {run_page}", f"wrote {draw_page}"]
    for path, (width, min_height) in {run_page: (1280, 1100), draw_page: (900, 550)}.items():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width == width and image.height >= min_height
        assert colours(path) > 50, path  # a page with text and figures, not a blank one
    assert scratch_folders() == before  # its store and run removed
    running = [" ".join(p.info["cmdline"] or ()) for p in psutil.process_iter(["cmdline"])]
    assert not [line for line in running if "mnist_exp-pictures-" in line]  # the UI stopped


def test_without_chromium_it_says_in_one_line_how_to_get_it(tmp_path):
    done = run_module(
        "tests.pictures", str(tmp_path), env={"PATH": str(Path(sys.executable).parent)}
    )
    assert done.returncode == 2 and not list(tmp_path.iterdir())
    assert done.stderr == (
        "error: Debian's chromium is not installed: `make browser` installs it\n"
    )
