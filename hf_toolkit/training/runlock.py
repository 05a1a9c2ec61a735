"""Who may write an output directory: whether it already holds a run, which of its files a run
wrote, the lock that keeps two ``hftk finetune`` processes out of one directory, and clearing an
old run for ``--overwrite``. hftk never deletes or replaces a file it did not write.

- :func:`existing_run`: what an output directory holds that a new run would overwrite (a finished
  run's ``hftk_recipe.yaml`` or weights, an unfinished run's ``checkpoint-*``), for the recipe check.
- :func:`run_entries` / :func:`foreign_entries`: the top-level entries a run wrote, and the others.
  A run records what it wrote in ``hftk_manifest.json`` (:data:`~hf_toolkit.core.rundir.MANIFEST_FILE`):
  when it starts (``complete: false``: the entries of earlier runs, and the user's entries it keeps)
  and when it ends (every entry that appeared while it ran). A run killed outright leaves the
  manifest incomplete: the entries its names list plus those named like a run's files
  (:data:`~hf_toolkit.core.rundir.RUN_WRITES`) count as the run's, except the ones it kept. A run
  directory from before the manifest counts by those names alone.
- :func:`clear_run`: ``--overwrite`` deletes the run's entries only, and says which (and which stay).
- :func:`hold`: the lock, a file ``.hftk.lock`` in the output directory holding the owner's pid,
  host and start time, created atomically (``os.link`` of a complete temporary file, which fails
  when the lock exists). A lock whose pid no longer runs on this host is stale: it is cleared with
  a note. Under ``--nproc N`` the launching process takes the lock before it starts the ranks and
  names itself in ``HFTK_LOCK_OWNER``; rank 0 then finds the lock its parent holds. Under another
  launcher (torchrun, accelerate) rank 0 takes it; other ranks never touch it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from hf_toolkit.core.rundir import EVAL_DIR, MANIFEST_FILE, RUN_WRITES, write_atomically
from hf_toolkit.errors import HftkError
from hf_toolkit.training.checkpoints import PREFIX, TRAINER_STATE

LOCK_FILE = ".hftk.lock"
HFTK_TRACES = ".hftk.*"  # the lock, the stop request (launch.STOP_FILE) and their temporary files
SHOWN = 8  # entries named in a message before "... and N more"
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


def run_entries(output_dir: str | Path) -> list[Path]:
    """The top-level entries of `output_dir` that hftk runs wrote (see the module docstring)."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    entries = sorted(out.iterdir())
    manifest = _read(out / MANIFEST_FILE)
    if manifest is None:  # no manifest: a run from before it, or no run at all
        named = existing_run(out) is not None
        return [p for p in entries if _hftk_trace(p) or (named and _named_like_a_run(p))]
    written, kept, guessed = set(manifest.get("written", [])), set(manifest.get("kept", [])), not manifest.get("complete")
    later = {MANIFEST_FILE, EVAL_DIR} - kept  # hftk eval --model writes eval/ after the run
    return [p for p in entries if _hftk_trace(p) or p.name in written | later
            or (guessed and p.name not in kept and _named_like_a_run(p))]


def foreign_entries(output_dir: str | Path) -> list[Path]:
    """The top-level entries of `output_dir` that no hftk run wrote (the user's)."""
    out = Path(output_dir)
    ours = set(run_entries(out))
    return [p for p in sorted(out.iterdir()) if p not in ours] if out.is_dir() else []


def would_replace(entries: list[Path]) -> list[str]:
    """The names among `entries` that a run writes (and so would replace): README.md, config.json..."""
    return [p.name for p in entries if any(fnmatch.fnmatchcase(p.name, pattern) for pattern in RUN_WRITES)]


def names(entries: list[Path], limit: int | None = SHOWN) -> str:
    """'a, b/, c' (folders with a slash): the first `limit` (None: all), then '... and N more'."""
    limit = len(entries) if limit is None else limit
    shown = [f"{e.name}/" if e.is_dir() else e.name for e in entries[:limit]]
    more = f" ... and {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(shown) + more


def _hftk_trace(path: Path) -> bool:
    return fnmatch.fnmatchcase(path.name, HFTK_TRACES)


def _named_like_a_run(path: Path) -> bool:
    """A name a run writes; ``runs/`` only when it holds nothing but TensorBoard event files."""
    if path.name == "runs":
        files = [f for f in path.rglob("*") if not f.is_dir()] if path.is_dir() else [path]
        return path.is_dir() and all(f.name.startswith("events.out.tfevents.") for f in files)
    return any(fnmatch.fnmatchcase(path.name, pattern) for pattern in RUN_WRITES)


def clear_run(output_dir: str | Path) -> None:
    """``--overwrite``: delete what earlier runs wrote in `output_dir` (but the lock), so nothing of
    the old run (a stale checkpoint to resume from, an adapter config beside full weights) mixes
    with the new; everything else stays. Both are said."""
    out = Path(output_dir)
    doomed = [p for p in run_entries(out) if p.name != LOCK_FILE]
    said = names(doomed, limit=None)  # what is deleted is said in full
    for entry in doomed:
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    if doomed:
        logger.info("--overwrite: deleted the previous run's %d files and folders from %s: %s", len(doomed), out, said)
    kept = foreign_entries(out)
    if kept:
        logger.info("--overwrite: kept %d not written by hftk: %s", len(kept), names(kept))


def _start_manifest(out: Path) -> set[str]:
    """The manifest as a run starts: the earlier runs' entries, and the user's it must keep.
    Returns the names present now, against which the run's new entries are told at the end."""
    present = {p.name for p in out.iterdir()}
    ours = {p.name for p in run_entries(out) if not _hftk_trace(p)}
    _write_manifest(out, written=ours | {MANIFEST_FILE}, kept=present - ours - {LOCK_FILE}, complete=False)
    return present


def _finish_manifest(out: Path, present: set[str]) -> None:
    """The manifest as a run ends: every entry that appeared while it ran is the run's. A run
    that wrote nothing leaves no manifest."""
    started = _read(out / MANIFEST_FILE) or {}
    now = {p.name for p in out.iterdir() if not _hftk_trace(p)}
    written = (set(started.get("written", [])) | (now - present)) & now
    if written <= {MANIFEST_FILE}:
        with contextlib.suppress(FileNotFoundError):
            (out / MANIFEST_FILE).unlink()
        return
    _write_manifest(out, written=written, kept=set(started.get("kept", [])) & now, complete=True)


def _write_manifest(out: Path, *, written: set[str], kept: set[str], complete: bool) -> None:
    record = {"about": "what hftk finetune wrote here: --overwrite deletes these and nothing else",
              "written": sorted(written), "kept": sorted(kept), "complete": complete}
    write_atomically(out / MANIFEST_FILE, json.dumps(record, indent=2) + "\n")


@contextlib.contextmanager
def hold(output_dir: str | Path, *, main: bool = True, overwrite: bool = False) -> Iterator[None]:
    """Hold the lock of `output_dir` for the block (only when `main`: rank 0 or a single process);
    with `overwrite`, clear the old run once the lock is held. The lock's holder records what the
    run writes in the manifest. The directory is created for the lock and removed again on release
    when the run left nothing in it (a user error before training)."""
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
    present = None
    try:
        if overwrite:
            clear_run(out)
        if not inherited:
            present = _start_manifest(out)
        yield
    finally:
        if not inherited:
            if present is not None:
                _finish_manifest(out, present)
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
