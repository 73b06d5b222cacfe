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

import numpy as np
import pytest
from PIL import Image

from .helpers import CHROMIUM_FLAGS, ROOT, chromium, free_port, user_style_image, wait_until_up

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(trained_run):
    """`python -m mnist_exp.serve` on a free port, serving the trained run's logged model."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_exp.serve",
            "--model",
            f"runs:/{trained_run.run_id}/model",
            "--port",
            str(port),
        ],
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


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/predict", data=body, headers={"Content-Type": content_type}
    )
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
