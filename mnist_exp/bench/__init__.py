"""`make bench` (`python -m mnist_exp.bench`): training, logging, prediction and start-up, each
timed against plain Keras on the same data; the table in outputs/bench.json."""
