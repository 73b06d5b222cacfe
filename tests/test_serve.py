"""The draw-a-digit app: its API over real HTTP on 127.0.0.1, and the page in headless Chromium."""

import base64
import io
import json
import math
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from .helpers import (
    CHROMIUM_FLAGS,
    ROOT,
    chromium,
    free_port,
    small_tmpfs,
    user_style_image,
    wait_until_up,
)

pytestmark = pytest.mark.slow


@contextmanager
def serving(trained_run, *flags: str) -> Iterator[str]:
    """`python -m mnist_exp.serve` on a free port, serving the trained run's logged model."""
    port = free_port()
    model = f"runs:/{trained_run.run_id}/model"
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_exp.serve", "--model", model, "--port", str(port), *flags],
        cwd=ROOT,
        env={**os.environ, "MLFLOW_TRACKING_URI": trained_run.tracking_uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(trained_run):
    with serving(trained_run) as url:
        yield url


@pytest.fixture(scope="module")
def collecting(trained_run, tmp_path_factory):
    """The server with --collect on a 2 MB disk of its own; the URL and the folder."""
    disk = tmp_path_factory.mktemp("collect") / "disk"
    with small_tmpfs(disk, "2m"), serving(trained_run, "--collect", str(disk / "mine")) as url:
        yield url, disk / "mine"


def post(url: str, body: bytes, content_type: str, path: str = "/predict") -> tuple[int, dict]:
    headers = {"Content-Type": content_type, "X-Collect": "1"}
    request = urllib.request.Request(f"{url}{path}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def as_data_url(png: bytes) -> bytes:
    return json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode()}).encode()


def as_multipart(png: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_predict_reads_digits_drawn_on_a_light_canvas(server, mnist_raw, trained_run):
    rng = np.random.default_rng(11)
    correct = 0
    for i in range(60):
        png = png_bytes(user_style_image(mnist_raw["x_test"][i], rng, "png-rgb"))
        if i % 2:
            status, answer = post(server, *as_multipart(png))
        else:
            status, answer = post(server, as_data_url(png), "application/json")
        assert status == 200, answer
        assert len(answer["probabilities"]) == 10 and math.isclose(
            sum(answer["probabilities"]), 1, abs_tol=1e-3
        )
        assert np.asarray(answer["image"]).shape == (28, 28)
        correct += answer["digit"] == mnist_raw["y_test"][i]
    assert correct >= 57  # 95% of 60
    with urllib.request.urlopen(f"{server}/model") as response:
        model = json.load(response)
    assert model["run_id"] == trained_run.run_id and model["test_accuracy"] >= 0.98


def test_bad_requests_get_a_one_line_4xx_and_the_server_keeps_serving(server, mnist_raw):
    blank = png_bytes(Image.new("RGB", (280, 280), "white"))
    cases = [
        (b"hello", "text/plain", 415),
        (b"this is not a png", "image/png", 422),
        (b'{"picture": 1}', "application/json", 400),
        (b'{"image": "data:image/png;base64,@@@"}', "application/json", 400),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),  # nested past recursion
        (as_data_url(blank), "application/json", 422),  # an empty canvas
        (bytes(20_000_000), "image/png", 413),
    ]
    for body, content_type, expected in cases:
        status, answer = post(server, body, content_type)
        assert status == expected, (content_type, body[:40], answer)
        assert set(answer) == {"error"} and "\n" not in answer["error"]
    with urllib.request.urlopen(f"{server}/health") as response:
        assert json.load(response) == {"status": "ok"}
    png = png_bytes(user_style_image(mnist_raw["x_test"][0], np.random.default_rng(1), "png-rgb"))
    assert post(server, png, "image/png")[1]["digit"] == mnist_raw["y_test"][0]


def test_a_digit_drawn_with_the_mouse_in_chromium_is_read(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 900, "height": 800})
        page.goto(server)
        page.wait_for_function("document.getElementById('model').textContent.includes('runs:/')")
        box = page.locator("#pad").bounding_box()

        def at(x: float, y: float) -> tuple[float, float]:  # pad coordinates in 0..1
            return box["x"] + x * box["width"], box["y"] + y * box["height"]

        def stroke(points: list[tuple[float, float]]) -> None:
            page.mouse.move(*at(*points[0]))
            page.mouse.down()
            for point in points[1:]:
                page.mouse.move(*at(*point), steps=3)
            page.mouse.up()

        def predicted() -> str:
            with page.expect_response(lambda response: response.url.endswith("/predict")):
                page.get_by_role("button", name="Predict").click()
            page.wait_for_function(
                "document.getElementById('confidence').textContent.endsWith('sure')"
            )
            return page.locator("#digit").text_content()

        stroke([(0.5, 0.15 + 0.7 * t / 10) for t in range(11)])  # a "1": one vertical stroke
        assert predicted() == "1"
        page.screenshot(path=tmp_path / "one.png")

        page.get_by_role("button", name="Clear").click()
        assert page.locator("#digit").text_content() == "?"
        ellipse = [
            (0.5 + 0.22 * math.sin(a), 0.5 - 0.32 * math.cos(a))
            for a in np.linspace(0, 2 * math.pi, 40)
        ]
        stroke(ellipse)  # a "0"
        assert predicted() == "0"
        page.screenshot(path=tmp_path / "zero.png")
        assert page.locator("#bars li").count() == 10
        browser.close()
    assert (tmp_path / "zero.png").stat().st_size > 10_000


