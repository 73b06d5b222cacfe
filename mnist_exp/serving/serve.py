"""Draw-a-digit page and prediction API: `python -m mnist_exp.serve [--model URI] [--port 8000]`."""

import argparse
import base64
import binascii
import errno
import io
import json
import os
from importlib.resources import files
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.formparsers import MultiPartException, MultiPartParser

from mnist_exp.data.folder import add_image
from mnist_exp.data.images import open_image, preprocess_image
from mnist_exp.errors import MnistExpError, exit_with
from mnist_exp.serving.predict import Predictor, load_predictor, to_prediction

STATIC = files("mnist_exp.serving") / "static"
MAX_BODY = 5_000_000  # bytes; a drawn 280x280 PNG is about 10 KB
DRAIN_LIMIT = 64_000_000  # bytes of an oversized body read and dropped before answering 413
ACCEPTED = 'JSON {"image": "data:image/png;base64,..."}, multipart/form-data or image/png'


class RequestError(MnistExpError):
    """A request the API cannot answer; `status` is its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def read_body(request: Request) -> bytes:
    """The request body, refused past MAX_BODY. An oversized body is still read (and dropped) up
    to DRAIN_LIMIT, so the client gets the 413 instead of a broken connection mid-upload."""
    too_big = RequestError(413, f"The body is larger than {MAX_BODY:,} bytes; send one small PNG.")
    if int(request.headers.get("content-length") or 0) > DRAIN_LIMIT:
        raise too_big
    body, size = bytearray(), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= MAX_BODY:
            body += chunk
        elif size > DRAIN_LIMIT:
            break
    if size > MAX_BODY:
        raise too_big
    return bytes(body)


async def image_bytes(request: Request) -> bytes:
    """The uploaded image's bytes from a data URL in JSON, a multipart file, or a raw image body."""
    body = await read_body(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            url = json.loads(body)["image"]
            data = url.split(",", 1)[1] if url.startswith("data:") else url
            return base64.b64decode(data, validate=True)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, RecursionError):
            raise RequestError(400, f"Expected {ACCEPTED}.") from None  # (deeply nested JSON)
    if kind == "multipart/form-data":

        async def stream():
            yield body

        try:
            form = await MultiPartParser(request.headers, stream()).parse()
        except MultiPartException as error:
            raise RequestError(400, f"Malformed multipart body: {error.message}") from None
        uploads = [value for _, value in form.multi_items() if hasattr(value, "read")]
        if not uploads:
            raise RequestError(400, "The multipart body has no file; send the PNG as a file.")
        return await uploads[0].read()
    if kind.startswith("image/"):
        return body
    raise RequestError(415, f"Content type {kind or '(none)'} is not accepted; send {ACCEPTED}.")


SUFFIXES = {  # the formats kept as they came, by the suffix dataset=folder reads them by
    "PNG": ".png",
    "JPEG": ".jpg",
    "MPO": ".jpg",  # a camera's JPEG with a preview
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "WEBP": ".webp",
}


