"""What this machine's CPU is: /proc/cpuinfo, read once, and the model name in it."""

import platform
from functools import cache
from pathlib import Path


@cache
def cpuinfo() -> str:
    """/proc/cpuinfo's text ("" where there is none)."""
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.is_file() else ""


def cpu_model() -> str:
    """The CPU's model name, e.g. "AMD EPYC 7B13"."""
    models = [
        line.split(":", 1)[1].strip() for line in cpuinfo().splitlines() if "model name" in line
    ]
    return models[0] if models else platform.processor() or platform.machine()
