"""A record is one measurement as JSON: the command, its figures, the MLflow runs behind them and
the machine it ran on, captured by the command that measured it, never typed in by hand."""

import datetime
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from mnist_exp.errors import MnistExpError
from mnist_exp.machine import description

FOLDER = Path("docs/results")  # in a checkout, the records the docs are rendered from
# runs: MLflow runs' final figures; bench: `make bench` rows; timed: a command's wall time and
# last lines of output (the suite, `make run`); table: a measurement carried over from the docs
# of before records existed, as the table they quoted
KINDS = ("runs", "bench", "timed", "table")
NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
REQUIRED = ("name", "kind", "title", "command", "measured", "machine", "runs", "figures")


def machine(precision: str = "") -> dict[str, str]:
    """This machine as a record describes it, and the precision used."""
    return {**description(), "precision": precision}


def check_name(name: str) -> None:
    """A record's name becomes its file's: a MnistExpError if it would make a poor one."""
    if not NAME.fullmatch(name):
        raise MnistExpError(
            f"Record name {name!r}: use lower-case letters, digits and dashes (e.g. fast-seeds)."
        )


def make_record(
    name: str,
    kind: str,
    title: str,
    command: str,
    figures: dict,
    *,
    runs: Sequence[str] = (),
    on: dict[str, str] | None = None,
    measured: str | None = None,
) -> dict:
    """A record of a measurement made now on this machine, unless `on` (a machine) and `measured`
    (a date) say where and when."""
    check_name(name)
    return {
        "name": name,
        "kind": kind,
        "title": title,
        "command": command,
        "measured": measured or datetime.date.today().isoformat(),
        "machine": on or machine(),
        "runs": list(runs),
        "figures": figures,
    }


def write_record(record: dict, folder: Path = FOLDER) -> Path:
    """Write a record to `folder/<name>.json`, whole or not at all; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record['name']}.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return path


def read_records(folder: Path = FOLDER) -> dict[str, dict]:
    """Every record in `folder`, by name; a MnistExpError naming a file that is not one."""
    records = {}
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise MnistExpError(f"{path} is not a readable record ({error}).") from None
        missing = [key for key in REQUIRED if key not in record] if isinstance(record, dict) else []
        if not isinstance(record, dict) or missing:
            raise MnistExpError(f"{path} is not a record: {', '.join(missing) or 'no object'}.")
        if record["name"] != path.stem or record["kind"] not in KINDS:
            raise MnistExpError(
                f"{path}: a record named {record['name']!r} of kind {record['kind']!r}; its "
                f"file must be <name>.json and its kind one of {', '.join(KINDS)}."
            )
        records[path.stem] = record
    return records
