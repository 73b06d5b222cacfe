"""The two records of a run: what Hydra asked of it (Job) and what it gave back (Result)."""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Job:
    """What Hydra knows of one run: where it writes, how it was asked for, which sweep it is in."""

    output_dir: Path
    overrides: tuple[str, ...]
    choices: dict[str, str]  # config group -> option, e.g. {"model": "cnn_bn"}
    sweep_dir: str | None = None  # set for a job of a multirun
    number: int = 0  # the job's number in its sweep


@dataclass(frozen=True)
class Result:
    """A finished run: its MLflow run id and its best checkpoint's figures."""

    run_id: str
    val_accuracy: float
    test_accuracy: float
    epochs: int  # epochs trained
    seconds: float  # training time
    wall_seconds: float | None  # from the job's start to the end of its logging
    output_dir: Path | None  # None: a reused run that did not record it
    reused: bool = False  # an identical FINISHED run was reused (skip_finished=true)
    phases: dict[str, float] = field(default_factory=dict)  # seconds of each phase of the run
