"""The docs' figures rendered from records: a page marks each block with
`<!-- results:BLOCK RECORD... -->...<!-- /results -->`, and rendering rewrites what is between."""

import re
from collections.abc import Callable
from pathlib import Path

from mnist_exp.errors import MnistExpError
from mnist_exp.results.blocks import (
    bench,
    carried,
    duration,
    handwriting,
    headline,
    levers,
    mean_test,
    measured,
    output,
    passed,
    seeds,
    single,
    summary,
    time_to_accuracy,
    zoo,
)

MARKED = re.compile(r"<!-- results:(?P<key>[^>]*?) -->(?P<body>.*?)<!-- /results -->", re.S)
BLOCKS: dict[str, Callable[..., str]] = {
    "headline": headline,
    "seeds": seeds,
    "summary": summary,
    "levers": levers,
    "zoo": zoo,
    "single": single,
    "time-to-accuracy": time_to_accuracy,
    "bench": bench,
    "table": carried,
    "output": output,
    "duration": duration,
    "mean-test": mean_test,
    "handwriting": handwriting,
    "passed": passed,
    "measured": measured,
}


INLINE = ("mean-test", "duration", "passed", "handwriting")  # blocks within a sentence


def render_text(text: str, records: dict[str, dict], where: str = "") -> str:
    """`text` with every marked block rendered anew from `records`."""

    def rendered(match: re.Match) -> str:
        kind, *names = match["key"].split()
        missing = [name for name in names if name not in records]
        if kind not in BLOCKS or missing:
            what = f"no record {', '.join(missing)}" if missing else f"no block {kind!r}"
            raise MnistExpError(
                f"{where}: `results:{match['key']}` names {what}; blocks: {', '.join(BLOCKS)}; "
                "records: docs/results/*.json."
            )
        if kind in INLINE and text[match.start() - 1 : match.start()] in ("", "\n"):
            raise MnistExpError(
                f"{where}: `results:{match['key']}` starts a line, where Markdown reads the "
                "line as raw HTML: move a word of the sentence before it."
            )
        return f"<!-- results:{match['key']} -->{BLOCKS[kind](records, *names)}<!-- /results -->"

    return MARKED.sub(rendered, text)


def pages(root: Path) -> list[Path]:
    """The Markdown pages that may hold marked blocks: the README and the docs."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def render_pages(root: Path, records: dict[str, dict]) -> dict[Path, str]:
    """Each page with blocks, rendered anew: {path: text} (what changed and what did not)."""
    found = {}
    for path in pages(root):
        text = path.read_text()
        if MARKED.search(text):
            found[path] = render_text(text, records, str(path.relative_to(root)))
    return found
