"""Every config in conf/ composes and builds; mistakes are one line naming the key and the fix."""

import dataclasses
import inspect
import re
import shutil
from typing import Any

import keras
import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from PIL import Image

from mnist_exp.config.build import SUPPLIED, build, target_of
from mnist_exp.config.compose import CONF_DIR as CONF
from mnist_exp.config.compose import check_overrides, compose_config
from mnist_exp.config.describe import describe
from mnist_exp.config.options import group_options
from mnist_exp.config.reference import reference
from mnist_exp.config.schema import Config, flatten, validate
from mnist_exp.errors import ConfigError
from mnist_exp.experiment import build_training, load_data
from mnist_exp.sweeps.space import distribution
from mnist_exp.sweeps.space import override as trial_override
from mnist_exp.tracking.read import config_hash

from .helpers import run_module, write_idx_set

GROUP_OPTIONS = [f"{path.parent.name}={path.stem}" for path in sorted(CONF.glob("*/*.yaml"))]
ARCHITECTURES = sorted(path.stem for path in (CONF / "model").glob("*.yaml"))
OPTIMIZERS = sorted(path.stem for path in (CONF / "optimizer").glob("*.yaml"))
BUILT = (
    "dataset",
    "split",
    "model",
    "optimizer",
    "schedule",
    "callbacks",
    "augment",
)  # by builders


def not_an_option(group: str, option: str) -> str:
    """The one line that refuses `group=option`, naming the group's option files."""
    options = ", ".join(sorted(path.stem for path in (CONF / group).glob("*.yaml")))
    return f"{group}={option} is not an option: choose one of {options}."


def composed(*overrides: str) -> Config:
    return validate(compose_config(overrides)[0])


