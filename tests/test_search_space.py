"""Each Hydra sweep form becomes the Optuna distribution of the values Hydra itself would sweep."""

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from mnist_exp.sweeps.search import storage
from mnist_exp.sweeps.space import distribution, override, study_name
from mnist_exp.sweeps.sweeper import OptunaSweeper, counted

FLOAT_RANGES = ["range(0.1,0.5,0.1)", "range(0,1,0.25)", "range(0,0.9,0.3)", "range(1.5,2.5)"]


def parse(line: str):
    return OverridesParser.create().parse_overrides([line])[0]


def grid(found: IntDistribution | FloatDistribution) -> list:
    """Every value a stepped distribution allows, lowest first."""
    steps = round((found.high - found.low) / found.step)
    return [found.low + k * found.step for k in range(steps + 1)]


def sampled(found, trials: int = 200) -> set:
    """The values Optuna's random sampler suggests from the distribution."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return {study.ask({"x": found}).params["x"] for _ in range(trials)}


@pytest.mark.parametrize(
    ("line", "choices"),
    [
        ("x=choice(adam,sgd)", ("adam", "sgd")),
        ("x=relu,gelu", ("relu", "gelu")),
        ("x=choice(32,64,128)", (32, 64, 128)),
        ("x=choice(0.1,0.25)", (0.1, 0.25)),
    ],
)
def test_a_choice_is_categorical(line, choices):
    found = distribution(parse(line))
    assert isinstance(found, CategoricalDistribution)
    assert found.choices == choices


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("x=range(1,10,2)", range(1, 10, 2)),
        ("x=range(0,10,5)", range(0, 10, 5)),
        ("x=range(1,4)", range(1, 4)),
        ("x=range(4)", range(4)),
        ("x=shuffle(range(2,8,3))", range(2, 8, 3)),
    ],
)
@pytest.mark.filterwarnings("error")  # Optuna warns when it has to move high onto the step grid
def test_an_int_range_excludes_stop_like_python(line, expected):
    found = distribution(parse(line))
    assert isinstance(found, IntDistribution)
    assert (found.low, found.high, found.step) == (expected[0], expected[-1], expected.step)
    assert grid(found) == list(expected)
    assert sampled(found) == set(expected)


@pytest.mark.parametrize("sweep", FLOAT_RANGES)
@pytest.mark.filterwarnings("error")
def test_a_float_range_allows_exactly_what_hydra_sweeps(sweep):
    line = f"x={sweep}"
    hydra_values = list(parse(line).sweep_iterator())
    found = distribution(parse(line))
    assert isinstance(found, FloatDistribution) and not found.log
    assert grid(found) == pytest.approx(hydra_values, abs=1e-9)
    assert sorted(sampled(found)) == pytest.approx(hydra_values, abs=1e-9)


def test_a_float_range_ends_on_a_decimal_value():
    found = distribution(parse("x=range(0.1,0.5,0.1)"))
    assert (found.low, found.high, found.step) == (0.1, 0.4, 0.1)


def test_every_float_range_value_written_as_an_override_parses_back():
    found = distribution(parse("lr=range(0.1,0.5,0.1)"))
    for value in grid(found):
        line = override("lr", value)
        assert line == f"lr={round(value, 9):g}"
        again = parse(line)
        assert again.get_key_element() == "lr" and not again.is_sweep_override()
        assert again.value() == pytest.approx(value, abs=1e-9)


@pytest.mark.parametrize(
    ("line", "kind", "bounds", "log"),
    [
        ("x=interval(0.1,0.5)", FloatDistribution, (0.1, 0.5), False),
        ("x=interval(1,10)", FloatDistribution, (1.0, 10.0), False),  # Hydra makes them floats
        ("x=int(interval(16,256))", IntDistribution, (16, 256), False),
        ("x=tag(log,interval(1e-4,1e-1))", FloatDistribution, (1e-4, 1e-1), True),
        ("x=tag(log,int(interval(16,256)))", IntDistribution, (16, 256), True),
    ],
)
def test_an_interval_is_uniform_or_log_uniform(line, kind, bounds, log):
    found = distribution(parse(line))
    assert type(found) is kind
    assert (found.low, found.high, found.log) == (*bounds, log)
    assert all(type(v) is type(bounds[0]) for v in (found.low, found.high))


@pytest.mark.parametrize("sweep", ["range(5,1)", "range(3,3)", "range(10,1,-2)", "range(1.0,0.5)"])
def test_a_range_without_increasing_values_is_one_clear_line(sweep):
    with pytest.raises(ValueError, match=r"^x=.*: .*start < stop and step > 0[^\n]*$"):
        distribution(parse(f"x={sweep}"))


@pytest.mark.parametrize("line", ["x=3", "x=adam", "x=glob(a*)"])
def test_a_value_that_is_not_a_search_dimension_is_refused(line):
    with pytest.raises(ValueError, match=r"use choice\(\.\.\.\), range\(\.\.\.\) or interval"):
        distribution(parse(line))


def test_a_worker_that_asks_for_one_trial_too_many_does_not_run_it(tmp_path):
    """Two workers share a study through its storage. If the other worker takes the study's last
    trial between this one's count and its ask, this one's trial is marked surplus, not run and
    not counted, so the study still ends with n_trials."""
    journal = str(tmp_path / "study.journal")
    space = {"x": distribution(parse("x=interval(0,1)"))}
    this, other = (
        optuna.create_study(study_name="s", storage=storage(journal), load_if_exists=True)
        for _ in range(2)
    )
    asked = this.ask

    def ask_after_the_other_worker():
        other.ask()  # the other worker's trial: the study's only one
        return asked()

    this.ask = ask_after_the_other_worker
    sweeper = OptunaSweeper(1, 1, 0, None, journal, "none", 10, {})
    sweeper.trials, sweeper.store = storage(journal), None  # as its sweep sets them up
    assert sweeper.ask(this, space) is None
    trials = other.get_trials()
    assert [t.state.name for t in trials] == ["RUNNING", "FAIL"]
    assert trials[1].user_attrs["not_counted"] == "surplus"
    assert [counted(t) for t in trials] == [True, False]


def test_a_search_keeps_its_study_name_however_its_command_is_spelled():
    """The default study name digests the parsed search, so a rerun finds its study."""
    space = {"x": distribution(parse("x=choice(32,64)"))}
    name = study_name("cnn", space, ["epochs=3", "mlflow.tracking_uri=a"], "none")
    spelled = {"x": distribution(parse("x=choice(32, 64)"))}
    assert study_name("cnn", spelled, ["model=cnn", "epochs=3"], "none") == name
    assert study_name("cnn", space, ["epochs=4"], "none") != name
    assert study_name("cnn", space, ["epochs=3"], "median") != name
    assert study_name("mlp", space, ["epochs=3"], "none").startswith("mlp-")


def test_a_journal_cut_mid_record_then_appended_to_is_repaired_from_its_intact_records(
    tmp_path, capsys
):
    """As after a crash or a full disk mid-write: the next worker's record is glued onto the cut
    one, and Optuna can no longer read the file; the study goes on from the records before it."""
    path = tmp_path / "study.journal"
    study = optuna.create_study(study_name="s", storage=storage(str(path)), direction="maximize")
    for value in (0.1, 0.2, 0.3):
        study.tell(study.ask(), value)
    *records, _ = path.read_bytes().split(b"\n")
    cut = len(records) - 3  # a record cut short, then two more appended
    damaged = [*records[:cut], records[cut][:25] + records[cut + 1], records[cut + 2]]
    path.write_bytes(b"".join(record + b"\n" for record in damaged))
    with pytest.raises(ValueError):  # what a search died of
        optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))

    repaired = optuna.load_study(study_name="s", storage=storage(str(path)))
    message = capsys.readouterr().err
    assert f"Study journal {path}: record {cut + 1} of {len(damaged)} is damaged" in message
    assert f"goes on from the {cut} records before it" in message
    assert (tmp_path / "study.journal.damaged").read_bytes().split(b"\n")[cut] == damaged[cut]
    intact = tmp_path / "intact.journal"  # what the records before the damage say
    intact.write_bytes(b"".join(record + b"\n" for record in records[:cut]))
    expected = optuna.load_study(study_name="s", storage=storage(str(intact)))
    assert [(t.state, t.value) for t in repaired.trials] == [
        (t.state, t.value) for t in expected.trials
    ]
    assert sum(t.value is not None for t in repaired.trials) >= 1
    repaired.tell(repaired.ask(), 0.4)  # and it takes new trials
    assert len(optuna.load_study(study_name="s", storage=storage(str(path))).trials) >= 3
