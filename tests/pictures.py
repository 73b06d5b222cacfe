"""The README's pictures of a short real run, taken in Debian's headless Chromium: its page in the
MLflow UI and the draw-a-digit page answering. `python -m tests.pictures docs/images`."""

import contextlib
import io
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from mnist_exp.errors import MnistExpError, exit_with
from mnist_exp.tracking.store import TRAINING_VIEW

from .helpers import CHROMIUM_FLAGS, free_port, stop, wait_until_up

# 98.9% test, in about 25 s of the 45-50 s that `make pictures` takes on 2 cores
RECIPE = ("experiment=fast", "epochs=5", "dataset.limit=10000")
# MLflow 3.18's UI on a first visit opens its assistant over the page: closed, as a returning
# user has it. (The training view comes from the URL, as `make ui` prints it.)
RETURNING_USER = """
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
"""
# A 2 in one stroke, in the pad's coordinates (0..1): over the top, down to the left, the base.
TWO = [
    (0.5 + 0.2 * math.cos(math.radians(a)), 0.36 - 0.2 * math.sin(math.radians(a)))
    for a in range(160, -40, -13)
] + [(0.28, 0.8), (0.74, 0.8)]


@contextlib.contextmanager
def servers(*commands: list[str], cwd: Path, env: dict) -> Iterator[list[str]]:
    """Start each command (a server taking `--port`) on a free port of 127.0.0.1, all at once;
    their URLs once each answers `/health`. All are stopped at the end, also on failure."""
    started = []
    try:
        for command in commands:
            port = free_port()
            process = subprocess.Popen(
                [*command, "--port", str(port)],
                cwd=cwd,
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            started.append((process, f"http://127.0.0.1:{port}"))
        for process, url in started:
            wait_until_up(f"{url}/health", process)
        yield [url for _, url in started]
    finally:
        for process, _ in started:
            stop(process)


def shown_image(page, path: str):
    """The artifact preview of the file `path` once its image has loaded."""
    image = page.locator(f"img[alt='{path}']")
    image.wait_for(timeout=60_000)
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=image.element_handle())
    return image


def mlflow_run_picture(browser, url: str, experiment_id: str, run_id: str, path: Path) -> None:
    """The run's Artifacts tab with the test confusion matrix selected, above the same tab with
    the learning curves selected (cut below them): the UI previews one file at a time."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.add_init_script(RETURNING_USER)
    page.goto(f"{url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts?{TRAINING_VIEW}")
    page.get_by_text("test", exact=True).click(timeout=60_000)
    page.get_by_text("confusion_matrix.png", exact=True).click()
    shown_image(page, "test/confusion_matrix.png")
    matrix = Image.open(io.BytesIO(page.screenshot()))
    page.get_by_text("training_curves.png", exact=True).click()
    box = shown_image(page, "training_curves.png").bounding_box()
    below = {"x": 0, "y": 0, "width": 1280, "height": box["y"] + box["height"] + 24}
    curves = Image.open(io.BytesIO(page.screenshot(clip=below)))
    page.close()
    picture = Image.new("RGB", (matrix.width, matrix.height + 8 + curves.height), "#d0d4d9")
    picture.paste(matrix, (0, 0))
    picture.paste(curves, (0, matrix.height + 8))
    picture.save(path, optimize=True)


def draw_page_picture(browser, url: str, path: Path) -> None:
    """The draw-a-digit page after a 2 drawn with the mouse was predicted."""
    page = browser.new_page(viewport={"width": 900, "height": 600})
    page.goto(url)
    page.wait_for_function("document.getElementById('model').textContent.includes('runs:/')")
    pad = page.locator("#pad").bounding_box()
    at = [(pad["x"] + x * pad["width"], pad["y"] + y * pad["height"]) for x, y in TWO]
    page.mouse.move(*at[0])
    page.mouse.down()
    for point in at[1:]:
        page.mouse.move(*point, steps=4)
    page.mouse.up()
    page.get_by_role("button", name="Predict").click()
    page.wait_for_function("document.getElementById('confidence').textContent.endsWith('sure')")
    page.wait_for_function("document.getAnimations().every(a => a.playState !== 'running')")
    page.screenshot(path=path, full_page=True)
    page.close()


def take_pictures(folder: Path, recipe: tuple[str, ...] = RECIPE) -> list[Path]:
    """Train `recipe` into a temporary store, then photograph the run's MLflow page and the draw
    page serving its model into `folder`; the two PNGs."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise MnistExpError("Debian's chromium is not installed: `make browser` installs it")
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    from mnist_exp import run_experiment

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mnist_exp-pictures-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        run_id = run_experiment(
            [*recipe, f"mlflow.tracking_uri={uri}", f"hydra.run.dir={tmp}/run"]
        ).run_id
        experiment_id = MlflowClient(uri).get_run(run_id).info.experiment_id
        ui = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--workers", "1"]
        serve = [sys.executable, "-m", "mnist_exp.serve", "--model", f"runs:/{run_id}/model"]
        env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
        with (
            servers(ui, serve, cwd=Path(tmp), env=env) as (ui_url, serve_url),
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            pictures = [folder / "mlflow-run.png", folder / "draw-page.png"]
            mlflow_run_picture(browser, ui_url, experiment_id, run_id, pictures[0])
            print(f"wrote {pictures[0]}")
            draw_page_picture(browser, serve_url, pictures[1])
            print(f"wrote {pictures[1]}")
            browser.close()
    return pictures


def main() -> None:
    """`python -m tests.pictures FOLDER [OVERRIDE ...]`: the overrides replace RECIPE."""
    if len(sys.argv) < 2:
        raise SystemExit(
            f"usage: python -m tests.pictures FOLDER [OVERRIDE ...] (default: {' '.join(RECIPE)})"
        )
    try:
        take_pictures(Path(sys.argv[1]), tuple(sys.argv[2:]) or RECIPE)
    except MnistExpError as error:
        exit_with(error)


if __name__ == "__main__":
    main()
