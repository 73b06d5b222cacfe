"""Training recipes: schedules, composable callbacks and augmentation, on real MNIST subsets."""

import dataclasses
import inspect
import itertools
from functools import partial

import keras
import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from mnist_exp import run_experiment
from mnist_exp.config.compose import check_overrides, compose_config
from mnist_exp.config.schema import validate
from mnist_exp.data.batches import training_batches
from mnist_exp.errors import ConfigError
from mnist_exp.groups.augment import affine
from mnist_exp.groups.callbacks import checkpoint
from mnist_exp.groups.dataset import mnist
from mnist_exp.groups.optimizer import adam
from mnist_exp.groups.schedule import constant, cosine, exponential, one_cycle
from mnist_exp.groups.split import holdout
from mnist_exp.train import Training, steps_per_epoch, steps_per_execution, train, weight_averaging

from .helpers import interrupting

SMALL = ["model=mlp", "dataset.limit=1000", "split.size=1000"]
# experiment=fast, 2 epochs on 4,000 training images: 96.08%, 96.16% test (seeds 1, 2; AVX2, fp32;
# 92.98%, 93.04% before its light augmentation)
FAST_SUBSET_ACCURACY = 0.90


def rates(schedule, steps: list[int]) -> list[float]:
    return [float(keras.ops.convert_to_numpy(schedule(step))) for step in steps]


def test_each_schedule_has_the_shape_its_name_promises():
    assert constant(0.5) == 0.5
    assert rates(exponential(1.0, 10, 0.9), [0, 10, 20]) == pytest.approx([1, 0.9, 0.81])
    assert rates(cosine(1.0, 4, 10), [0, 20, 40]) == pytest.approx([1, 0.5, 0], abs=1e-6)
    warm = rates(cosine(1.0, 4, 10, warmup_epochs=1), [0, 5, 10, 40])
    assert warm == pytest.approx([0, 0.5, 1, 0], abs=1e-6)
    cycle = rates(one_cycle(1.0, 10, 10, 0.3, 0.04, 0.001), [0, 30, 100])
    assert cycle == pytest.approx([0.04, 1, 0.001], rel=1e-3)


def test_a_warm_up_longer_than_training_is_one_line():
    with pytest.raises(ConfigError, match="leaves nothing of epochs=2 to decay over"):
        cosine(1.0, 2, 10, warmup_epochs=3)


def test_affine_augmentation_moves_ink_deterministically_and_identity_keeps_it():
    images = tf.constant(mnist(limit=64).x_train[:64])
    seed = tf.constant([7, 0], tf.int64)
    moved = affine(rotation=15, shift=0.1, zoom=0.1)(images, seed)
    assert moved.shape == images.shape and moved.dtype == images.dtype
    assert np.array_equal(moved, affine(rotation=15, shift=0.1, zoom=0.1)(images, seed))
    assert not np.allclose(moved, affine(15, 0.1, 0.1)(images, seed + 1))
    changed = np.abs(moved.numpy() - images.numpy()).mean(axis=(1, 2, 3)) > 0.01
    assert changed.mean() > 0.9
    kept = affine(rotation=0, shift=0, zoom=0)(images, seed)
    np.testing.assert_allclose(kept, images, atol=1e-6)
    erased = affine(0, 0, 0, erase=1.0, erase_size=0.5)(tf.ones_like(images), seed)
    blank = (erased.numpy() == 0).mean(axis=(1, 2, 3))
    assert np.all(blank > 0) and np.all(blank < 0.3)


