"""The formats sets of 28x28 grey images ship in: IDX files (raw or .gz), one .npz of the four
arrays, KMNIST's four one-array .npz files; each read and verified."""

import gzip
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mnist_exp.errors import DataError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SIZE = (28, 28)
IDX_NAMES = {
    "x_train": "train-images",
    "y_train": "train-labels",
    "x_test": "t10k-images",
    "y_test": "t10k-labels",
}
IDX_MAGIC = {1: 2049, 3: 2051}  # labels (1-d) and images (3-d) of unsigned bytes
# KMNIST ships each array as its own .npz (key arr_0): kmnist-train-imgs.npz and so on.
ONE_ARRAY_NPZ = {
    "x_train": "train-imgs",
    "y_train": "train-labels",
    "x_test": "test-imgs",
    "y_test": "test-labels",
}

Arrays = dict[str, np.ndarray]
MNIST_NPZ = "mnist.npz"  # Keras' name for MNIST's .npz, read first in a directory


def write_npz(arrays: Arrays, path: Path) -> None:
    """Write arrays to a .npz atomically (beside, then renamed over it), so concurrent readers
    never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    with os.fdopen(handle, "wb") as file:
        np.savez(file, **arrays)
    os.replace(tmp, path)


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Decode an IDX file of unsigned bytes, checking its magic number and size."""
    if len(raw) < 8:
        raise DataError(f"{name} is not an IDX file (only {len(raw)} bytes).")
    ndim = raw[3]
    magic = int.from_bytes(raw[:4], "big")
    if IDX_MAGIC.get(ndim) != magic:
        raise DataError(
            f"{name} has IDX magic number {magic:#010x}, expected 0x00000801 "
            "(labels) or 0x00000803 (images): not an IDX file of bytes, or corrupt."
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise DataError(
            f"{name} holds {len(body)} data bytes but its header says {shape}: "
            "the file is truncated or corrupt."
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(flat_bytes(array)).hexdigest()


def flat_bytes(array: np.ndarray) -> np.ndarray:
    """The array's bytes, a flat uint8 view where it is contiguous: hashed without a copy."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def verify(arrays: Arrays, origin: str, checksums: dict[str, str] | None = None) -> Arrays:
    """Check that `origin` gave 28x28 uint8 images with one integer label each, and the SHA-256
    `checksums` of the arrays they name; a DataError naming `origin` if not."""
    for key in ARRAYS:
        if key not in arrays:
            raise DataError(f"{origin}: no {key} array; a set needs {', '.join(ARRAYS)}.")
    for part in ("train", "test"):
        images, labels = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SIZE:
            raise DataError(
                f"{origin}: x_{part} is {images.dtype} of shape {images.shape}; "
                "expected uint8 images of 28x28 pixels, shape (N, 28, 28)."
            )
        if labels.shape != images.shape[:1] or labels.dtype.kind not in "iu":
            raise DataError(
                f"{origin}: y_{part} is {labels.dtype} of shape {labels.shape}; expected one "
                f"integer label per image, shape ({len(images)},)."
            )
    for key, expected in (checksums or {}).items():
        if sha256(arrays[key]) != expected:
            raise DataError(f"{origin}: {key} fails its SHA-256 check (corrupt, or another set).")
    return arrays


def read_npz(path: Path, checksums: dict[str, str] | None = None) -> Arrays:
    """The four arrays of one .npz file (as Keras' mnist.npz holds them), verified."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return verify(
                {key: npz[key] for key in ARRAYS if key in npz.files}, str(path), checksums
            )
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path} is not a readable .npz file ({error}).") from None


def read_one_array_npz(directory: Path, checksums: dict[str, str] | None = None) -> Arrays:
    """KMNIST's layout: `*-train-imgs.npz`, `*-train-labels.npz`, ... each holding one array."""
    arrays = {}
    for key, stem in ONE_ARRAY_NPZ.items():
        path = next(iter(sorted(directory.glob(f"*{stem}.npz"))), None)
        if path is None:
            raise DataError(f"{directory} has no *-{stem}.npz file.")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays[key] = npz[npz.files[0]]
        except (OSError, ValueError, IndexError, zipfile.BadZipFile, EOFError) as error:
            raise DataError(f"{path} is not a readable one-array .npz file ({error}).") from None
    return verify(arrays, str(directory), checksums)


def read_idx_dir(directory: Path, checksums: dict[str, str] | None = None) -> Arrays:
    """Read the four IDX files, named like `train-images-idx3-ubyte` or `.idx3-ubyte`, maybe .gz."""
    arrays = {}
    for key, stem in IDX_NAMES.items():
        dims = 3 if key.startswith("x") else 1
        names = [f"{stem}{sep}idx{dims}-ubyte{gz}" for sep in ("-", ".") for gz in ("", ".gz")]
        path = next((directory / n for n in names if (directory / n).is_file()), None)
        if path is None:
            raise DataError(
                f"{directory} has no {names[0]} (or .gz / {names[2]}) file, nor mnist.npz, one "
                ".npz of x_train, y_train, x_test and y_test, or KMNIST's four .npz files."
            )
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rb") as file:
                arrays[key] = parse_idx(file.read(), str(path))
        except (OSError, EOFError) as error:
            raise DataError(f"{path} cannot be read ({error}).") from None
    return verify(arrays, str(directory), checksums)


def read_source(path: Path, checksums: dict[str, str] | None = None) -> Arrays:
    """A set as it ships: a .npz file, or a directory with mnist.npz, a single .npz of the four
    arrays, KMNIST's four one-array .npz files or the four IDX files."""
    if path.is_file():
        return read_npz(path, checksums)
    npz = sorted(path.glob("*.npz"))
    if (path / MNIST_NPZ).is_file():
        return read_npz(path / MNIST_NPZ, checksums)
    if any(p.name.endswith(f"{ONE_ARRAY_NPZ['x_train']}.npz") for p in npz):
        return read_one_array_npz(path, checksums)
    if len(npz) == 1:
        return read_npz(npz[0], checksums)
    return read_idx_dir(path, checksums)
