"""What an Optuna search shares between its sweeper and its jobs: where the study is stored, the
pruners, and how a job, in whatever process a launcher starts it, finds its trial."""

import json
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Optuna (0.2 s) only once a search runs
    import optuna

# Set for each job by the sweeper (as `hydra.job.env_set`, so every launcher passes them on).
ENV = {
    "storage": "MNIST_EXP_OPTUNA_STORAGE",
    "study": "MNIST_EXP_OPTUNA_STUDY",
    "trial": "MNIST_EXP_OPTUNA_TRIAL",  # the trial's id in the storage
    "pruner": "MNIST_EXP_OPTUNA_PRUNER",
}
PRUNERS = ("none", "median", "hyperband")
# Default journal files, one per study (<study name>.journal), under `paths.root`.
STUDIES_DIR = Path("outputs/optuna")
PRUNED_AT = "pruned_at_epoch"  # the trial's user attribute a job sets when its pruner stops it


def storage(url: str, heartbeat: int | None = None) -> "optuna.storages.BaseStorage":
    """An RDB (postgresql://, mysql://, sqlite:///), with `heartbeat` seconds between the
    heartbeats of its running trials if given (silent for 3 of them: lost); anything else is
    the path of a journal file, which Optuna locks so that several processes can share it."""
    import optuna

    if "://" in url:
        from mnist_exp.tracking.store import store_lock

        # Workers that meet a new database together would race to create Optuna's tables.
        with warnings.catch_warnings(), store_lock(url):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat,
                grace_period=heartbeat and 3 * heartbeat,
            )
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    lock = optuna.storages.journal.JournalFileSymlinkLock(url)  # the lock Optuna's writers take
    lock.acquire()
    try:
        repair_journal(Path(url))
    finally:
        lock.release()
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url, lock))


def beats(storage: "optuna.storages.BaseStorage") -> bool:
    """Whether the storage keeps trials' heartbeats (an RDB given `heartbeat`, or the cache over
    it that a study holds): its `get_heartbeat_interval` says how often."""
    interval = getattr(storage, "get_heartbeat_interval", None)
    return interval is not None and interval() is not None


def stale_trial_numbers(study: "optuna.Study", storage: "optuna.storages.BaseStorage") -> set[int]:
    """The numbers of the running trials whose heartbeat has been silent for longer than the
    storage allows (`beats`). Optuna has no public lookup of them: `fail_stale_trials` fails them,
    where the sweeper requeues them and counts them apart. So its private one is used here, the
    only use of Optuna's privates; tests/test_search.py fails when Optuna changes it."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return {storage.get_trial_number_from_id(i) for i in storage._get_stale_trial_ids(study_id)}


def trial_id(study: "optuna.Study", storage: "optuna.storages.BaseStorage", trial) -> int:
    """A trial's id in the storage (what heartbeats, attributes and a job's trial go by)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)


@contextmanager
def heartbeats(storage: "optuna.storages.BaseStorage", trial_ids: Sequence[int]) -> Iterator[None]:
    """Record the trials' heartbeats from a thread while in the block (where the storage keeps
    them): the time is the database's, so the hosts' clocks need not agree. Optuna beats only
    inside `study.optimize`; a sweeper asks and tells, so it beats for itself."""
    if not beats(storage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in trial_ids:
                with suppress(Exception):  # a database away for a moment: the next beat counts
                    storage.record_heartbeat(trial_id)
            if stop.wait(storage.get_heartbeat_interval()):
                return

    thread = threading.Thread(target=beat, name="optuna heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def repair_journal(path: Path) -> None:
    """A journal with a record cut short (a crash, a full disk mid-write), then appended to, no
    longer loads: keep the intact records before it (the study goes on from them; trials recorded
    later run again), keep the damaged file beside it, and say so."""
    if not path.is_file():
        return
    *records, tail = path.read_bytes().split(b"\n")  # `tail`: what follows the last newline
    intact = 0
    for record in records:
        try:
            json.loads(record)
        except ValueError:
            break
        intact += 1
    if intact == len(records) and not tail:
        return
    damaged = path.with_name(f"{path.name}.damaged")
    shutil.copy2(path, damaged)
    kept = path.with_name(f".{path.name}.repaired")
    kept.write_bytes(b"".join(record + b"\n" for record in records[:intact]))
    os.replace(kept, path)
    print(
        f"Study journal {path}: record {intact + 1} of {len(records) + bool(tail)} is damaged (cut "
        f"short by a crash or a full disk); the study goes on from the {intact} records before "
        f"it. The damaged file is kept as {damaged}.",
        file=sys.stderr,
    )


def pruner(name: str, epochs: int) -> "optuna.pruners.BasePruner":
    """`median`: stop a trial whose validation accuracy after an epoch is below the median of
    earlier trials' at that epoch (after 3 trials); `hyperband`: successive halving over 1..epochs
    epochs; `none`: never stop."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()
