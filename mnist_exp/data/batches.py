"""A training split as an endless, seeded tf.data stream of batches: what every run's `fit` trains
on, each batch through the augment group's transform if the recipe has one."""

from collections.abc import Callable

import numpy as np
import tensorflow as tf


def training_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int,
    transform: Callable | None,
    steps: int,
    initial_epoch: int = 0,
) -> tf.data.Dataset:
    """Endless shuffled batches of (images, labels), `steps` to an epoch, the images through
    `transform` if given, each batch with its own seed (a resumed run continues the seed
    sequence)."""
    order = tf.data.Dataset.range(len(x))
    if shuffle:
        order = order.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    order = order.batch(batch_size).repeat()
    arrays = tf.data.Dataset.from_tensors((x, y)).repeat()
    seeds = tf.data.Dataset.random(seed=seed).batch(2).skip(initial_epoch * steps)

    def batch_of(indices, data, batch_seed):
        images, labels = data
        images = tf.gather(images, indices)
        if transform is not None:
            images = transform(images, batch_seed)
        return images, tf.gather(labels, indices)

    # Fixed parallelism, autotuning off: tf.data's autotuning thread can hold the end of
    # `model.fit` for 30 s while it is torn down (seen in 3 of 9 runs of experiment=fast).
    options = tf.data.Options()
    options.autotune.enabled = False
    batches = tf.data.Dataset.zip(order, arrays, seeds).map(batch_of, num_parallel_calls=2)
    return batches.prefetch(2).with_options(options)