def test_shear_slants_stroke_thickens_or_thins_and_blur_spreads_ink():
    seed = tf.constant([7, 0], tf.int64)
    bar = np.zeros((64, 28, 28, 1), np.float32)
    bar[:, 4:24, 13:15] = 1.0  # a vertical stroke
    slanted = affine(0, 0, 0, shear=0.5)(tf.constant(bar), seed).numpy()[..., 0]
    columns = np.arange(28)
    top = (slanted[:, 5] * columns).sum(1) / slanted[:, 5].sum(1)
    bottom = (slanted[:, 22] * columns).sum(1) / slanted[:, 22].sum(1)
    assert np.mean(np.abs(top - bottom) > 1) > 0.8 and np.any(top > bottom) and np.any(top < bottom)
    images = tf.constant(mnist(limit=64).x_train[:64])
    ink = images.numpy().sum(axis=(1, 2, 3))
    restroked = affine(0, 0, 0, stroke=0.8)(images, seed).numpy().sum(axis=(1, 2, 3))
    assert np.all(restroked != ink) and np.any(restroked > 1.2 * ink) and np.any(restroked < ink)
    smoothed = affine(0, 0, 0, blur=1.0)(images, seed).numpy()
    np.testing.assert_allclose(smoothed.sum(axis=(1, 2, 3)), ink, rtol=0.01)  # ink spread, kept
    sharpness = (smoothed**2).sum(axis=(1, 2, 3)) / (images.numpy() ** 2).sum(axis=(1, 2, 3))
    assert np.all(sharpness < 1) and sharpness.mean() < 0.9


def test_elastic_bends_strokes_smoothly_and_low_res_softens_some_images():
    images = tf.constant(mnist(limit=64).x_train[:64])
    seed = tf.constant([7, 0], tf.int64)
    ink = images.numpy().sum(axis=(1, 2, 3))
    bent = affine(0, 0, 0, elastic=2.0)(images, seed).numpy()
    assert np.array_equal(bent, affine(0, 0, 0, elastic=2.0)(images, seed).numpy())
    moved = np.abs(bent - images.numpy()).mean(axis=(1, 2, 3)) > 0.01
    assert moved.mean() > 0.9
    kept = bent.sum(axis=(1, 2, 3)) / ink  # bent, not lost: stretched or squeezed, not cut off
    assert np.abs(kept - 1).mean() < 0.15 and np.all(np.abs(kept - 1) < 0.5)
    np.testing.assert_allclose(affine(0, 0, 0, elastic=1e-6)(images, seed), images, atol=1e-4)
    coarse = affine(0, 0, 0, low_res=0.5)(images, seed).numpy()
    softened = np.abs(coarse - images.numpy()).max(axis=(1, 2, 3)) > 0.05
    assert 0.2 < softened.mean() < 0.8  # about half of them
    sharpness = (coarse**2).sum(axis=(1, 2, 3)) / (images.numpy() ** 2).sum(axis=(1, 2, 3))
    assert np.all(sharpness[softened] < 0.95) and np.all(sharpness[~softened] == 1)


