"""Host memory while training on CPU: glibc's malloc told, before the training process starts, to
keep freed memory for reuse, and the kept memory handed back when the process outgrows it.

Why: glibc's malloc serves every block over its mmap threshold with a fresh ``mmap`` and hands it
back to the kernel when it is freed, and trims the top of the heap too, so each CPU training step
faults in again the activation memory the previous step released: measured for MiniLM QA (batch
32 x 256 tokens, bf16) at 140,000 page faults (0.5 GB) a step with attention dropout 0 and over a
million (4 GB, 1.7 s of kernel time) with dropout 0.1. No mmap for large blocks and no trimming
ends the faults.

How: the way glibc intends, by environment variables read when a process starts
(:data:`MALLOC_ENV`). ``hftk finetune`` re-executes itself with them (:func:`restart_keeping_freed_memory`,
the same process id and arguments) when the user set none; ``--nproc`` ranks inherit them from the
launcher, and so do DataLoader workers (forked workers copy the parent's malloc settings, spawned
ones read the same environment). Nothing calls ``mallopt`` in a running process: setting any
mallopt parameter switches off glibc's self-adjusting mmap threshold for the rest of that process,
and a library must not leave a notebook or a program that calls it changed in a way no "restore"
can undo. A program that calls hftk's Python API gets a log line saying how to start Python with
the same setting (:func:`describe`).

Batches of varying length fragment the kept heap over a long run (a 3-epoch SQuAD run grew from 7
to 13 GB), so :class:`Trimmer` hands the free memory back (``malloc_trim``, logged) whenever the
process has grown by :data:`GROWTH_LIMIT` over its size after the first steps.

Left alone: machines with a GPU device (host memory is not on the step's path), platforms without
glibc (macOS, Windows, musl), and any user setting: a ``MALLOC_*_`` variable, ``glibc.malloc``
tunables in ``GLIBC_TUNABLES``, or another allocator in ``LD_PRELOAD`` (jemalloc, tcmalloc,
mimalloc).
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from pathlib import Path

logger = logging.getLogger("hftk")

MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
"""No mmap for large blocks (they come from the heap and stay there when freed), no automatic trimming."""
SET_BY_HFTK = "HFTK_MALLOC_SET"
"""Marks a process (and its children) that hftk started with :data:`MALLOC_ENV`."""
USER_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                   "MALLOC_ARENA_MAX")
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
GPU_DEVICES = ("/dev/nvidiactl", "/dev/kfd")  # NVIDIA's and AMD ROCm's driver nodes

GROWTH_LIMIT = 1.25
"""While training keeps freed memory, the resident size it may reach, over the size after the first
steps (re-measured after each trim), before the free memory is handed back."""
SIZED_AFTER_STEPS = 3


def is_glibc() -> bool:
    """True on Linux with glibc (its malloc reads MALLOC_*_ variables and has malloc_trim)."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def user_setting(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """How the user set the allocator up themselves, by name (a variable or a preloaded allocator), or None."""
    if environ.get(SET_BY_HFTK) == "1":
        return None
    tuned = [name for name in USER_MALLOC_ENV if name in environ]
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        tuned.append("GLIBC_TUNABLES")
    if tuned:
        return tuned[0]
    return next((f"{name} (LD_PRELOAD)" for name in OTHER_ALLOCATORS if name in environ.get("LD_PRELOAD", "")), None)


def training_environment(environ: dict[str, str] | os._Environ = os.environ) -> dict[str, str] | None:
    """The environment to start a training process with so that it keeps freed memory, or None
    when it should start as it is (set already, set by the user, no glibc, a GPU machine)."""
    if environ.get(SET_BY_HFTK) == "1" or not is_glibc() or user_setting(environ) is not None:
        return None
    if any(Path(device).exists() for device in GPU_DEVICES):
        return None
    return {**environ, **MALLOC_ENV, SET_BY_HFTK: "1"}


def restart_keeping_freed_memory() -> None:
    """Re-execute this process (same interpreter options and arguments, same process id) with
    :data:`MALLOC_ENV` when :func:`training_environment` says so; else return. Call it before
    anything heavy is imported: what ran before is thrown away."""
    environment = training_environment()
    if environment is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)


def keeps_freed_memory(on_gpu: bool) -> bool:
    """True when this process was started with hftk's setting and trains on CPU."""
    return not on_gpu and is_glibc() and os.environ.get(SET_BY_HFTK) == "1"


def describe(on_gpu: bool) -> str | None:
    """hftk's log line on the allocator a CPU training run has, and why (None on GPU or without glibc)."""
    if on_gpu or not is_glibc():
        return None
    if keeps_freed_memory(on_gpu):
        settings = " ".join(f"{name}={value}" for name, value in MALLOC_ENV.items())
        return ("memory: malloc keeps freed memory for reuse while training (no page faults on each step's activations; "
                f"hftk started this process with {settings}; trimmed when the process grows {GROWTH_LIMIT - 1:.0%} past "
                "its size after the first steps; to opt out, set a MALLOC_*_ variable yourself, e.g. "
                "MALLOC_TRIM_THRESHOLD_=131072)")
    setting = user_setting()
    if setting is not None:
        return f"memory: malloc as {setting} sets it"
    settings = " ".join(f"{name}={value}" for name, value in MALLOC_ENV.items())
    return ("memory: glibc malloc's defaults: each step may fault its activation memory in again (hftk changes no "
            "allocator setting inside a running Python process; `hftk finetune` starts with them, or start Python "
            f"with {settings} to train faster)")


def _resident_bytes() -> int | None:
    """This process's resident memory (Linux /proc), or None."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def malloc_trim() -> bool:
    """Hand glibc's free memory back to the system; False where there is no glibc."""
    import ctypes

    if not is_glibc():
        return False
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


class Trimmer:
    """Hands kept memory back whenever the process grows :data:`GROWTH_LIMIT` past its size after
    the first :data:`SIZED_AFTER_STEPS` steps (the limit follows the size left after each trim).
    Call :meth:`after_step` after every optimizer step; it does nothing when ``active`` is False."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.ceiling: float | None = None
        self.trims = 0

    def after_step(self, global_step: int) -> None:
        if not self.active or (global_step < SIZED_AFTER_STEPS and self.ceiling is None):
            return
        resident = _resident_bytes()
        if resident is None:
            return
        if self.ceiling is None:
            self.ceiling = resident * GROWTH_LIMIT
        elif resident > self.ceiling:
            malloc_trim()
            self.trims += 1
            left = _resident_bytes() or resident
            logger.info("memory: handed %.0f MB of kept memory back at step %d (malloc_trim; the process had grown "
                        "to %.0f MB, past %.0f MB)", (resident - left) / 2**20, global_step, resident / 2**20,
                        self.ceiling / 2**20)
            self.ceiling = max(self.ceiling, left * GROWTH_LIMIT)
