"""What this machine's CPU is (/proc/cpuinfo, read once: its model name and vector flags) and how
many of its CPUs this process may use, which TensorFlow's thread pools are sized to."""

import os
import platform
from functools import cache
from pathlib import Path


@cache
def cpuinfo() -> str:
    """/proc/cpuinfo's text ("" where there is none)."""
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.is_file() else ""


def cpuinfo_field(name: str) -> str | None:
    """The first value of a /proc/cpuinfo field (`model name`, `cpu family`, ...), if any."""
    for line in cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_model() -> str:
    """The CPU's model name, e.g. "AMD EPYC 7B13"."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


# The flags that decide a CPU's speed here: AVX2 (fp32), AVX-512 and AMX (bfloat16 in hardware).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_flags() -> str:
    """Which of SPEED_FLAGS the CPU has, e.g. "avx2 fma"."""
    flags = set(cpuinfo().split())
    return " ".join(flag for flag in SPEED_FLAGS if flag in flags)


def description() -> dict[str, str]:
    """What a measurement's speed depends on: the CPU (with its family and model, which tell a
    virtual machine's "AMD EPYC" apart), its speed flags, the usable cores, oneDNN's
    instruction-set cap (a bigger CPU standing in for an AVX2 one) and the library versions."""
    from importlib.metadata import version

    family, model = cpuinfo_field("cpu family"), cpuinfo_field("model")
    return {
        "cpu": cpu_model() + (f" (family {family} model {model})" if family and model else ""),
        "flags": cpu_flags(),
        "cores": str(usable_cpus()),
        "isa_limit": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "tensorflow": version("tensorflow"),
        "keras": version("keras"),
    }


def usable_cpus() -> int:
    """CPUs this process may use: SLURM's per-task allocation where set, else its affinity."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def tensorflow_environment() -> None:
    """Settings TensorFlow reads once, when it starts (a user's own values win): its thread pools
    sized to the usable CPUs (else a SLURM job's TensorFlow uses every CPU of its node), and
    oneDNN's kernels on x86, which TensorFlow enables by itself only on CPUs with AVX-512 VNNI
    or AMX (on AVX2 they train the narrow CNN about 1.5x faster, measured)."""
    cpus = str(usable_cpus())
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", cpus)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", cpus)
    if platform.machine() in ("x86_64", "AMD64"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
