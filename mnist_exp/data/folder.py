"""A folder of labelled image files, `root/<label>/*.png|jpg|...`, read through the predict
preprocessing into MNIST-like arrays, and cached by each file's path, size and time."""

import errno
import hashlib
import os
import sys
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np

from mnist_exp.data import DIGITS
from mnist_exp.data.formats import write_npz
from mnist_exp.data.images import (
    IMAGE_SUFFIXES,
    PREPROCESSING_VERSION,
    ImageError,
    preprocess_image,
)
from mnist_exp.errors import DataError

CACHE_SUBDIR = "folders"  # under dataset.cache_dir: one .npz of preprocessed images per folder


def folder_classes(names: list[str], classes: list[str] | None) -> tuple[str, ...]:
    """The classes of these label folders: `classes` if given; folders named by digits are the
    classes 0-9 whichever of them exist; other numbers by value (2 before 10); names in order."""
    if classes:
        return tuple(classes)
    if all(name.isdigit() for name in names):
        top = max(int(name) for name in names)
        return DIGITS if top <= 9 else tuple(str(n) for n in range(top + 1))
    return tuple(sorted(names))


def class_of(folder: Path, classes: tuple[str, ...]) -> int:
    """The label of a folder's images: its name's place among the classes (`07/` is 7's)."""
    name = str(int(folder.name)) if folder.name.isdigit() else folder.name
    if name not in classes:
        raise DataError(
            f"{folder} is not one of dataset.classes ({', '.join(classes)}); rename the folder "
            "or add its class."
        )
    return classes.index(name)


def labelled_files(
    root: Path, classes: list[str] | None
) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """Every image file under `root/<label>/`, its label and the classes."""
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; give one that holds <label>/ folders.")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root} has no label folders: put each class's images in {root}/<label>/.")
    names = folder_classes([folder.name for folder in folders], classes)
    files, labels = [], []
    for folder in folders:
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(
                f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); add some or "
                "remove the folder."
            )
        files += found
        labels += [class_of(folder, names)] * len(found)
    if len(set(labels)) < 2:
        raise DataError(f"{root} has one class only ({folders[0].name}); a classifier needs two.")
    return files, labels, names


def file_key(path: Path, digit_style: bool) -> str:
    """What a cached image depends on: the file (path, size, time) and how it was preprocessed."""
    stat = path.stat()
    style = "digit" if digit_style else "whole"
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{style}|v{PREPROCESSING_VERSION}"


def cache_path(root: Path, cache_dir: str) -> Path:
    name = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / CACHE_SUBDIR / f"{name}.npz"


def read_cache(path: Path) -> dict[str, np.ndarray]:
    """{file key: image} from an earlier read; a damaged cache is ignored (and rewritten)."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            return dict(zip(cached["keys"].tolist(), cached["images"], strict=True))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return {}


def write_cache(path: Path, keys: list[str], images: np.ndarray) -> None:
    """Written atomically; a cache that cannot be written only costs the next run the
    preprocessing."""
    try:
        write_npz({"keys": np.array(keys), "images": images}, path)
    except OSError as error:
        print(f"[mnist_exp.data] cannot cache {path} ({error.strerror}).", file=sys.stderr)


def read_images(files: list[Path], digit_style: bool, cache: Path) -> tuple[list, list[str]]:
    """Each file's uint8 28x28 image (None where it cannot be read) and one line for each such,
    from the cache where the file is unchanged."""
    cached = read_cache(cache)
    before = set(cached)
    keys = [file_key(path, digit_style) for path in files]
    unreadable = []
    for path, key in zip(files, keys, strict=True):
        if key not in cached:
            try:
                seen = preprocess_image(path, digit_style=digit_style)[..., 0]
                cached[key] = np.round(seen * 255).astype(np.uint8)
            except ImageError as error:
                unreadable.append(str(error))
    kept = {key: cached[key] for key in keys if key in cached}
    if kept and set(kept) != before:
        write_cache(cache, list(kept), np.stack(list(kept.values())))
    return [kept.get(key) for key in keys], unreadable


def read_folder(
    root: Path, classes: list[str] | None, digit_style: bool, cache_dir: str
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], list[str]]:
    """A folder's readable images (uint8, N x 28 x 28), their labels, the classes and one line for
    each file that could not be read (said on stderr too)."""
    files, labels, names = labelled_files(root, classes)
    images, unreadable = read_images(files, digit_style, cache_path(root, cache_dir))
    for line in unreadable:
        print(f"[mnist_exp.data] skipped {line}", file=sys.stderr)
    read = [
        (image, label) for image, label in zip(images, labels, strict=True) if image is not None
    ]
    if not read:
        raise DataError(f"{root}: none of its {len(files)} images could be read.")
    return (
        np.stack([image for image, _ in read]),
        np.array([label for _, label in read], np.int64),
        names,
        unreadable,
    )


def add_image(root: Path, label: str, data: bytes, suffix: str) -> Path:
    """Save an image's bytes as a new file in `root/<label>/`: a unique name, never overwriting
    another, and whole or not at all (written aside, then linked into place)."""
    folder = root / label
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}{suffix}"
    aside = folder / f".{name}.part"
    try:
        with open(aside, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(aside, folder / name)  # fails rather than replace a file of that name
        except OSError as error:  # a file system without hard links (FAT, some mounts)
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            os.rename(aside, folder / name)  # the name is unique already
    finally:
        aside.unlink(missing_ok=True)
    return folder / name
