"""Helpers shared by the tests."""

import contextlib
import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def bf16_refused() -> bool:
    """Whether precision=bf16 is refused here: a bf16 CPU with oneDNN kept below it, as in the
    AVX2 stand-in (ONEDNN_MAX_CPU_ISA=AVX2), where TensorFlow's bf16 kernels fail."""
    from mnist_exp.machine import cpuinfo
    from mnist_exp.train import cpu_has_bf16

    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    return cpu_has_bf16(cpuinfo()) and not cpu_has_bf16(cpuinfo(), limit)


def run_module(
    module: str, *args: str, cwd: Path = ROOT, timeout: float = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m module args...` as a user would; capture its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_during_epoch(
    epoch: int, args: list[str], action, env: dict | None = None, occurrence: int = 1
) -> tuple[int, str]:
    """Start `python -m mnist_exp.run args`, call `action(process)` once `epoch` has begun for the
    `occurrence`-th time (in a sweep: in that job), watching the output; return its exit code and
    output."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_exp.run", *args],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    output = []
    for line in process.stdout:
        output.append(line)
        if began(line, epoch):
            occurrence -= 1
            if occurrence == 0:
                action(process)
    return process.wait(timeout=600), "".join(output)


def began(line: str, epoch: int) -> bool:
    """Whether a run's line says `epoch` (from 1) begins: training starts there (`training on
    ...: epochs 1-3`), or the epoch before it ended (`epoch 1/3  loss ...`)."""
    if line.startswith("training on "):
        return line.rstrip().rpartition(" epochs ")[2].partition("-")[0] == str(epoch)
    return line.startswith(f"epoch {epoch - 1}/")


def interrupt_after(epoch: int):
    """A callbacks-group builder (`+callbacks.interrupt._target_=tests.helpers.interrupt_after`):
    Ctrl-C, as SIGINT to this process, once `epoch` (counted from 1) has ended, so the run stops
    in the next one. A resumed run never ends that epoch again."""
    import keras

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, index, logs=None):
            if index + 1 == epoch:
                os.kill(os.getpid(), signal.SIGINT)

    return Interrupt()


def slow_batches(seconds: float):
    """A callbacks-group builder (`+callbacks.slow._target_=tests.helpers.slow_batches`): sleep
    `seconds` for each training batch (at the end of each call into TensorFlow, for its steps), so
    that a tiny run stays mid-epoch long enough to be acted on, at no cost in CPU."""
    import keras

    class Slow(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.first = batch

        def on_train_batch_end(self, batch, logs=None):
            time.sleep(seconds * (batch - self.first + 1))

    return Slow()


def interrupting(epoch: int) -> list[str]:
    """The overrides that add `interrupt_after(epoch)` to a run's callbacks."""
    return [
        "+callbacks.interrupt._target_=tests.helpers.interrupt_after",
        f"+callbacks.interrupt.epoch={epoch}",
    ]


def interrupt_at_epoch(epoch: int, args: list[str], sig: int) -> tuple[int, str]:
    """Send `sig` to a run once `epoch` has begun; its exit code and output."""
    return run_during_epoch(epoch, args, lambda process: process.send_signal(sig))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 180) -> None:
    """Poll `url` until it answers; fail if `process` exits or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            assert process.poll() is None, f"the server for {url} exited ({process.returncode})"
            assert time.monotonic() < deadline, f"{url} did not answer within {seconds} s"
            time.sleep(0.5)


def wait_for(what: str, found, seconds: float = 300):
    """Poll `found()` until it gives something; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (result := found()):
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.5)
    return result


def user_style_image(digit: np.ndarray, rng: np.random.Generator, kind: str) -> Image.Image:
    """An MNIST digit as a user would make it: dark ink on a light, coloured, larger canvas,
    off-centre; `png-rgba` is ink on a transparent canvas, as drawing apps export it."""
    side = int(rng.integers(80, 160))
    ink = (
        np.asarray(
            Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR), np.float32
        )[..., None]
        / 255
    )
    height, width = 300, 200
    top, left = rng.integers(0, height - side), rng.integers(0, width - side)
    if kind == "png-rgba":
        canvas = np.zeros((height, width, 4), np.float32)
        canvas[top : top + side, left : left + side, 3:] = ink * 255
        return Image.fromarray(canvas.astype(np.uint8), "RGBA")
    paper, pen = rng.uniform(170, 255, 3), rng.uniform(0, 90, 3)
    canvas = np.ones((height, width, 3), np.float32) * paper
    canvas += rng.normal(0, 4, canvas.shape)  # paper grain
    patch = canvas[top : top + side, left : left + side]
    canvas[top : top + side, left : left + side] = patch * (1 - ink) + pen * ink
    image = Image.fromarray(canvas.clip(0, 255).astype(np.uint8), "RGB")
    return image.convert("L") if kind == "png-grey" else image


# Chromium as root in a closed network: no sandbox, no calls home.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """Debian's chromium, or the test is skipped saying why."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("Debian's chromium is not installed and `make browser` could not install it")
    return path


def start_tracking_server(
    root: Path,
    port: int,
    backend: str | None = None,
    env: dict | None = None,
    auth: bool = False,
    host: str = "127.0.0.1",
) -> subprocess.Popen:
    """`make server` on `host`:`port` with its artifacts under `root` and its store there too
    (`server.db`), or in `backend`; `auth`: `make server AUTH=1`, its users in `root/auth`."""
    return subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "server",
            f"HOST={host}",
            f"PORT={port}",
            f"BACKEND={backend or 'sqlite:///' + str(root / 'server.db')}",
            f"ARTIFACTS={root / 'artifacts'}",
            "WORKERS=1",  # 4 (the default) take seconds more to start on 2 cores
            *(["AUTH=1", f"AUTH_DIR={root / 'auth'}"] if auth else []),
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def copy_store(empty_store: Path, directory: Path) -> str:
    """A new store `directory/mlflow.db`, copied from `empty_store`; its URI."""
    shutil.copyfile(empty_store, directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


def stop(server: subprocess.Popen) -> None:
    """Stop a server started in its own session, with everything it started (if any lives): by
    SIGTERM, and SIGKILL after 30 s (a graceful stop waits on connections a killed host left
    open)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue
    raise AssertionError(f"{server.args} outlived SIGKILL")


# A user's own architecture, in a module of theirs (README: an architecture outside the package).
USER_MODELS = """\
import keras


def tiny(input_shape, num_classes, width=8):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(width, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )
"""


def idx_bytes(array: np.ndarray, magic_type: int = 8) -> bytes:
    """An IDX file's bytes: magic (type 8: unsigned bytes; its dimensions), sizes, data."""
    header = bytes([0, 0, magic_type, array.ndim])
    dims = b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + dims + array.tobytes()


def write_idx_set(directory: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> Path:
    """The four arrays as the four IDX files MNIST and Fashion-MNIST ship (`train-images-idx3-
    ubyte[.gz]`, ...) in `directory`; returns it."""
    from mnist_exp.data import IDX_NAMES

    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_NAMES.items():
        name = f"{stem}-idx{arrays[key].ndim}-ubyte" + (".gz" if gz else "")
        data = idx_bytes(arrays[key].astype(np.uint8))
        (directory / name).write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return directory


@contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (`3m`) mounted at `mount` while the block runs: a disk to fill."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mount.mkdir(parents=True)
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)]
    ).returncode:
        pytest.skip("this machine does not let root mount a tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