@pytest.mark.parametrize("option", GROUP_OPTIONS)
def test_every_group_option_composes_and_builds(option, tmp_path, mnist_raw):
    given = []  # what an option needs from its user
    if option == "dataset=idx":
        subset = {key: array[:6_000] for key, array in mnist_raw.items()}
        given = [f"dataset.source_dir={write_idx_set(tmp_path / 'set', subset)}"]
    if option == "dataset=folder":
        pairs = zip(mnist_raw["x_test"][:40], mnist_raw["y_test"][:40], strict=True)
        for n, (image, digit) in enumerate(pairs):
            (tmp_path / "digits" / str(digit)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(255 - image).save(tmp_path / "digits" / str(digit) / f"{n}.png")
        given = [f"dataset.root={tmp_path / 'digits'}", "split.size=0.2", "dataset.test_size=10"]
    cfg, _ = compose_config([option, *given])
    config = validate(cfg)
    if option == "dataset=robustness":  # a set to test on only: refused before it is written
        with pytest.raises(ConfigError, match=r"^dataset=robustness is a set to test on, with no"):
            load_data(config)
    elif option.startswith("dataset="):
        data = load_data(config)
        assert data.input_shape == (28, 28, 1) and data.num_classes == 10 and len(data.x_val)
    model = build("model", config.model, input_shape=(28, 28, 1), num_classes=10)
    recipe = build_training(config, 55_000, tmp_path)  # as a run builds it
    assert recipe.steps_per_epoch == -(-55_000 // config.batch_size)  # the last batch may be short
    assert model(np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 10)
    assert model.count_params() > 10_000
    assert isinstance(recipe.optimizer, keras.optimizers.Optimizer)
    learning_rate = float(keras.ops.convert_to_numpy(recipe.optimizer.learning_rate))
    assert 0 <= learning_rate <= config.optimizer["learning_rate"] * (1 + 1e-6)  # peak or warm-up
    callbacks = list(recipe.callbacks.values())
    assert callbacks and all(isinstance(c, keras.callbacks.Callback) for c in callbacks)
    assert (recipe.transform is None) == (not cfg.augment)
    if cfg.augment:
        images = np.random.default_rng(0).random((4, 28, 28, 1), np.float32)
        moved = build("augment", cfg.augment)(images, np.array([1, 2]))
        assert moved.shape == images.shape and not np.allclose(moved, images)


def built_nodes(option: str) -> list[tuple[str, dict]]:
    """(key, node) of each object an option of a built group configures: the group's node, or
    each entry of a callbacks option; `augment=none` configures none."""
    group = option.split("=")[0]
    node = OmegaConf.to_container(compose_config([option])[0][group])
    nodes = (
        [(f"{group}.{k}", v) for k, v in node.items()] if group == "callbacks" else [(group, node)]
    )
    return [(key, node) for key, node in nodes if "_target_" in node]


def builder_knobs(key: str, target: str) -> dict[str, Any]:
    """{knob: its default, or `inspect.Parameter.empty`} of what a config gives a builder: its
    parameters but those the runner supplies."""
    supplied = SUPPLIED.get(key.split(".")[0], ())
    return {
        name: list(p.default) if isinstance(p.default, tuple) else p.default
        for name, p in inspect.signature(target_of(key, target)).parameters.items()
        if name not in supplied and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


BUILT_OPTIONS = [option for option in GROUP_OPTIONS if option.split("=")[0] in BUILT]


@pytest.mark.parametrize("option", BUILT_OPTIONS)
def test_each_yaml_lists_every_knob_its_builder_takes(option):
    for key, node in built_nodes(option):
        knobs = set(node) - {"_target_"}
        assert knobs == set(builder_knobs(key, node["_target_"])), f"{key}: {node['_target_']}"


def test_each_yaml_holds_its_builders_defaults_but_a_preset_of_a_builder_another_states():
    """A knob's default is the builder's and the YAML's alike: every YAML knob equals it, except in
    a preset (`augment=strong`), whose builder another option of its group states at its defaults
    (`augment=light`). Experiments (conf/experiment/) override on purpose."""
    found = []  # (option, target, {knob: (value, default)} where they differ)
    for option in BUILT_OPTIONS:
        for key, node in built_nodes(option):
            defaults = builder_knobs(key, node["_target_"])
            differ = {
                knob: (value, defaults[knob])
                for knob, value in node.items()
                if knob in defaults and defaults[knob] is not inspect.Parameter.empty
                if value != defaults[knob]
            }
            found.append((option, node["_target_"], differ))
    assert len(found) > 25
    stated = {target for _, target, differ in found if not differ}
    for option, target, differ in found:
        assert not differ or target in stated, f"{option}: {differ} (value, {target}'s default)"
    assert ("augment=strong", "mnist_exp.groups.augment.affine") in {
        (option, target) for option, target, differ in found if differ
    }


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_the_search_space_fits_every_architecture(name):
    """hparams_search=optuna searches the shared knobs plus the architecture's own, and every
    value the sweeper can suggest, written as it writes a trial's override, passes the checks."""
    search = ["hparams_search=optuna", f"model={name}"]
    cfg, hydra = compose_config(search)
    space = OmegaConf.to_container(hydra.sweeper.params)
    assert {"optimizer.learning_rate", "batch_size"} < set(space)
    assert any(key.startswith("model.") for key in space)
    assert set(space) <= set(flatten(OmegaConf.to_container(cfg)))
    for dimension in OverridesParser.create().parse_overrides(
        [f"{k}={v}" for k, v in space.items()]
    ):
        found = distribution(dimension)
        values = getattr(found, "choices", None) or (found.low, found.high)
        for value in values:
            trial = trial_override(dimension.get_key_element(), value)
            validate(compose_config([*search, trial])[0])


def test_a_sweep_is_checked_for_each_architecture_it_names():
    check_overrides(["model=mlp,cnn_bn", "model.dropout=0.1,0.3"])  # a knob both of them have
    with pytest.raises(ConfigError, match=r"^model.dropout is not a config key"):
        check_overrides(["model=mlp,cnn", "model.dropout=0.3"])  # the seed CNN has two rates
    with pytest.raises(ConfigError, match=r"^model.dropout=1.5 is not allowed"):
        check_overrides(["model=mlp,cnn_bn", "model.dropout=0.1,1.5"])  # each value is checked


def test_a_search_over_several_architectures_is_refused():
    with pytest.raises(ConfigError, match="run one search per model="):
        check_overrides(["hparams_search=optuna", "model=mlp,cnn_bn"])


def test_a_run_that_does_not_search_has_no_search_space():
    assert compose_config(["model=cnn_bn"])[1].sweeper.params is None


def test_defaults_reproduce_the_seed_except_adadelta_learning_rate():
    cfg = composed()
    assert (cfg.batch_size, cfg.epochs, cfg.shuffle) == (128, 50, True)
    assert cfg.optimizer == {
        "_target_": "mnist_exp.groups.optimizer.adadelta",
        "learning_rate": 1.0,
        "rho": 0.95,
        "epsilon": 1e-07,
        "ema_momentum": 0.0,  # no weight averaging
    }
    assert set(cfg.callbacks) == {"checkpoint", "early_stopping"}
    checkpoint, stopping = cfg.callbacks["checkpoint"], cfg.callbacks["early_stopping"]
    assert (checkpoint["monitor"], checkpoint["mode"]) == ("val_accuracy", "max")
    assert (stopping["monitor"], stopping["patience"]) == ("val_loss", 5)
    assert cfg.schedule == {"_target_": "mnist_exp.groups.schedule.constant"} and not cfg.augment
    assert cfg.split == {"_target_": "mnist_exp.groups.split.holdout", "size": 5000}


def test_experiment_seed_uses_tensorflow_default_adadelta_rate():
    assert composed("experiment=seed").optimizer["learning_rate"] == 0.001


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("batch_size=-8", "batch_size=-8"),
        ("epochs=0", "epochs=0"),
        ("model.dropout_conv=1.0", "model.dropout_conv=1.0"),
        ("model.dropout_dense=1.5", "model.dropout_dense=1.5"),
        ("optimizer.learning_rate=0", "optimizer.learning_rate=0 is not allowed"),
        ("split.size=-5", "split.size=-5"),
        ("split=kfold split.k=1", "split.k=1"),
        ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience=-1"),
        ("callbacks.early_stopping.monitor=val_los", "callbacks.early_stopping.monitor='val_los'"),
    ],
)
def test_schema_rejects_out_of_range_values(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        composed(*override.split())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("batch_size=abc", "batch_size=abc is not allowed: Value 'abc' of type 'str'"),
        ("bach_size=64", "bach_size is not a config key; did you mean batch_size?"),
        ("optimizer.beta_1=0.5", "optimizer.beta_1 is not a config key"),
        ("optimizer=adamm", "optimizer=adamm is not an option: choose one of adadelta, adam,"),
        ("model=resnet", not_an_option("model", "resnet")),
    ],
)
def test_wrong_types_unknown_keys_and_options_fail_at_compose_time(override, message):
    with pytest.raises(ConfigError) as error:
        compose_config([override])
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("optimizer=adam optimizer.lr=0.1", "did you mean optimizer.learning_rate?"),
        ("optimizer=adam optimizer.beta1=0.5", "did you mean optimizer.beta_1?"),  # not adadelta's
        ("optimizer=sgd optimizer.momentun=0.5", "did you mean optimizer.momentum?"),
        ("experiment=fast model.filter=[8,16]", "did you mean model.filters?"),  # narrow_cnn's
    ],
)
def test_a_misspelt_key_is_matched_against_the_users_own_composition(overrides, message):
    with pytest.raises(ConfigError) as error:
        compose_config(overrides.split())
    assert str(error.value).endswith(message)