def files_under(folder) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_the_page_saves_a_corrected_drawing_under_its_label_in_chromium(collecting, server):
    from playwright.sync_api import sync_playwright

    url, folder = collecting
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 900, "height": 900})
        page.goto(url)
        page.wait_for_function("document.getElementById('labels').childElementCount === 10")
        assert page.locator("#collect").is_hidden()  # nothing to correct before a prediction
        box = page.locator("#pad").bounding_box()
        page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.15 * box["height"])
        page.mouse.down()
        for t in range(11):
            page.mouse.move(box["x"] + 0.5 * box["width"],
                            box["y"] + (0.15 + 0.07 * t) * box["height"], steps=3)  # fmt: skip
        page.mouse.up()
        for _ in range(2):  # predicted and saved twice: two files, neither overwritten
            with page.expect_response(lambda response: response.url.endswith("/predict")):
                page.get_by_role("button", name="Predict").click()
            page.get_by_role("button", name="It is 7").wait_for()
            with page.expect_response(lambda response: "/collect?label=7" in response.url):
                page.get_by_role("button", name="It is 7").click()
            page.wait_for_function("document.getElementById('saved').textContent.includes('7/')")
            assert page.locator("#collect").is_hidden()  # saved once per answer
        saved = files_under(folder)
        assert [p.parent.name for p in saved] == ["7", "7"] and saved[0].name != saved[1].name
        for path in saved:
            assert Image.open(path).format == "PNG" and Image.open(path).size == (280, 280)
        assert page.locator("#saved").text_content() in {f"Saved as 7/{p.name}" for p in saved}
        browser.close()
    with urllib.request.urlopen(f"{server}/model") as response:
        assert json.load(response)["collect"] is False
    status, answer = post(
        server, png_bytes(Image.new("L", (28, 28))), "image/png", "/collect?label=1"
    )
    assert status == 404 and "--collect DIR" in answer["error"]


def test_collecting_refuses_bad_requests_saves_at_once_and_survives_a_full_disk(
    collecting, mnist_raw
):
    url, folder = collecting
    before = files_under(folder)
    png = png_bytes(user_style_image(mnist_raw["x_test"][0], np.random.default_rng(2), "png-rgb"))
    multipart, boundary = as_multipart(png)
    bare = urllib.request.Request(  # as any other site's page could send it: no X-Collect
        f"{url}/collect?label=3", data=multipart, headers={"Content-Type": boundary}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bare, timeout=60)
    assert refused.value.code == 403 and "X-Collect: 1" in json.load(refused.value)["error"]
    cases = [
        (png, "image/png", "/collect?label=x", 400, "label=x is not one of the model's classes"),
        (png, "image/png", "/collect", 400, "label=None is not one of"),
        (b"not an image", "image/png", "/collect?label=3", 422, "upload"),
        (bytes(20_000_000), "image/png", "/collect?label=3", 413, "larger than"),
    ]
    for body, content_type, path, expected, message in cases:
        status, answer = post(url, body, content_type, path)
        assert (status, set(answer)) == (expected, {"error"}) and message in answer["error"]
        assert "\n" not in answer["error"]
    assert files_under(folder) == before  # nothing saved from a bad request

    jpeg = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(jpeg, "JPEG")
    bodies = [
        (png, "image/png"),
        (jpeg.getvalue(), "image/jpeg"),
        (as_data_url(png), "application/json"),
    ]
    with ThreadPoolExecutor(8) as pool:  # 24 saves at once: 24 files, each whole
        answers = list(pool.map(lambda i: post(url, *bodies[i % 3], "/collect?label=3"), range(24)))
    assert all(status == 200 for status, _ in answers), answers
    added = [p for p in files_under(folder) if p not in before]
    assert len(added) == 24 and {p.suffix for p in added} == {".png", ".jpg"}
    assert sorted(answer["saved"] for _, answer in answers) == [f"3/{p.name}" for p in added]
    assert all(p.read_bytes() in (png, jpeg.getvalue()) for p in added)

    filler = folder.parent / "filler"
    with open(filler, "wb", buffering=0) as file:  # fill the disk to its last block
        try:
            while True:
                file.write(bytes(64_000))
        except OSError:
            pass
    try:
        status, answer = post(url, png, "image/png", "/collect?label=5")
        assert status == 507 and answer["error"].startswith("No space left on device in ")
        assert not (folder / "5").exists() or files_under(folder / "5") == []
        assert not [p for p in folder.rglob(".*") if p.is_file()]  # no partial file left
    finally:
        filler.unlink()
    status, answer = post(url, png, "image/png", "/collect?label=5")
    assert status == 200 and (folder / answer["saved"]).read_bytes() == png