def softmax_regression() -> keras.Model:
    """The smallest model that learns MNIST: one dense softmax layer on the pixels."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def test_augmentation_touches_training_batches_only(tmp_path):
    """Training images carry a mark (a top-left pixel of 0.5; MNIST's corners are 0): every
    image the augmentation sees has it, so validation and test images never pass through it."""
    data = mnist(partial(holdout, size=256), limit=512)
    marked = data.x_train.copy()
    marked[:, 0, 0, 0] = 0.5
    data = dataclasses.replace(data, x_train=marked)
    val_before, test_before = data.x_val.copy(), data.x_test.copy()
    seen, unmarked = tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)
    light = affine()

    def watched(images, seed):
        seen.assign_add(tf.cast(tf.shape(images)[0], tf.int64))
        unmarked.assign_add(tf.math.count_nonzero(images[:, 0, 0, 0] != 0.5))
        return light(images, seed)

    cfg = validate(compose_config([*SMALL, "epochs=2", f"hydra.run.dir={tmp_path}"])[0])
    model = softmax_regression()
    steps = steps_per_epoch(len(data.x_train), cfg.batch_size)
    train(model, data, Training(keras.optimizers.Adam(), {}, watched, steps), cfg, tmp_path)
    model.evaluate(data.x_test, data.y_test, verbose=0)
    assert int(seen.numpy()) >= 2 * len(data.x_train)  # (and what tf.data prefetched)
    assert int(unmarked.numpy()) == 0
    assert np.array_equal(data.x_val, val_before) and np.array_equal(data.x_test, test_before)


class WeightsAt(keras.callbacks.Callback):
    """Keeps the model's weights at the first training step of epoch `epoch`, then raises
    KeyboardInterrupt if `stop` (as Ctrl-C would, between two epochs)."""

    def __init__(self, epoch: int, stop: bool):
        super().__init__()
        self.epoch, self.stop, self.weights = epoch, stop, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.current == self.epoch and self.weights is None:
            self.weights = self.model.get_weights()
            if self.stop:
                raise KeyboardInterrupt


def test_weight_averaging_keeps_the_average_it_validated_and_resumes_from_the_raw_weights(
    tmp_path,
):
    """optimizer.ema_momentum: the checkpoint holds the averaged weights that validation scored
    (the loss tells them from the last step's); a run stopped after epoch 1 and resumed goes on
    stepping from the raw weights, not the average its saved state holds in the model's place."""
    data = mnist(partial(holdout, size=256), limit=1024)
    cfg = validate(compose_config([*SMALL, "epochs=3", f"hydra.run.dir={tmp_path}"])[0])
    steps = steps_per_epoch(len(data.x_train), cfg.batch_size)

    def trained(resume: bool, watch: WeightsAt) -> tuple[keras.Model, dict, int]:
        model = softmax_regression()
        optimizer = adam(constant, learning_rate=0.01, ema_momentum=0.9)
        recipe = Training(optimizer, {"checkpoint": checkpoint(tmp_path)}, None, steps)
        run_cfg = dataclasses.replace(cfg, resume="resumed" if resume else None)
        return model, *train(model, data, recipe, run_cfg, tmp_path, [watch])

    stopped = WeightsAt(epoch=1, stop=True)
    with pytest.raises(KeyboardInterrupt):
        trained(resume=False, watch=stopped)
    resumed = WeightsAt(epoch=1, stop=False)
    model, history, best = trained(resume=True, watch=resumed)
    for raw, restarted in zip(stopped.weights, resumed.weights, strict=True):
        np.testing.assert_array_equal(raw, restarted)
    assert len(history["val_loss"]) == 3
    val_loss = model.evaluate(data.x_val, data.y_val, verbose=0, return_dict=True)["loss"]
    assert val_loss == pytest.approx(history["val_loss"][best], rel=1e-5)


def test_weight_averaging_stopped_early_without_a_checkpoint_keeps_the_average(tmp_path):
    """Early stopping ends the run after epoch 2 of 5 (no later epoch can improve by 10): the model
    left is the average that epoch validated, not the raw weights Keras finalises to."""
    data = mnist(partial(holdout, size=256), limit=1024)
    cfg = validate(compose_config([*SMALL, "epochs=5", f"hydra.run.dir={tmp_path}"])[0])
    model = softmax_regression()
    stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=10)
    steps = steps_per_epoch(len(data.x_train), cfg.batch_size)
    recipe = Training(
        adam(constant, learning_rate=0.01, ema_momentum=0.9), {"stop": stopping}, None, steps
    )
    history, last = train(model, data, recipe, cfg, tmp_path)
    assert last == 1
    val_loss = model.evaluate(data.x_val, data.y_val, verbose=0, return_dict=True)["loss"]
    assert val_loss == pytest.approx(history["val_loss"][last], rel=1e-5)


def test_training_batches_cover_each_image_once_per_epoch():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) * np.ones((1, 2, 2, 1), np.float32)
    y = np.arange(10)
    assert steps_per_epoch(10, 4) == 3
    batches = training_batches(x, y, 4, True, 3, lambda images, seed: images, steps=3)
    epochs = [
        np.concatenate([labels.numpy() for _, labels in batches.skip(e * 3).take(3)])
        for e in range(2)
    ]
    assert all(sorted(epoch) == list(range(10)) for epoch in epochs)
    assert list(epochs[0]) != list(epochs[1])  # reshuffled every epoch