CLI_MISTAKES = [
    ("batch_size=abc", "batch_size=abc is not allowed: Value 'abc' of type 'str' could not be"),
    ("batch_size=0", "batch_size=0 is not allowed: use >= 1."),
    ("epochs=-1", "epochs=-1 is not allowed: use >= 1."),
    (
        "model.dropout_conv=1.5",
        "model.dropout_conv=1.5 is not allowed: input should be less than 1 "
        "(mnist_exp.groups.model.cnn)",
    ),
    (
        "model=cnn_bn model.dropout=1.5",
        "model.dropout=1.5 is not allowed: input should be less than 1 "
        "(mnist_exp.groups.model.cnn_bn).",
    ),
    ("model=cnn_bn model.downsample=max", "model.downsample='max' is not allowed: input should be"),
    ("model=mlp model.units=[512,0]", "model.units.1=0 is not allowed: input should be greater"),
    ("model=lenet5 model.c5_units=1.5", "model.c5_units=1.5 is not allowed: input should be a"),
    ("model=resnet", not_an_option("model", "resnet")),
    ("-m optimizer=adam,adamm", "optimizer=adamm is not an option: choose one of adadelta,"),
    ("-m model=mlp,cnn optimizer.learning_rate=0", "optimizer.learning_rate=0 is not allowed"),
    ("mlflow.registered_model='{arch}'", "mlflow.registered_model='{arch}' is not allowed: use"),
    ("mlflow.registered_model='mnist}'", "mlflow.registered_model='mnist}' is not allowed: use"),
    (
        "model._target_=mnist_exp.groups.model.nope",
        "model._target_=mnist_exp.groups.model.nope cannot be imported: "
        "module mnist_exp.groups.model has no",
    ),
    (
        "optimizer.learning_rate=0",
        "optimizer.learning_rate=0 is not allowed: input should be greater",
    ),
    (
        "optimizer=sgd optimizer.momentum=-1",
        "optimizer.momentum=-1 is not allowed: input should be",
    ),
    (
        "+optimizer.beta_1=0.5",
        "optimizer.beta_1 is not an argument of mnist_exp.groups.optimizer.a",
    ),
    ("split.size=1.5", "split.size=1.5 is not allowed: use a number of images (>= 1) or a fra"),
    ("split=kfold split.fold=-1", "split.fold=-1 is not allowed: input should be greater than"),
    ("split=stratified split.k=5", "split.k is not a config key; did you mean split.size?"),
    ("split=random", not_an_option("split", "random")),
    ("dataset.limit=0", "dataset.limit=0 is not allowed: input should be greater than or equal"),
    ("dataset=idx", "dataset.source_dir is missing: set it (dataset.source_dir=...)."),
    ("dataset=idx dataset.source_dir=/no/such", "dataset.source_dir='/no/such' is not allowed: no"),
    ("dataset=idx dataset.source_dir=/ dataset.classes=[a,a]", "classes=['a', 'a'] is not all"),
    ("dataset=idx dataset.source_dir=/ dataset.name=my/set", "dataset.name='my/set' is not all"),
    ("dataset=fashion", not_an_option("dataset", "fashion")),
    ("dataset=folder", "dataset.root is missing: set it (dataset.root=...)."),
    ("dataset=folder dataset.root=/no/such", "dataset.root='/no/such' is not allowed: use a dir"),
    ("dataset=folder dataset.root=/ dataset.test_size=0", "dataset.test_size=0 is not allowed"),
    ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience=-1 is not allowed"),
    ("optimizer=adamm", not_an_option("optimizer", "adamm")),
    ("bach_size=64", "bach_size is not a config key; did you mean batch_size?"),
    ("callbacks.early_stopping.monitor=val_los", "monitor='val_los' is not allowed: the model com"),
    ("callbacks.checkpoint.monitor=test_accuracy", "monitor='test_accuracy' is not allowed: the"),
    ("callbacks=[default,reduce_lr] callbacks.reduce_lr.factor=2", "reduce_lr.factor=2 is not all"),
    ("callbacks=earlystop", "callbacks=earlystop is not an option: choose one of checkpoint,"),
    ("-m hparams_search=optuna hydra.sweeper.pruner=mediann", "hydra.sweeper.pruner=mediann is"),
    ("schedule=cosine schedule.final_fraction=2", "schedule.final_fraction=2 is not allowed"),
    ("schedule=linear", "schedule=linear is not an option: choose one of constant, cosine,"),
    ("augment=light augment.rotation=200", "augment.rotation=200 is not allowed: input should"),
    ("augment=medium", not_an_option("augment", "medium")),
    ("callbacks.checkpoint.mode=best", "callbacks.checkpoint.mode='best' is not allowed"),
    ("dataset.source_dir=/no/such/dir", "dataset.source_dir='/no/such/dir' is not allowed"),
    ("model.kernel_size=20", "model.kernel_size=20 is not allowed: input should be less than or"),
    ("model.dense_units=0", "model.dense_units=0 is not allowed: input should be greater than"),
    ("shuffle=maybe", "shuffle=maybe is not allowed: Value 'maybe' is not a valid bool"),
    ("seed=-1", "seed=-1 is not allowed: use >= 0."),
    ("experiment=sead", not_an_option("experiment", "sead")),
]


