"""The augment group: random affine distortions (and erasing) of training batches, never of
validation or test images, seeded and run by tf.data beside the training step."""

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from annotated_types import Interval

if TYPE_CHECKING:
    import tensorflow as tf

Fraction = Annotated[float, Interval(ge=0, lt=1)]


def affine(
    rotation: Annotated[float, Interval(ge=0, le=180)] = 10.0,
    shift: Fraction = 0.1,
    zoom: Fraction = 0.1,
    erase: Annotated[float, Interval(ge=0, le=1)] = 0.0,
    erase_size: Fraction = 0.3,
    shear: Annotated[float, Interval(ge=0, le=1)] = 0.0,
    stroke: Annotated[float, Interval(ge=0, le=1)] = 0.0,
    blur: Annotated[float, Interval(ge=0, le=1)] = 0.0,
    elastic: Annotated[float, Interval(ge=0, le=8)] = 0.0,
    low_res: Annotated[float, Interval(ge=0, le=1)] = 0.0,
) -> Callable[["tf.Tensor", "tf.Tensor"], "tf.Tensor"]:
    """A function (images, seed) -> images that rotates each image by up to `rotation` degrees,
    shifts it by up to `shift` of its side, scales it by 1 +- `zoom` and slants it by up to
    `shear` (one bilinear resampling for all four), bends it by a smooth random field of up to
    `elastic` pixels, thickens or thins its strokes by up to `stroke` of a pixel's dilation or
    erosion, blends it toward its blur by up to `blur`, with probability `low_res` takes it
    through 8-14 pixels and back, then with probability `erase` blanks a random square of up to
    `erase_size`."""
    import tensorflow as tf

    def transform(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        batch = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]

        def uniform(index: int, low: float, high: float) -> tf.Tensor:
            return tf.random.stateless_uniform([batch], seed + index, low, high)

        images = moved(images, uniform, rotation, shift, zoom, shear)
        if elastic > 0:
            images = bent(images, seed + 12, elastic)
        if stroke > 0:
            images = restroke(images, uniform(10, -stroke, stroke))
        if blur > 0:
            images = blurred(images, uniform(11, 0, blur))
        if low_res > 0:
            images = coarsened(images, seed + 14, low_res)
        if erase > 0:
            images *= 1 - erase_mask(batch, height, width, seed, erase, erase_size)
        return images

    # Plain TensorFlow ops under Python-valued branches: AutoGraph's rewrite of them costs
    # start-up and changes nothing.
    return tf.autograph.experimental.do_not_convert(transform)


def moved(images, uniform, rotation: float, shift: float, zoom: float, shear: float):
    """Each image rotated, shifted, scaled and slanted by its own draws of `uniform(index, low,
    high)`, in one bilinear resampling (zero outside)."""
    import tensorflow as tf

    height, width = images.shape[1], images.shape[2]
    angle = uniform(1, -rotation, rotation) * (math.pi / 180)
    scale = uniform(2, 1 - zoom, 1 + zoom)
    dx, dy = uniform(3, -shift, shift) * width, uniform(4, -shift, shift) * height
    # The output pixel (x, y) samples the input at M (x, y) + b: M = R(-angle) / scale.
    cx, cy = (width - 1) / 2, (height - 1) / 2
    slant = uniform(9, -shear, shear)  # x moves by slant * (y - cy)
    a0, a1 = tf.cos(angle) / scale, tf.sin(angle) / scale
    b0, b1 = -a1, a0
    a1, b1 = a1 - a0 * slant, b1 - b0 * slant
    a2 = cx - a0 * (cx + dx) - a1 * (cy + dy)
    b2 = cy - b0 * (cx + dx) - b1 * (cy + dy)
    zeros = tf.zeros_like(a0)
    matrices = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=matrices,
        output_shape=[height, width],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


# Control points of the elastic field, each way: a field this coarse, upsampled bicubically, is
# as smooth as uniform noise under a Gaussian of a few pixels (Simard et al., 2003), for less.
ELASTIC_GRID = 4
LOW_RES = (8, 14)  # the sides, in pixels, a low-resolution round trip goes through


