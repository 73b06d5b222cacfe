"""mnist_exp: config-driven MNIST CNN experiments with Hydra, Keras and MLflow."""

import os

# Quiet TensorFlow's C++ start-up chatter so users see what matters; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