@pytest.mark.parametrize(("override", "message"), CLI_MISTAKES)
def test_a_config_mistake_is_caught_before_anything_runs_naming_the_key(override, message):
    """What the CLI checks before Hydra starts (`check_overrides`), in-process."""
    with pytest.raises(ConfigError) as error:
        check_overrides([a for a in override.split() if a != "-m"])
    assert message in str(error.value) and "\n" not in str(error.value)


# The CLI's own answer to a mistake, for one case of each kind: a value, a key, an option of a
# swept group, a builder's knob, and a directory that Hydra's callback finds unwritable.
CLI_CASES = [
    CLI_MISTAKES[1],
    ("bach_size=64", "bach_size is not a config key; did you mean batch_size?"),
    ("-m optimizer=adam,adamm", "optimizer=adamm is not an option: choose one of adadelta,"),
    CLI_MISTAKES[4],
    ("hydra.run.dir=/etc/hostname/out", "hydra.run.dir=/etc/hostname/out cannot be written"),
]


@pytest.mark.parametrize(("override", "message"), CLI_CASES)
def test_cli_config_mistake_exits_2_with_a_clear_message_and_no_run(override, message, tmp_path):
    store = tmp_path / "mlflow.db"
    done = run_module(
        "mnist_exp.run",
        *override.split(),
        timeout=60,
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"},
    )
    assert done.returncode == 2, done.stderr
    assert f"error: {message}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) <= 2
    assert not store.exists()  # nothing was tracked, nothing heavy started


