"""The allocator setting is safe for everyone who runs hftk: ``hftk finetune`` starts with glibc's
MALLOC_*_ variables (re-executing itself), no code in hftk changes malloc inside a running process,
user settings and other platforms are left alone, and kept memory is handed back (logged) when the
process outgrows it. The page-fault tests measure a mid-size allocate/free loop in real processes."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hf_toolkit.training import allocator

REPO = Path(__file__).resolve().parents[1]
USER_VARIABLES = (*allocator.USER_MALLOC_ENV, "GLIBC_TUNABLES", "LD_PRELOAD", allocator.SET_BY_HFTK)
glibc_only = pytest.mark.skipif(not allocator.is_glibc(), reason="glibc's malloc only (Linux with glibc)")


@pytest.fixture
def clean_env(monkeypatch):
    for name in USER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(allocator, "is_glibc", lambda: True)
    monkeypatch.setattr(allocator, "GPU_DEVICES", ())
    return monkeypatch


def test_the_training_process_starts_with_mallocs_variables_unless_the_user_set_any(clean_env):
    environment = allocator.training_environment(dict(os.environ))
    assert environment["MALLOC_MMAP_MAX_"] == "0" and environment["MALLOC_TRIM_THRESHOLD_"] == str(2**31 - 1)
    assert environment[allocator.SET_BY_HFTK] == "1"
    assert allocator.training_environment(environment) is None, "started with it already: no second restart"
    for name, value in [("MALLOC_TOP_PAD_", "0"), ("MALLOC_ARENA_MAX", "2"), ("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0"),
                        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")]:
        assert allocator.training_environment({**os.environ, name: value}) is None, name
    assert allocator.training_environment({**os.environ, "GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=1"}) is not None


def test_other_platforms_and_gpu_machines_start_as_they_are(clean_env, tmp_path):
    clean_env.setattr(allocator, "is_glibc", lambda: False)
    assert allocator.training_environment(dict(os.environ)) is None
    assert allocator.describe(on_gpu=False) is None
    clean_env.setattr(allocator, "is_glibc", lambda: True)
    (tmp_path / "nvidiactl").touch()
    clean_env.setattr(allocator, "GPU_DEVICES", (str(tmp_path / "nvidiactl"),))
    assert allocator.training_environment(dict(os.environ)) is None
    assert allocator.describe(on_gpu=True) is None


def test_the_log_line_says_which_setting_the_run_has_and_how_to_get_hftks(clean_env):
    library = allocator.describe(on_gpu=False)
    assert library.startswith("memory: glibc malloc's defaults") and "MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647" in library
    clean_env.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert allocator.describe(on_gpu=False) == "memory: malloc as MALLOC_TRIM_THRESHOLD_ sets it"
    clean_env.delenv("MALLOC_TRIM_THRESHOLD_")
    clean_env.setenv("LD_PRELOAD", "libtcmalloc.so")
    assert allocator.describe(on_gpu=False) == "memory: malloc as tcmalloc (LD_PRELOAD) sets it"
    clean_env.delenv("LD_PRELOAD")
    for name, value in {**allocator.MALLOC_ENV, allocator.SET_BY_HFTK: "1"}.items():
        clean_env.setenv(name, value)
    assert allocator.keeps_freed_memory(on_gpu=False) and not allocator.keeps_freed_memory(on_gpu=True)
    assert allocator.describe(on_gpu=False).startswith("memory: malloc keeps freed memory for reuse while training")


def test_kept_memory_is_handed_back_and_logged_when_the_process_outgrows_its_size(monkeypatch, caplog):
    trims = []
    monkeypatch.setattr(allocator, "malloc_trim", lambda: trims.append(1) or True)
    sizes = iter(mb * 2**20 for mb in [
        100,       # after step 3: the size the limit is set from (125)
        120,       # within the limit
        130, 104,  # over it: trimmed, 104 left, and the limit becomes max(125, 104 x 1.25) = 130
        129,       # within the new limit
        200, 180,  # a larger live size: trimmed, and the limit follows it (225)
        220,
    ])
    monkeypatch.setattr(allocator, "_resident_bytes", lambda: next(sizes))
    trimmer = allocator.Trimmer(active=True)
    with caplog.at_level(logging.INFO, logger="hftk"):
        for step in range(1, 9):
            trimmer.after_step(step)
    assert len(trims) == 2 and trimmer.ceiling == 225 * 2**20
    assert [r.getMessage() for r in caplog.records] == [
        "memory: handed 26 MB of kept memory back at step 5 (malloc_trim; the process had grown to 130 MB, past 125 MB)",
        "memory: handed 20 MB of kept memory back at step 7 (malloc_trim; the process had grown to 200 MB, past 130 MB)",
    ]
    idle = allocator.Trimmer(active=False)
    idle.after_step(10)
    assert idle.ceiling is None


def test_no_module_changes_malloc_inside_a_running_process():
    calls = [f"{path}:{n}" for path in (REPO / "hf_toolkit").rglob("*.py")
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if ".mallopt(" in line]
    assert calls == []


# --------------------------------------------------------------------------------------------
# Page faults of an 8 MB allocate/free loop, in real processes

LOOP = textwrap.dedent("""\
    import ctypes, resource, sys
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    {before}
    size, rounds = 8 << 20, 20
    def one():
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    one()  # the first block: faulted in whatever the setting
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        one()
    print("faults per round:", (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / rounds)
    """)
# What hftk did before: mallopt in the running process, then glibc's defaults "restored" (which
# leaves the dynamic mmap threshold switched off, frozen at 128 KiB in a process that freed no large block).
OLD_IN_PROCESS_SETTING = textwrap.dedent("""\
    libc.mallopt(-4, 0); libc.mallopt(-1, 2**31 - 1)
    libc.mallopt(-1, 128 * 1024); libc.mallopt(-4, 65536); libc.malloc_trim(0)
    """)
# hftk's whole allocator path inside a training process it did not start (a notebook, a program).
LIBRARY_USE = textwrap.dedent("""\
    from hf_toolkit.training import allocator
    allocator.describe(on_gpu=False)
    trimmer = allocator.Trimmer(allocator.keeps_freed_memory(on_gpu=False))
    for step in range(1, 6):
        trimmer.after_step(step)
    allocator.malloc_trim()
    """)


def faults_per_round(before: str = "", env: dict[str, str] | None = None) -> float:
    base = {name: value for name, value in os.environ.items() if name not in USER_VARIABLES}
    done = subprocess.run([sys.executable, "-c", LOOP.format(before=before)], capture_output=True,
                          text=True, timeout=120, env={**base, "PYTHONPATH": str(REPO), **(env or {})}, check=True)
    return float(re.search(r"faults per round: ([\d.]+)", done.stdout).group(1))


@glibc_only
def test_hftk_leaves_a_process_it_did_not_start_faulting_as_a_fresh_one():
    fresh = faults_per_round()
    after_hftk = faults_per_round(LIBRARY_USE)
    assert fresh < 500 and after_hftk < fresh + 50, (fresh, after_hftk)
    # The measurement sees the harm an in-process setting does: ~2,000 pages (8 MB) a round.
    assert faults_per_round(OLD_IN_PROCESS_SETTING) > 1000


@glibc_only
def test_a_process_started_with_hftks_setting_keeps_its_freed_memory():
    frozen_threshold = "libc.mallopt(-3, 128 * 1024)"  # blocks over 128 KiB would be mmapped and unmapped
    assert faults_per_round(frozen_threshold) > 1000
    assert faults_per_round(frozen_threshold, env=allocator.MALLOC_ENV) < 50, "no mmap: freed blocks stay in the heap"


@glibc_only
def test_finetune_restarts_itself_once_with_the_setting_same_pid_and_arguments(tmp_path):
    code = ("import os; from hf_toolkit.training import allocator; "
            "print(os.getpid(), os.environ.get('MALLOC_MMAP_MAX_'), flush=True); allocator.restart_keeping_freed_memory()")
    base = {name: value for name, value in os.environ.items() if name not in USER_VARIABLES}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**base, "PYTHONPATH": str(REPO)}, check=True)
    first, second = done.stdout.split("\n")[:2]
    assert first.split()[1] == "None" and second.split()[1] == "0" and first.split()[0] == second.split()[0], done.stdout
    user = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**base, "PYTHONPATH": str(REPO), "MALLOC_ARENA_MAX": "2"}, check=True)
    assert len(user.stdout.split("\n")) == 2 and user.stdout.split()[1] == "None", "the user's own setting: no restart"


@glibc_only
def test_a_forked_worker_keeps_the_setting_its_training_process_started_with():
    fork = ("import os\nif os.fork():\n    os.wait()\n    sys.exit(0)\n"  # the parent waits; the child measures
            "libc.mallopt(-3, 128 * 1024)")
    assert faults_per_round(fork) > 1000
    assert faults_per_round(fork, env=allocator.MALLOC_ENV) < 50
