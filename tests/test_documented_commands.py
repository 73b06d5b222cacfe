"""Every command the docs show works as typed: each `python -m mnist_exp...` and `make ...` line of
the README's and the docs' code blocks, of the YAML comments of conf/ and of `--help`'s examples,
split into words by bash itself, goes through the check that command makes before it starts:
a run through the CLI's pre-flight (every combination of a sweep), any other command through its
own argument parser, a `make` line against the Makefile's targets and variables.

Placeholders stand for what the reader supplies, by one rule: `<anything>`, RUN, RUN_A and RUN_B
are a run id; DIR a folder of labelled digits; MODEL a registered model; NAME a record's name; a
lone `...` (the rest as before) is dropped. The reader's home (`~`, `$HOME`) holds what the docs
name there: my_digits/ (labelled digits, as DIR) and data/fashion/ (an MNIST-format set)."""

import contextlib
import importlib
import io
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_exp.config.compose import check_overrides, compose_config
from mnist_exp.errors import MnistExpError

from .helpers import ROOT, write_idx_set

RUN_ID = "0123456789abcdef0123456789abcdef"
PLACEHOLDERS = {
    r"<[^<>\n]+>": RUN_ID,
    r"\bRUN(_[AB])?\b": RUN_ID,
    r"\bDIR\b": "~/my_digits",
    r"\bMODEL\b": "models:/mnist-cnn@champion",
    r"\bNAME\b": "fast",
    r"(?<=\s)\.\.\.(?=\s|$)": "",
}
COMMAND = re.compile(r"(?:python -m mnist_exp[\w.]*|make [a-z])")
SHELLS = ("", "bash", "sh", "shell", "console")  # code blocks whose lines are typed commands
HYDRA_FLAGS = {"-m", "--multirun", "--help", "--hydra-help", "--info", "--resolve"}


def code_block_lines(path: Path) -> list[tuple[int, str]]:
    """The command lines of a Markdown page's shell code blocks, `\\` continuations joined."""
    found, language, pending = [], None, None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fence = re.match(r"\s*```(\w*)", line)
        if fence:
            language = fence[1] if language is None else None
            continue
        if language not in SHELLS:
            continue
        text = line.strip().removeprefix("$ ")
        if pending is not None:
            pending = (pending[0], f"{pending[1]} {text}")
        elif text.startswith(("python -m mnist_exp", "make ")):
            pending = (number, text)
        if pending is not None and not pending[1].endswith("\\"):
            found.append(pending)
            pending = None
        elif pending is not None:
            pending = (pending[0], pending[1][:-1])
    return found


def comment_lines(path: Path) -> list[tuple[int, str]]:
    """The commands in a YAML file's comments: in backticks, or from `python -m` to the end."""
    found, lines = [], path.read_text().splitlines()
    for index, line in enumerate(lines):
        comment = line.partition("#")[2] if "#" in line else ""
        quoted = re.findall(r"`((?:python -m mnist_exp|make )[^`]*)`", comment)
        if quoted:
            found += [(index + 1, command) for command in quoted]
        elif (start := comment.find("python -m mnist_exp")) >= 0:
            command = comment[start:]
            while command.endswith("\\") and index + 1 < len(lines):  # continued on the next
                index += 1
                command = command[:-1] + lines[index].partition("#")[2]
            found.append((index + 1, command))
    return found


def help_examples() -> list[tuple[int, str]]:
    """The examples of `python -m mnist_exp.run --help` (Hydra's help template)."""
    template = compose_config([])[1].help.template.splitlines()
    start = next(i for i, line in enumerate(template) if line.strip() == "Examples:")
    examples = []
    for number, line in enumerate(template[start + 1 :], start=start + 2):
        if not line.strip():
            break
        examples.append((number, line.strip()))
    return examples