def png_of(image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def collect_image(root: Path, label: str | None, data: bytes, classes: tuple[str, ...]) -> str:
    """Save an upload under `root/<label>/` as the file it came in (`7/20261201-...-ab12.png`);
    the label must be one of the model's classes and the bytes an image."""
    if label not in classes or label.startswith(".") or "/" in label:
        raise RequestError(
            400, f"label={label} is not one of the model's classes ({', '.join(classes)})."
        )
    image = open_image(io.BytesIO(data), "upload")  # an ImageError (422) if it is none
    suffix = SUFFIXES.get(image.format or "")
    if suffix is None:  # a format dataset=folder does not read: kept as a PNG of it
        data, suffix = png_of(image), ".png"
    try:
        return str(add_image(root, label, data, suffix).relative_to(root))
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise RequestError(
                507, f"No space left on device in {root}: free some, and save again."
            ) from None
        raise RequestError(500, f"Cannot save into {root / label}: {error.strerror}.") from None


def check_collect(root: Path) -> None:
    """Refuse a --collect folder that cannot be made or written, before the model loads."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MnistExpError(f"--collect {root}: cannot make it ({error.strerror}).") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise MnistExpError(f"--collect {root}: not writable; choose a folder you can write.")


def create_app(predictor: Predictor, model: dict, collect: Path | None = None) -> FastAPI:
    """The page at /, POST /predict, GET /health and GET /model (what `model` says, the classes
    and whether it collects); with `collect`, POST /collect?label=L saves an image there."""
    app = FastAPI(title="mnist_exp", docs_url=None, redoc_url=None)
    model = {**model, "classes": list(predictor.classes), "collect": collect is not None}
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(MnistExpError)
    async def one_line_error(request: Request, error: MnistExpError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=getattr(error, "status", 422))

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (STATIC / "index.html").read_text()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    def model_info() -> dict:
        return model

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        """Digit, probabilities and the 28x28 image the model saw (rows of 0..1 values)."""
        data = await image_bytes(request)

        def answer() -> tuple[np.ndarray, np.ndarray]:  # blocking work, off the event loop
            seen = preprocess_image(open_image(io.BytesIO(data), "upload"))
            return seen, predictor.probabilities(seen[None])[0]

        seen, probabilities = await run_in_threadpool(answer)
        prediction = to_prediction(probabilities, predictor.classes)
        return {
            "digit": prediction.digit,
            "label": prediction.label,
            "confidence": prediction.confidence,
            "probabilities": [round(float(p), 5) for p in prediction.probabilities],
            "image": np.round(seen[..., 0], 3).tolist(),
        }

    @app.post("/collect")
    async def collect_one(request: Request) -> dict:
        """Save the image (sent as to /predict) under its true label, `?label=7`: where it went."""
        if collect is None:
            raise RequestError(404, "This server does not collect; start it with --collect DIR.")
        if request.headers.get("x-collect") != "1":  # which no other site's page can send
            raise RequestError(403, "POST /collect needs the header X-Collect: 1.")
        data = await image_bytes(request)
        label = request.query_params.get("label")
        saved = await run_in_threadpool(collect_image, collect, label, data, predictor.classes)
        return {"saved": saved}

    return app


def describe(predictor: Predictor) -> dict:
    """What /model reports: the model's source, what a default model was chosen on and, for a
    tracked model, its run and accuracies."""
    from mnist_exp.config.schema import MlflowConfig
    from mnist_exp.names import BEST_VAL_ACCURACY, TEST_ACCURACY
    from mnist_exp.tracking.read import model_run
    from mnist_exp.tracking.store import open_store

    source = predictor.source
    run = model_run(source, open_store(MlflowConfig()))
    if run is None:
        return {"model": source, "chosen": predictor.chosen}
    metrics = run.data.metrics
    return {
        "model": source,
        "chosen": predictor.chosen,
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "test_accuracy": metrics.get(TEST_ACCURACY),
        "val_accuracy": metrics.get(BEST_VAL_ACCURACY),
    }


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    found = argparse.ArgumentParser(
        prog="python -m mnist_exp.serve", description="Serve the draw-a-digit page and its API."
    )
    found.add_argument(
        "--model", help="a .keras/.h5 file or MLflow URI (default: the best finished run's model)"
    )
    found.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    found.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    found.add_argument(
        "--collect",
        metavar="DIR",
        type=Path,
        help="offer to correct each answer, saving the image under DIR/<label>/ "
        "(a dataset=folder set)",
    )
    return found


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        if args.collect:
            check_collect(args.collect)
        predictor = load_predictor(args.model)
    except MnistExpError as error:
        exit_with(error)
    model = describe(predictor)
    import uvicorn

    accuracy = model.get("test_accuracy")
    tested = f" (test accuracy {accuracy:.2%})" if accuracy is not None else ""
    chosen = f", chosen as {predictor.chosen}" if predictor.chosen else ""
    print(f"Model {predictor.source}{tested}{chosen}", flush=True)
    print(f"Open http://{args.host}:{args.port}", flush=True)
    if args.collect:
        print(f"Corrections are saved under {args.collect.resolve()}/<label>/", flush=True)
    app = create_app(predictor, model, args.collect and args.collect.resolve())
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
