"""mnist_exp: config-driven MNIST experiments with Hydra, Keras and MLflow.

The public API: `run_experiment(overrides) -> Result` runs one experiment in-process (as
`python -m mnist_exp.run` would); `predict_digit`, `load_predictor` and `Predictor` use a
trained model. Each is imported on first use, so `import mnist_exp` stays light.
"""

from mnist_exp.console import quiet_environment
from mnist_exp.machine import tensorflow_environment

quiet_environment()  # before TensorFlow or MLflow is imported: their start-up chatter off
tensorflow_environment()  # before TensorFlow starts: threads for the usable CPUs, oneDNN on

PUBLIC = {
    "run_experiment": "mnist_exp.run",
    "Result": "mnist_exp.config.job",
    "predict_digit": "mnist_exp.serving.predict",
    "load_predictor": "mnist_exp.serving.predict",
    "Predictor": "mnist_exp.serving.predict",
}
__all__ = list(PUBLIC)


def __getattr__(name: str):
    """The public names on first use."""
    if name not in PUBLIC:
        raise AttributeError(f"module 'mnist_exp' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(PUBLIC[name]), name)