def bent(images, seed, most: float):
    """Each image resampled (bilinearly, zero outside) at its pixels moved by a smooth random
    field of displacements of up to `most` pixels each way."""
    import tensorflow as tf

    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    coarse = tf.random.stateless_uniform([batch, ELASTIC_GRID, ELASTIC_GRID, 2], seed, -most, most)
    field = tf.image.resize(coarse, [height, width], method="bicubic")
    rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32),
                             indexing="ij")  # fmt: skip
    y, x = rows + field[..., 0], cols + field[..., 1]
    y0, x0 = tf.floor(y), tf.floor(x)
    flat = tf.reshape(images, [batch, height * width])

    def at(row, col):
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        index = tf.cast(tf.clip_by_value(row, 0, height - 1) * width, tf.int32) + tf.cast(
            tf.clip_by_value(col, 0, width - 1), tf.int32
        )
        picked = tf.gather(flat, tf.reshape(index, [batch, -1]), batch_dims=1)
        return tf.reshape(picked, [batch, height, width]) * tf.cast(inside, images.dtype)

    dy, dx = y - y0, x - x0
    out = (1 - dy) * ((1 - dx) * at(y0, x0) + dx * at(y0, x0 + 1)) + dy * (
        (1 - dx) * at(y0 + 1, x0) + dx * at(y0 + 1, x0 + 1)
    )
    return out[..., None]


def coarsened(images, seed, probability: float):
    """With `probability`, an image averaged down to a side of 8-14 pixels (one side a batch)
    and back up, bilinearly (a blurred scan or photo) or, half the time, to the nearest pixel
    (blocks, as an upscaled small image shows)."""
    import tensorflow as tf

    height, width = images.shape[1], images.shape[2]
    side = tf.random.stateless_uniform([], seed, LOW_RES[0], LOW_RES[1] + 1, dtype=tf.int32)
    small = tf.image.resize(images, tf.stack([side, side]), method="area")
    smooth = tf.image.resize(small, [height, width], method="bilinear")
    blocks = tf.image.resize(small, [height, width], method="nearest")
    draw = tf.random.stateless_uniform([tf.shape(images)[0]], seed + 1)
    back = tf.where((draw < probability / 2)[:, None, None, None], blocks, smooth)
    return tf.where((draw < probability)[:, None, None, None], back, images)


def restroke(images, amount):
    """Each image blended toward its 3x3 grey dilation (`amount` > 0: bolder strokes) or its
    erosion (`amount` < 0: thinner ones) by the size of its `amount`."""
    import tensorflow as tf

    bolder = tf.nn.max_pool2d(images, 3, 1, "SAME")
    thinner = -tf.nn.max_pool2d(-images, 3, 1, "SAME")
    target = tf.where(amount[:, None, None, None] > 0, bolder, thinner)
    return images + tf.abs(amount)[:, None, None, None] * (target - images)


def blurred(images, amount):
    """Each image blended toward its Gaussian blur (5x5, sigma 1 pixel) by its `amount`."""
    import tensorflow as tf

    taps = tf.exp(-(tf.range(-2.0, 3.0) ** 2) / 2)
    taps /= tf.reduce_sum(taps)
    smooth = tf.nn.conv2d(images, tf.reshape(taps, [5, 1, 1, 1]), 1, "SAME")
    smooth = tf.nn.conv2d(smooth, tf.reshape(taps, [1, 5, 1, 1]), 1, "SAME")
    return images + amount[:, None, None, None] * (smooth - images)


def erase_mask(batch, height: int, width: int, seed, probability: float, size: float):
    """1 inside a random square (side up to `size` of the image) of each image chosen with
    `probability`, else 0; shape (batch, height, width, 1)."""
    import tensorflow as tf

    chosen = tf.random.stateless_uniform([batch], seed + 5) < probability
    half = tf.random.stateless_uniform([batch], seed + 6, 0.1, size) * (height / 2)
    centre_y = tf.random.stateless_uniform([batch], seed + 7, 0, height)
    centre_x = tf.random.stateless_uniform([batch], seed + 8, 0, width)
    rows = tf.abs(tf.range(height, dtype=tf.float32)[None, :] - centre_y[:, None]) < half[:, None]
    cols = tf.abs(tf.range(width, dtype=tf.float32)[None, :] - centre_x[:, None]) < half[:, None]
    inside = rows[:, :, None] & cols[:, None, :] & chosen[:, None, None]
    return tf.cast(inside, tf.float32)[..., None]