def test_a_config_naming_a_builder_by_its_old_path_is_told_the_new_one():
    expected = "model._target_=mnist_exp.models.cnn has moved: use mnist_exp.groups.model.cnn."
    with pytest.raises(ConfigError) as error:
        check_overrides(["model._target_=mnist_exp.models.cnn"])
    assert str(error.value) == expected


def test_a_bad_knob_of_a_built_in_architecture_fails_before_tensorflow_is_imported():
    done = run_module("mnist_exp.run", "model=cnn_bn", "model.dropout=1.5", timeout=60,
                      env={"PYTHONPROFILEIMPORTTIME": "1"})  # fmt: skip
    assert done.returncode == 2
    assert "error: model.dropout=1.5 is not allowed" in done.stderr
    imported = re.findall(r"^import time:.*\|\s+([\w.]+)$", done.stderr, re.MULTILINE)
    assert "hydra" in imported  # the import log works
    assert "tensorflow" not in imported and "keras" not in imported


def test_cfg_job_shows_every_knob_of_the_architecture_with_its_comment():
    done = run_module("mnist_exp.run", "--cfg", "job", "model=cnn_bn", timeout=60)
    assert done.returncode == 0, done.stderr
    shown = OmegaConf.create(done.stdout)
    assert shown == compose_config(["model=cnn_bn"])[0]
    knobs = re.findall(r"^(\w+): .*?  # (.*)$", (CONF / "model" / "cnn_bn.yaml").read_text(), re.M)
    assert len(knobs) == len(shown.model) > 5
    for key, comment in knobs:
        assert re.search(rf"^  {key}:.*  # {re.escape(comment)}$", done.stdout, re.M), key
    assert "# seeds Python, NumPy and TensorFlow" in done.stdout  # run knobs keep theirs too