@pytest.mark.parametrize(
    ("recipe", "shape"),
    [
        (["schedule=exponential", "augment=light"], "falls"),
        (["schedule=cosine", "augment=strong"], "falls"),
        (["schedule=one_cycle", "optimizer=adam"], "rises then falls"),
        (
            [
                "callbacks=[checkpoint,reduce_lr]",
                "callbacks.reduce_lr.min_delta=10",
                "callbacks.reduce_lr.patience=0",
            ],
            "halves",
        ),
    ],
    ids=["exponential+light", "cosine+strong", "one_cycle", "reduce_lr"],
)
def test_each_recipe_trains_on_real_mnist_and_logs_the_learning_rate(
    recipe, shape, tmp_path, tracking_uri
):
    uri = tracking_uri
    result = run_experiment([*SMALL, *recipe, "epochs=4", f"mlflow.tracking_uri={uri}"])
    assert result.val_accuracy > 0.5
    history = MlflowClient(uri).get_metric_history(result.run_id, "learning_rate")
    lr = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert len(lr) == 4
    if shape == "falls":
        assert all(a > b for a, b in itertools.pairwise(lr))
    elif shape == "rises then falls":
        assert lr[0] < lr[1] and lr[1] > lr[2] > lr[3]
    else:  # the first epoch improves on nothing; every later one is a plateau
        assert lr == pytest.approx([1.0, 1.0, 0.5, 0.25])


def test_reduce_lr_with_a_schedule_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"callbacks\.reduce_lr sets the learning rate"):
        run_experiment(
            [
                *SMALL,
                "schedule=cosine",
                "callbacks=[default,reduce_lr]",
                "epochs=1",
                f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            ]
        )


def learning_rates(uri: str, tmp_path, args: list[str]) -> list[float]:
    """Run `args`, stopped by Ctrl-C in epoch 4 (in this process, as a notebook would), resume it
    to the end; the learning rate of each epoch."""
    with pytest.raises(KeyboardInterrupt):
        run_experiment([*args, *interrupting(epoch=3), f"hydra.run.dir={tmp_path / 'a'}"])
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("mnist_exp").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
    resumed = [*args, *interrupting(epoch=3), f"resume={run.info.run_id}"]
    assert run_experiment([*resumed, f"hydra.run.dir={tmp_path / 'b'}"]).epochs == 6
    history = client.get_metric_history(run.info.run_id, "learning_rate")
    assert [m.step for m in history] == list(range(1, 7))  # epochs 4-6 logged once, by the resume
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def test_resume_continues_the_schedule_where_it_stopped(tmp_path, tracking_uri):
    args = [*SMALL, "schedule=cosine", "epochs=6", "callbacks=checkpoint",
            f"mlflow.tracking_uri={tracking_uri}"]  # fmt: skip
    steps = 1000 // 128 + 1
    expected = rates(cosine(1.0, 6, steps), [steps * epoch for epoch in range(1, 7)])
    assert learning_rates(tracking_uri, tmp_path, args) == pytest.approx(expected, abs=1e-6)


def test_resume_keeps_reduce_on_plateau_counting_where_it_stopped(tmp_path, tracking_uri):
    """With min_delta 10 no epoch after the first improves enough: the rate halves after the
    3rd and the 5th. Had the resumed run forgotten the plateau's memory, epoch 4 would count as
    an improvement again and the 6th epoch would still run at 0.5."""
    args = [*SMALL, "epochs=6", "callbacks=[checkpoint,reduce_lr]",
            "callbacks.reduce_lr.min_delta=10", "callbacks.reduce_lr.patience=2",
            f"mlflow.tracking_uri={tracking_uri}"]  # fmt: skip
    lr = learning_rates(tracking_uri, tmp_path, args)
    assert lr == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.25])


