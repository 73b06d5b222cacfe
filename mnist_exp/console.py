"""What a user reads on the console: our lines and Keras' progress. TensorFlow's C++ start-up
lines and MLflow's INFO lines are dropped unless MNIST_EXP_VERBOSE=1."""

import gc
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

VERBOSE = "MNIST_EXP_VERBOSE"
# TensorFlow's lines on a machine without a GPU, printed by C++ before its logging is set up.
NOISE = (
    "All log messages before absl::InitializeLog()",
    "cudart_stub.cc",
    "cuda_platform.cc",
    "cuda_executor.cc",
    "cuda_dnn.cc",
    "cuda_fft.cc",
    "cuda_blas.cc",
    "computation_placer.cc",
    "oneDNN custom operations are on",  # turned on by mnist_exp.machine; TF_ENABLE_ONEDNN_OPTS=0
)


def verbose() -> bool:
    return os.environ.get(VERBOSE, "") not in ("", "0")


def quiet_environment() -> None:
    """Set, unless the user has, the levels below which TensorFlow and MLflow stay silent."""
    if not verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        # Artifacts read back (predictions, checkpoints) are small: progress bars are only noise.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def import_tensorflow() -> None:
    """Import TensorFlow and let it look for GPUs, its C++ chatter about CUDA filtered out of
    stderr (everything else it prints is kept); the first import with the collector paused."""
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
        return
    with collector_paused(), nullcontext() if verbose() else stderr_filtered(NOISE):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a while, then every live object frozen out of
    its reach (`gc.freeze`): TensorFlow's ~470,000 lasting objects made each full collection
    cost 0.2-0.5 s, during its import and for the rest of the process."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@contextmanager
def stderr_filtered(noise: tuple[str, ...]) -> Iterator[None]:
    """The lines written to file descriptor 2 meanwhile (C++ included), less those containing
    any of `noise`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not any(n in line for n in noise)))


# Keras, loading a model for inference (no optimizer wanted), on the optimizer state it skips.
OPTIMIZER_SKIPPED = "Skipping variable loading for optimizer"


@contextmanager
def warnings_ignored(message: str) -> Iterator[None]:
    """Python warnings starting with `message` dropped for a while (others still show)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape(message))
        yield


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence a library's warnings for a moment (errors still show)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
