"""The Markdown the blocks are made of: percentages, ranges, seconds, tables, code."""

import statistics

NONE = "—"


def percent(value: float | None) -> str:
    return NONE if value is None else f"{value:.2%}"


def mean_range(values: list[float]) -> str:
    """`99.53% (99.49 - 99.56)`: the mean and the range; one value alone."""
    if not values:
        return NONE
    if len(values) == 1:
        return percent(values[0])
    return f"{percent(statistics.mean(values))} ({100 * min(values):.2f} - {100 * max(values):.2f})"


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def block(text: str) -> str:
    """A multi-line block under its opening marker, and a blank line before the closing one (in
    GitHub's Markdown a table would take the marker's line as one more row)."""
    return f"\n{text}\n\n"


def code(text: str) -> str:
    return f"`{text}`" if text else NONE


def seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def number(value: float | None) -> str:
    return NONE if value is None else f"{value:,.4g}"