def documented() -> list[tuple[str, str]]:
    """(where, command) for every documented command: `file:line`, `--help:line`."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = [
        (f"{page.relative_to(ROOT)}:{number}", command)
        for page in pages
        for number, command in code_block_lines(page)
    ]
    for path in sorted((ROOT / "mnist_exp" / "conf").rglob("*.yaml")):
        found += [(f"{path.relative_to(ROOT)}:{n}", c) for n, c in comment_lines(path)]
    found += [(f"--help:{number}", command) for number, command in help_examples()]
    return found


def with_fixtures(command: str) -> str:
    for placeholder, fixture in PLACEHOLDERS.items():
        command = re.sub(placeholder, fixture, command)
    return command


def words_by_bash(command: str, home: Path) -> list[str]:
    """The words bash passes to the program of `command`: its quotes, `$HOME` (here `home`),
    comments; in an empty directory, so that no glob matches a file."""
    empty = home / "empty"
    empty.mkdir(exist_ok=True)
    done = subprocess.run(
        ["bash", "-c", f'words() {{ printf "%s\\0" "$@"; }}\nwords {command}\n'],
        cwd=empty,
        capture_output=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    if done.returncode:
        raise MnistExpError(f"bash cannot read it: {done.stderr.decode().strip()}")
    return done.stdout.decode().split("\0")[:-1]


def check_run(argv: list[str]) -> None:
    """The CLI's pre-flight (`mnist_exp.run.cli`): the composed config, each combination of a
    sweep; Hydra's own flags aside."""
    flags = {word for word in argv if word.startswith("-")}
    if unknown := flags - HYDRA_FLAGS - {"--cfg", "-c"}:
        raise MnistExpError(f"{', '.join(sorted(unknown))}: not flags of the runner")
    rest, skip = [], False
    for word in argv:
        if skip or word in HYDRA_FLAGS:
            skip = False
            continue
        if word in ("--cfg", "-c"):
            skip = True  # its value: job, hydra or all
            continue
        rest.append(word)
    check_overrides(rest, multirun=bool(flags & {"-m", "--multirun"}))


def check_module(module: str, argv: list[str]) -> None:
    """The command's own argument parser on the documented words."""
    try:
        entry = importlib.import_module(f"{module}.__main__")
    except ModuleNotFoundError:
        entry = importlib.import_module(module)
    with contextlib.redirect_stderr(io.StringIO()) as said:
        try:
            entry.parser().parse_args(argv)
        except SystemExit as exit:
            if exit.code:
                raise MnistExpError(said.getvalue().strip().splitlines()[-1]) from None


def makefile() -> tuple[set[str], set[str]]:
    """The Makefile's targets and the variables it reads."""
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"(?m)^([a-z][a-z-]*):", text))
    variables = set(re.findall(r"\$\(([A-Z_]+)\)", text)) | set(
        re.findall(r"(?m)^([A-Z_]+) \?=", text)
    )
    return targets, variables


def check_make(argv: list[str]) -> None:
    """Each target is the Makefile's, each variable one it reads; ARGS as the target passes it."""
    targets, variables = makefile()
    for word in argv:
        name, assigns, value = word.partition("=")
        if assigns and name not in variables:
            raise MnistExpError(f"{name}=: the Makefile reads no such variable")
        if not assigns and word not in targets:
            raise MnistExpError(f"{word}: no such make target")
        if name == "ARGS":
            goal = next(w for w in argv if "=" not in w)
            check(["python", "-m", f"mnist_exp.{goal}" if goal != "run" else "mnist_exp.run",
                   *shlex.split(value)])  # fmt: skip


def check(words: list[str]) -> None:
    if words[0] == "make":
        check_make(words[1:])
    elif words[:3] == ["python", "-m", "mnist_exp.run"]:
        check_run(words[3:])
    else:
        check_module(words[2], words[3:])


COMMANDS = documented()


def test_the_docs_show_commands_from_every_source():
    sources = {where.partition(":")[0].split("/")[0] for where, _ in COMMANDS}
    assert {"README.md", "docs", "mnist_exp", "--help"} <= sources, sources
    assert len(COMMANDS) >= 60  # a collector that lost its way would find few


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """The reader's home, holding what the docs name in it; this process's too (`~`)."""
    home = tmp_path / "home"
    for digit in range(10):
        (home / "my_digits" / str(digit)).mkdir(parents=True)
        Image.new("L", (28, 28), 255).save(home / "my_digits" / str(digit) / "a.png")
    arrays = {"x_train": np.zeros((10, 28, 28)), "y_train": np.arange(10)}
    arrays |= {"x_test": np.zeros((10, 28, 28)), "y_test": np.arange(10)}
    write_idx_set(home / "data" / "fashion", arrays)
    monkeypatch.setenv("HOME", str(home))
    return home


def test_every_documented_command_works_as_typed(home):
    failures = []
    for where, command in COMMANDS:
        try:
            check(words_by_bash(with_fixtures(command), home))
        except MnistExpError as error:
            failures.append(f"{where}: {command}\n    {error}")
    assert not failures, f"{len(failures)} of {len(COMMANDS)} fail as typed:\n" + "\n".join(
        failures
    )


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("python -m mnist_exp.run dataset.root=~/a model=mlpp", "model=mlpp is not an option"),
        ("python -m mnist_exp.predict --top-k 0 a.png", "argument --top-k: invalid choice"),
        ("make runn", "runn: no such make target"),
        ("make bench ARGS=--quik", "unrecognized arguments: --quik"),
        ("python -m mnist_exp.run --help (its flags)", "bash cannot read it"),
    ],
)
def test_a_broken_command_fails_the_check_naming_why(command, message, tmp_path):
    with pytest.raises(MnistExpError, match=re.escape(message)):
        check(words_by_bash(with_fixtures(command), tmp_path))
