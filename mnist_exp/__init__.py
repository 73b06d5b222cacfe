"""mnist_exp: config-driven MNIST experiments with Hydra, Keras and MLflow.

`from mnist_exp import run_experiment` runs one experiment in-process (see `mnist_exp.run`).
"""

import os

# Quiet TensorFlow's C++ start-up chatter so users see what matters; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def __getattr__(name: str):
    """`run_experiment` and `Result` on first use: `import mnist_exp.predict` stays light."""
    if name in ("run_experiment", "Result"):
        from mnist_exp import run

        return getattr(run, name)
    raise AttributeError(f"module 'mnist_exp' has no attribute {name!r}")