def test_help_lists_every_option_a_user_picks_and_nothing_internal():
    """`--help`'s group lines (`group=a | b | c`) name exactly the option files of each group."""
    template = compose_config([])[1].help.template
    listed = {
        group: {option.strip() for option in options.split("(")[0].split("|")}
        for group, options in re.findall(r"^  ([\w/]+)=(.+)$", template, re.M)
        if not group.startswith("hydra/")
    }
    groups = {path.name for path in CONF.iterdir() if path.is_dir() and path.name != "hydra"}
    assert set(listed) == groups
    for group, options in listed.items():
        assert options == {p.stem for p in (CONF / group).glob("*.yaml")}, group
    assert "schema" not in template and "space" not in template


def test_help_lists_each_groups_default_first_and_a_new_option_file_without_other_edits(tmp_path):
    template = compose_config([])[1].help.template
    listed = dict(re.findall(r"^  (\w+)=([\w |]+?)(?:   \(|$)", template, re.M))
    choices = compose_config([])[1].runtime.choices
    defaults = {group: option for group, option in choices.items() if group in listed and option}
    assert set(defaults) == set(BUILT)
    for group, option in defaults.items():
        assert listed[group].split(" | ")[0] == option, group
    conf = shutil.copytree(CONF, tmp_path / "conf")
    (conf / "optimizer" / "adamw.yaml").write_text("_target_: my.adamw\n")
    assert group_options(conf, "optimizer") == ["adadelta", "adam", "adamw", "rmsprop", "sgd"]


@pytest.mark.parametrize("option", OPTIMIZERS)
def test_cfg_job_shows_every_optimizer_knob_with_its_comment_the_shared_one_too(option):
    shown = describe([f"optimizer={option}"])
    knobs = compose_config([f"optimizer={option}"])[0].optimizer
    assert "ema_momentum" in knobs
    for key in knobs:
        assert re.search(rf"^  {key}: .*  # \S", shown, re.M), key
    assert "0.999: the last ~1,000 steps" in shown


def test_the_config_reference_lists_the_shared_knob_under_every_optimizer():
    sections = reference().split("### `optimizer=")[1:]
    assert len(sections) == len(OPTIMIZERS)
    for section in sections:
        assert "| `optimizer.ema_momentum` | `0.0` | average the weights" in section
        assert "averaging" not in section.split("| knob |")[0]  # not as a defaults list entry


@pytest.mark.parametrize("key", ["mlflow.tracking_uri", "hydra.sweeper.storage"])
def test_a_url_with_a_password_is_refused_without_repeating_it(key):
    with pytest.raises(ConfigError) as error:
        check_overrides([f"{key}=postgresql://me:s3cret@db:5432/runs"])
    message = str(error.value)
    assert message.startswith(f"{key} holds a password") and "s3cret" not in message
    assert "~/.pgpass" in message and "give postgresql://me@db:5432/runs." in message


def test_new_augmentation_knobs_at_zero_keep_a_config_identity_and_change_it_otherwise():
    """skip_finished finds runs from before the shear, stroke and blur knobs as their twins."""
    cfg, _ = compose_config(["augment=light"])
    older = OmegaConf.to_container(cfg, resolve=True)
    del older["augment"]["shear"], older["augment"]["stroke"], older["augment"]["blur"]
    config = validate(cfg)
    assert config_hash(config) == config_hash(dataclasses.replace(config, augment=older["augment"]))
    bolder, _ = compose_config(["augment=light", "augment.stroke=0.5"])
    assert config_hash(validate(bolder)) != config_hash(config)


def test_the_runner_passes_each_group_exactly_what_supplied_promises(tmp_path):
    """`SUPPLIED` is held to the runner: every build of a run passes exactly those arguments,
    and `build` refuses a runner that passes one more or one less."""
    from mnist_exp.config.build import SUPPLIED

    config = validate(compose_config(["callbacks=[default,early_stopping]"])[0])
    build_training(config, 1_000, tmp_path)  # optimizer, schedule, callbacks, augment: no assert
    shape = {"input_shape": (28, 28, 1), "num_classes": 10}
    assert set(SUPPLIED["model"]) == set(shape)
    with pytest.raises(AssertionError, match="the runner must pass"):
        build("model", config.model, **shape, work_dir=tmp_path)
    with pytest.raises(AssertionError, match="the runner must pass"):
        build("model", config.model, input_shape=(28, 28, 1))