def test_experiment_fast_learns_a_real_subset_and_times_its_phases(tmp_path, tracking_uri):
    """2 of its epochs on 4,000 images; the job's wall time and phases are recorded."""
    uri = tracking_uri
    subset = ["dataset.limit=5000", "split.size=1000", "epochs=2"]
    result = run_experiment(
        ["experiment=fast", *subset, f"paths.root={tmp_path}", f"mlflow.tracking_uri={uri}"]
    )
    assert result.test_accuracy > FAST_SUBSET_ACCURACY, result
    assert set(result.phases) == {
        "start-up",
        "data",
        "build and log the model card",
        "training",
        "evaluation",
        "figures and reports",
        "model logging and registration",
    }
    assert all(seconds > 0 for seconds in result.phases.values())
    metrics = MlflowClient(uri).get_run(result.run_id).data.metrics
    assert metrics["wall_seconds"] >= sum(result.phases.values()) - 1e-6
    assert metrics["wall_seconds"] > metrics["train_seconds"]


@pytest.mark.parametrize("augmented", [False, True])
def test_steps_per_execution_changes_no_step(tmp_path, augmented):
    """Several steps a call into TensorFlow train the same steps as one a call: an epoch runs
    exactly its steps (no call runs into the next epoch), with the same losses."""
    data = mnist(partial(holdout, size=250), limit=1250)
    cfg = validate(compose_config([*SMALL, "epochs=2", "deterministic=true", "batch_size=20"])[0])
    steps = steps_per_epoch(len(data.x_train), cfg.batch_size)
    histories = []
    for per_call in (1, steps_per_execution(steps, None)):
        keras.utils.set_random_seed(1)
        model, optimizer = softmax_regression(), keras.optimizers.Adam()
        recipe = Training(optimizer, {}, affine() if augmented else None, steps, per_call)
        (work_dir := tmp_path / str(per_call)).mkdir()
        history, _ = train(model, data, recipe, cfg, work_dir)
        assert int(optimizer.iterations.numpy()) == 2 * steps
        assert model.steps_per_execution == 1  # predictions after training: a batch a call
        histories.append(history)
    assert 1 < steps_per_execution(steps, None) < steps  # several calls an epoch
    assert histories[0]["loss"] == histories[1]["loss"]
    assert histories[0]["val_accuracy"] == histories[1]["val_accuracy"]


def test_steps_per_execution_that_would_cross_an_epoch_is_one_line():
    assert steps_per_execution(430, None) == 10  # 55,000 images in batches of 128
    with pytest.raises(ConfigError, match=r"steps_per_execution=32 does not divide the 430 .*10"):
        steps_per_execution(430, 32)


def test_a_schedule_with_reduce_lr_is_refused_when_the_config_is_validated():
    with pytest.raises(ConfigError, match=r"callbacks\.reduce_lr sets the learning rate"):
        check_overrides(["schedule=one_cycle", "callbacks=[default,reduce_lr]"])
    check_overrides(["schedule=constant", "callbacks=[default,reduce_lr]"])  # the rate's owner


def test_keras_still_has_the_flag_a_resumed_averaging_run_sets():
    """`train.weight_averaging` tells Keras' SwapEMAWeights, through its private flag, that a
    saved state holds the averaged weights: this fails loudly if Keras renames the flag."""
    assert keras.callbacks.SwapEMAWeights(swap_on_epoch=True)._ema_weights_in_model is False
    assert "_ema_weights_in_model" in inspect.getsource(keras.callbacks.SwapEMAWeights)
    assert weight_averaging(resumed=True)._ema_weights_in_model is True
