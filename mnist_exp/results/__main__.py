"""`python -m mnist_exp.results`: write a record of MLflow runs or of a timed command, or render
the docs' figures from the records (`make results`).

  record NAME RUN... --title T   runs (a sweep's parent: its finished jobs) as a record
  time NAME --title T -- CMD...  a command run; its wall time and last lines as a record
  render [--check]               README.md and docs/**/*.md rendered from the records

Records are docs/results/NAME.json (--folder to change).
"""

import argparse
import collections
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from mnist_exp.errors import MnistExpError, exit_with
from mnist_exp.results.records import FOLDER, make_record, read_records, write_record
from mnist_exp.results.render import render_pages

# pytest's last line: "=== 514 passed, 2 warnings in 869.12s (0:14:29) ==="
PASSED = re.compile(r"(\d+) passed")


def record_runs(name: str, ids: list[str], title: str, command: str | None, folder: Path) -> Path:
    """The runs as a record, with the machine and precision they ran on and the day they began."""
    from mnist_exp.config.schema import MlflowConfig
    from mnist_exp.tracking.recorded import recorded_runs
    from mnist_exp.tracking.store import open_store

    runs, ran = recorded_runs(ids, open_store(MlflowConfig()))
    if not runs:
        raise MnistExpError(f"{' '.join(ids)}: no finished run to record.")
    if (command := command or ran) is None:
        raise MnistExpError("These runs come from several commands: give the one with --command.")
    machines = {tuple(sorted(run.pop("machine").items())) for run in runs}
    if len(machines) > 1 or not next(iter(machines)):
        raise MnistExpError(
            "These runs ran on several machines, or before runs recorded theirs (machine.* tags):"
            " record runs of one machine, made since."
        )
    precision = ", ".join(sorted({run["precision"] for run in runs}))
    record = make_record(
        name,
        "runs",
        title,
        command,
        {"runs": runs},
        on={**dict(next(iter(machines))), "precision": precision},
        measured=min(run["started"] for run in runs)[:10],
    )
    return write_record(record, folder)


def time_command(name: str, argv: list[str], title: str, keep: int, folder: Path) -> Path:
    """Run `argv`, showing its output as it comes; if it succeeds, its wall time, pytest's count
    of passed tests (if it ran pytest) and its last `keep` lines as a record."""
    start, last = time.perf_counter(), collections.deque(maxlen=max(keep, 50))
    passed = None
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as run:
        for line in run.stdout:
            sys.stdout.write(line)
            last.append(line.rstrip("\n"))
            if found := PASSED.search(line):
                passed = int(found[1])
    seconds = time.perf_counter() - start
    if run.returncode:
        raise MnistExpError(f"{' '.join(argv)} exited with {run.returncode}: nothing recorded.")
    figures = {"seconds": round(seconds, 1), "output": list(last)[-keep:] if keep else []}
    if passed is not None:
        figures["passed"] = passed
    return write_record(make_record(name, "timed", title, shlex.join(argv), figures), folder)


def render(root: Path, folder: Path, check: bool) -> list[Path]:
    """Render every page with blocks; the pages that changed (with --check: that would change)."""
    changed = []
    for path, text in render_pages(root, read_records(folder)).items():
        if path.read_text() != text:
            changed.append(path)
            if not check:
                path.write_text(text)
    return changed


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    found = argparse.ArgumentParser(
        prog="python -m mnist_exp.results",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    found.add_argument("--folder", type=Path, default=FOLDER, help="the records' folder")
    actions = found.add_subparsers(dest="action", required=True)
    record = actions.add_parser("record", help="MLflow runs (a sweep's parent: its jobs)")
    record.add_argument("name", help="the record's name: docs/results/NAME.json")
    record.add_argument("runs", nargs="+", metavar="RUN", help="run ids, or a sweep's parent id")
    record.add_argument("--title", required=True, help="what was measured, in a few words")
    record.add_argument("--command", help="the command that made the runs (default: theirs)")
    timed = actions.add_parser("time", help="a command's wall time and last lines of output")
    timed.add_argument("name", help="the record's name: docs/results/NAME.json")
    timed.add_argument("--title", required=True, help="what was measured, in a few words")
    timed.add_argument("--keep", type=int, default=0, help="last lines of output to keep")
    rendering = actions.add_parser("render", help="the docs' figures from the records")
    rendering.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    return found


def main(argv: list[str] | None = None) -> None:
    arguments = parser()
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)  # what follows is the timed command
    args, command = arguments.parse_args(argv[:split]), argv[split + 1 :]
    try:
        if args.action == "record":
            path = record_runs(args.name, args.runs, args.title, args.command, args.folder)
        elif args.action == "time":
            if not command:
                arguments.error("time: give the command after --: time NAME --title T -- CMD ...")
            path = time_command(args.name, command, args.title, args.keep, args.folder)
        else:
            changed = render(Path.cwd(), args.folder, args.check)
            for page in changed:
                print(f"{'stale' if args.check else 'rendered'}: {page.relative_to(Path.cwd())}")
            if args.check and changed:
                raise SystemExit("The docs differ from their records: run `make results`.")
            return
    except MnistExpError as error:
        exit_with(error)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
