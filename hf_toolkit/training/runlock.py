"""Who may write an output directory: whether it already holds a run, the lock that keeps two
``hftk finetune`` processes out of one directory, and clearing an old run for ``--overwrite``.

- :func:`existing_run`: what an output directory holds that a new run would overwrite (a finished
  run's ``hftk_recipe.yaml`` or weights, an unfinished run's ``checkpoint-*``), for the recipe check.
- :func:`hold`: the lock, a file ``.hftk.lock`` in the output directory holding the owner's pid,
  host and start time, created atomically (``os.link`` of a complete temporary file, which fails
  when the lock exists). A lock whose pid no longer runs on this host is stale: it is cleared with
  a note. Under ``--nproc N`` the launching process takes the lock before it starts the ranks and
  names itself in ``HFTK_LOCK_OWNER``; rank 0 then finds the lock its parent holds. Under another
  launcher (torchrun, accelerate) rank 0 takes it; other ranks never touch it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from hf_toolkit.errors import HftkError
from hf_toolkit.training.checkpoints import PREFIX, TRAINER_STATE

LOCK_FILE = ".hftk.lock"
OWNER_ENV = "HFTK_LOCK_OWNER"
# Files a run leaves at the top of its output directory, finished or not.
RUN_MARKERS = ("hftk_recipe.yaml", TRAINER_STATE, "model.safetensors", "adapter_model.safetensors", "pytorch_model.bin")

logger = logging.getLogger("hftk")


class RunLocked(HftkError):
    """Another live process holds the output directory's lock."""


def existing_run(output_dir: str | Path) -> str | None:
    """'a finished run (hftk_recipe.yaml, ...)' / 'an unfinished run (checkpoint-4)', or None for
    a directory a new run may write into (missing, empty, or holding nothing a run writes)."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    markers = [name for name in RUN_MARKERS if (out / name).is_file()]
    checkpoints = sorted((p.name for p in out.glob(f"{PREFIX}*") if p.is_dir()), key=lambda n: (len(n), n))
    if markers:
        return f"a finished run ({', '.join(markers)})"
    if checkpoints:
        return f"an unfinished run ({', '.join(checkpoints[-3:])})"
    return None


def clear_run(output_dir: str | Path) -> None:
    """``--overwrite``: remove everything in `output_dir` but the lock, so nothing of the old run
    (a stale checkpoint to resume from, an adapter config beside full weights) mixes with the new."""
    out = Path(output_dir)
    removed = 0
    for entry in out.iterdir() if out.is_dir() else []:
        if entry.name == LOCK_FILE:
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        removed += 1
    if removed:
        logger.info("--overwrite: removed the previous run's %d files and directories from %s", removed, out)


@contextlib.contextmanager
def hold(output_dir: str | Path, *, main: bool = True, overwrite: bool = False) -> Iterator[None]:
    """Hold the lock of `output_dir` for the block (only when `main`: rank 0 or a single process);
    with `overwrite`, clear the old run once the lock is held. The directory is created for the
    lock and removed again on release when the run left nothing in it (a user error before training)."""
    if not main:
        yield
        return
    out = Path(output_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_FILE
    inherited = _held_by_parent(lock)
    if not inherited:
        _acquire(lock)
    try:
        if overwrite:
            clear_run(out)
        yield
    finally:
        if not inherited:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty


def _held_by_parent(lock: Path) -> bool:
    owner = os.environ.get(OWNER_ENV)
    holder = _read(lock)
    return owner is not None and holder is not None and str(holder.get("pid")) == owner and holder.get("host") == socket.gethostname()


def _acquire(lock: Path) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    temporary = lock.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record) + "\n", encoding="utf-8")
    try:
        for _ in range(3):
            try:
                os.link(temporary, lock)  # atomic, with its content: fails when the lock exists
                return
            except FileExistsError:
                holder = _read(lock)
                if holder is None:  # unreadable: someone is mid-way; look again
                    time.sleep(0.1)
                    continue
                if not _is_stale(holder):
                    raise RunLocked(
                        f"{lock.parent}: another hftk finetune (pid {holder.get('pid')} on {holder.get('host')}, started "
                        f"{holder.get('started')}) is writing this output directory; wait for it to finish or stop it, or "
                        f"choose another training.output_dir. If no such process runs, delete {lock}"
                    ) from None
                logger.warning("%s: cleared a stale lock of pid %s (no longer running)", lock.parent, holder.get("pid"))
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
        raise RunLocked(f"{lock}: could not take the lock of this output directory; delete the file if no hftk finetune uses it")
    finally:
        temporary.unlink()


def _read(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_stale(holder: dict) -> bool:
    """True when the lock's pid no longer runs on this host (another host's lock is never judged stale)."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False
