"""The preprocessing cache of ``hftk finetune``: a run's loaded splits and its task's prepared
(tokenized) datasets kept on disk, so a second run of the same data and options neither reads
nor tokenizes its data again.

Two entries per run, because the second key can only be made once the first is in hand (a
classifier's labels and a trained tokenizer come from the loaded splits):

``<root>/<data key>/splits``
    the splits as :func:`hf_toolkit.core.data.load_splits` returns them. The data key hashes the
    sha256 of every data file (:func:`hf_toolkit.core.provenance.sha256`) and its suffix (a split given
    as a packaged builder over named local files, ``{path: csv, data_files: ..., split: "train[:90%]"}``:
    the sha256 of each of its files, its arguments being options of ``data``), every option
    of the recipe's ``data`` section (``data.cache`` aside), the seed (it carves
    ``validation_split``), the task (name, roles, text and non-empty roles), the versions of hftk and the libraries
    (:func:`hf_toolkit.core.provenance.versions`, pyarrow added) and the source code that reads data
    and prepares features (hftk's data modules and the file of each class of the task), so an
    edited checkout is a miss too.
``<root>/<data key>/<prepared key>``
    the task's :meth:`~hf_toolkit.tasks.base.Task.prepare` output. The prepared key adds the
    tokenizer (its saved files, so a trained or modified tokenizer counts by content; also the
    decoder tokenizer of an encoder-decoder pair) and the model's class and whole config (what a
    task reads from it, context length or label ids, cannot be told apart from the rest, so any
    config change is a miss). Not the weights, the training arguments or the LoRA settings:
    they never reach ``prepare``.

``root`` is ``$HFTK_CACHE/preprocessed``; ``HFTK_CACHE`` defaults to ``$XDG_CACHE_HOME/hftk``,
else ``~/.cache/hftk``. An entry is a ``DatasetDict.save_to_disk`` directory plus
``hftk_cache.json`` (its key, what made it, the seconds it took, the warnings loading printed,
which a hit prints again). It is written into a ``.incomplete-*`` directory first and renamed
into place, so an interrupted run leaves no entry at all (and its leftovers are swept a day
later); an entry that cannot be read is a miss, and the run replaces it. A failed write (disk
full, read-only) leaves the run going and is said.

Processes: under ``TrainingArguments.main_process_first`` each node's main process looks up,
prepares and writes first, then the others read what it wrote; only main processes write.

Not used, and said in the one log line :meth:`PreprocessingCache.summary` makes: ``data.cache:
false``; a split given as other ``load_dataset`` arguments (a hub dataset, a pattern or a remote
file: no named local files whose content can be hashed; ``datasets``' own cache keeps such data); a task whose ``cache_prepared`` is False; and prepared
data that cannot be saved faithfully (not a ``DatasetDict`` of ``Dataset``, or an on-the-fly
transform). ``--dry-run`` reads the cache but writes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_toolkit.core import console, modeling, provenance
from hf_toolkit.tasks.base import Task

if TYPE_CHECKING:
    from datasets import DatasetDict

    from hf_toolkit.recipe.schema import Recipe

logger = logging.getLogger("hftk")

FORMAT = 1
"""Bump when the layout of entries or the make-up of keys changes."""
META = "hftk_cache.json"
INCOMPLETE = ".incomplete-"
STALE_SECONDS = 24 * 3600
"""An ``.incomplete-*`` directory this old is left over from an interrupted write."""
CODE = ("core/data.py", "core/datafiles.py", "core/htmltext.py", "core/modeling.py", "training/prepcache.py")
"""hftk modules (paths in the package), besides the task's own, whose code turns data files into
splits and features: a change to any of them (say, to how ``data.strip_html`` cleans) is a miss."""
LOADING_KEYS = frozenset({"is_local", "local_files_only", "name_or_path", "_commit_hash", "cache_dir", "token",
                          "revision", "force_download", "proxies", "subfolder", "trust_remote_code"})
"""tokenizer_config.json keys that say how a tokenizer was loaded, not how it encodes."""


def cache_root() -> Path:
    """``$HFTK_CACHE/preprocessed``; ``HFTK_CACHE`` defaults to ``$XDG_CACHE_HOME/hftk``, else ``~/.cache/hftk``."""
    base = os.environ.get("HFTK_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = os.path.join(xdg, "hftk") if xdg else os.path.join("~", ".cache", "hftk")
    return Path(base).expanduser().absolute() / "preprocessed"


def open_cache(recipe: "Recipe", task: Task, *, main: bool = True, dry_run: bool = False) -> "PreprocessingCache":
    """The cache as one run of `recipe` uses it; `main`: this process may write (each node's main
    process), `dry_run`: read only."""
    readonly = "--dry-run writes nothing" if dry_run else None if main else "the main process writes it"
    return PreprocessingCache(recipe, task, readonly=readonly)


class PreprocessingCache:
    """One run's use of the cache: :meth:`splits`, then :meth:`prepared`, then :meth:`summary`."""

    def __init__(self, recipe: "Recipe", task: Task, *, readonly: str | None = None):
        self.recipe, self.task, self.readonly = recipe, task, readonly
        self.root = cache_root()
        self.unused = _why_unused(recipe, task)  # None: the cache is used
        self.data_key: str | None = None
        self.prepared_key: str | None = None
        self.splits_hit = self.hit = False
        self.worked = 0.0
        """Seconds this run spent loading and preparing its data, or reading them from the cache."""
        self.saving = 0.0
        """Seconds this run spent writing cache entries."""
        self._load_seconds = 0.0  # loading the splits, in this run or in the run that saved them
        self._first_seconds: float | None = None  # on a hit: loading + preparing in the run that saved the entry
        self._save_problem: str | None = None
        self._not_cached: str | None = None  # why the prepared data cannot be saved
        self._broken: set[Path] = set()

    # ----------------------------------------------------------------------------------------

    def splits(self, load: Callable[[], "DatasetDict"]) -> "DatasetDict":
        """The loaded splits: from the cache, or from `load` (then saved)."""
        import datasets  # noqa: F401 - every run imports it (the Trainer does): not counted as preprocessing

        started = time.perf_counter()
        if self.unused is None:
            self.data_key = self._key(data_key, self.recipe, self.task)
        if self.unused is None:
            cached = self._read(self._splits_dir, self.data_key)
            if cached is not None:
                splits, meta = cached
                for message in meta.get("warnings", []):
                    logger.warning("%s", message)
                self.splits_hit = True
                self._load_seconds = float(meta.get("seconds", 0.0))
                self.worked += time.perf_counter() - started
                return splits
        with _warnings_recorded() as warnings:
            splits = load()
        self._load_seconds = time.perf_counter() - started
        self.worked += self._load_seconds
        if self.unused is None and self.readonly is None:
            self._save(splits, self._splits_dir, {"key": self.data_key, "seconds": self._load_seconds,
                                                  "warnings": warnings, **self._story()})
        return splits

    def prepared(self, prepare: Callable[[], "DatasetDict"], tokenizer: Any, model: Any) -> "DatasetDict":
        """The task's prepared splits: from the cache, or from `prepare` (then saved when they can be
        saved faithfully). `tokenizer` and `model` are the ones `prepare` uses."""
        started = time.perf_counter()
        if self.unused is None:
            assert self.data_key is not None, "splits() comes first"
            self.prepared_key = self._key(prepared_key, self.data_key, self.task, self.recipe, tokenizer, model)
        if self.unused is None:
            cached = self._read(self._prepared_dir, self.prepared_key)
            if cached is not None:
                prepared, meta = cached
                self.hit = True
                self._first_seconds = meta.get("seconds")
                self.worked += time.perf_counter() - started
                return prepared
        prepared = prepare()
        prepare_seconds = time.perf_counter() - started
        self.worked += prepare_seconds
        if self.unused is None:
            problem = unsaveable(prepared)
            if problem is not None:
                self._not_cached = f"task {self.task.name}'s prepared data {problem}"
            elif self.readonly is None:
                self._save(prepared, self._prepared_dir, {"key": self.prepared_key, "seconds": self._load_seconds + prepare_seconds,
                                                          "tokenizer": type(tokenizer).__name__, **self._story()})
        return prepared

    @property
    def seconds(self) -> float:
        """Seconds this run spent on its data: loading and preparing (or reading the cache), and saving."""
        return self.worked + self.saving

    def summary(self) -> str:
        """The one log line: hit, miss (saved or why not), off or not used (why)."""
        if self.unused is not None:
            return f"preprocessing cache: {self.unused}"
        if self._not_cached is not None:
            return f"preprocessing cache: prepared data not cached ({self._not_cached})"
        assert self.prepared_key is not None, "prepared() comes first"
        short = self.prepared_key[:12]
        if self.hit:
            before = f" instead of {self._first_seconds:.2f} s" if isinstance(self._first_seconds, (int, float)) else ""
            return f"preprocessing cache: hit ({short}, {self._prepared_dir}): {self.worked:.2f} s{before}"
        what = ("prepared (the loaded splits came from the cache)" if self.splits_hit else "loaded and prepared")
        if self.readonly is not None:
            outcome = f"not saved ({self.readonly})"
        elif self._save_problem is not None:
            outcome = f"not saved ({self._save_problem})"
        else:
            outcome = f"saved to {self._prepared_dir} ({self.saving:.2f} s)"
        return f"preprocessing cache: miss ({short}): {what} in {self.worked:.2f} s, {outcome}"

    # ----------------------------------------------------------------------------------------

    def _key(self, make: Callable[..., str], *args: Any) -> str | None:
        """`make(*args)`, or None with the reason the cache is not used (a file or tokenizer that cannot
        be read or saved: loading or preparing then says what is wrong, or works without the cache)."""
        try:
            return make(*args)
        except Exception as error:  # noqa: BLE001 - a key that cannot be made only means no cache
            self.unused = f"not used (its key cannot be made: {type(error).__name__}: {error})"
            return None

    @property
    def _splits_dir(self) -> Path:
        assert self.data_key is not None
        return self.root / self.data_key[:32] / "splits"

    @property
    def _prepared_dir(self) -> Path:
        assert self.data_key is not None and self.prepared_key is not None
        return self.root / self.data_key[:32] / self.prepared_key[:32]

    def _story(self) -> dict[str, Any]:
        """What made an entry, for a person looking into the cache."""
        return {"format": FORMAT, "task": self.task.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "data": {split: source.describe() for split, source in self.recipe.data.sources()},
                "versions": _versions()}

    def _read(self, entry: Path, key: str) -> tuple["DatasetDict", dict[str, Any]] | None:
        """The entry's datasets and metadata, or None (absent, or damaged: then it is replaced when saved)."""
        if not entry.is_dir():
            return None
        from datasets import DatasetDict

        try:
            meta = json.loads((entry / META).read_text(encoding="utf-8"))
            if meta.get("key") != key:
                raise ValueError(f"it holds key {str(meta.get('key'))[:12]}")
            with console.datasets_bars_off():
                datasets = DatasetDict.load_from_disk(str(entry))
            rows = {name: len(split) for name, split in datasets.items()}
            if rows != meta.get("rows"):
                raise ValueError(f"rows {rows}, its record says {meta.get('rows')}")
        except Exception as error:  # noqa: BLE001 - whatever broke an entry, it is a miss, never a failed run
            logger.warning("preprocessing cache: %s cannot be read (%s: %s); preparing anew", entry, type(error).__name__, error)
            self._broken.add(entry)
            return None
        return datasets, meta

    def _save(self, datasets: "DatasetDict", entry: Path, meta: dict[str, Any]) -> None:
        """Write `entry` atomically: into an .incomplete-* directory, then renamed into place."""
        incomplete = entry.parent / f"{INCOMPLETE}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            _sweep(entry.parent)
            with console.datasets_bars_off():
                datasets.save_to_disk(str(incomplete))
            meta = {**meta, "rows": {name: len(split) for name, split in datasets.items()}}
            (incomplete / META).write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8")
            if entry in self._broken:
                _remove(entry)
            os.rename(incomplete, entry)
        except OSError as error:
            shutil.rmtree(incomplete, ignore_errors=True)
            if not (entry / META).is_file():  # else another process saved the same entry first: fine
                self._save_problem = f"{type(error).__name__}: {error}"
        except BaseException:  # an interrupted write leaves nothing behind to be read
            shutil.rmtree(incomplete, ignore_errors=True)
            raise
        finally:
            self.saving += time.perf_counter() - started


# --------------------------------------------------------------------------------------------
# Keys


def data_key(recipe: "Recipe", task: Task) -> str:
    """The key of a recipe's loaded splits (see the module docstring); local files only."""
    data = recipe.data.model_dump(mode="json", exclude={"cache"})
    for split, source in recipe.data.sources():
        files = source.local_files()
        assert files is not None  # _why_unused: only local files
        if source.file is not None:
            data[split] = {"sha256": provenance.sha256(files[0]), "suffix": files[0].suffix.lower()}
        else:  # a builder: its arguments (path, name, split, data_files) and what its files hold
            data[split] = {"source": data[split], "sha256": [provenance.sha256(path) for path in files]}
    return _digest({"format": FORMAT, "versions": _versions(), "code": _code_digest(task),
                    "task": [task.name, list(task.roles), list(task.optional_roles), list(task.text_roles), list(task.nonempty_roles)], "seed": recipe.seed, "data": data})


def prepared_key(data: str, task: Task, recipe: "Recipe", tokenizer: Any, model: Any) -> str:
    """The key of a task's prepared splits: the data key, the tokenizer(s) and the model's class and config."""
    writer = task.target_tokenizer(recipe, tokenizer)
    base = modeling.base_model(model)  # LoRA: the model it wraps
    return _digest({"data": data, "tokenizer": tokenizer_digest(tokenizer),
                    "target_tokenizer": None if writer is tokenizer else tokenizer_digest(writer),
                    "model": type(base).__name__, "config": json.loads(base.config.to_json_string(use_diff=False))})


def tokenizer_digest(tokenizer: Any) -> str:
    """sha256 of a tokenizer's saved files (minus the keys that say how it was loaded) and settings."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    settings = [getattr(tokenizer, name, None) for name in ("padding_side", "truncation_side", "model_max_length", "src_lang", "tgt_lang")]
    digest.update(json.dumps(settings, default=str).encode())
    with tempfile.TemporaryDirectory(prefix="hftk-tokenizer-") as folder:
        tokenizer.save_pretrained(folder)
        for path in sorted(Path(folder).rglob("*")):
            if not path.is_file():
                continue
            content = path.read_bytes()
            if path.name == "tokenizer_config.json":
                config = {k: v for k, v in json.loads(content).items() if k not in LOADING_KEYS}
                content = json.dumps(config, sort_keys=True).encode()
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + content + b"\0")
    return digest.hexdigest()


def _code_digest(task: Task) -> str:
    """sha256 of hftk's data modules and of the file of every class of `task` (a task defined
    outside a file counts by its class name)."""
    package = Path(__file__).resolve().parents[1]
    files = [package / name for name in CODE]
    names = []
    for cls in type(task).__mro__:
        if issubclass(cls, Task):
            names.append(f"{cls.__module__}.{cls.__qualname__}")
            with contextlib.suppress(TypeError, OSError):
                files.append(Path(inspect.getfile(cls)).resolve())
    digest = hashlib.sha256(json.dumps(names).encode())
    for path in dict.fromkeys(files):
        digest.update(str(path.name).encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    found = provenance.versions()
    try:
        found["pyarrow"] = metadata.version("pyarrow")
    except metadata.PackageNotFoundError:  # pragma: no cover - a dependency of datasets
        found["pyarrow"] = "not installed"
    return found


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# What the cache cannot keep


def _why_unused(recipe: "Recipe", task: Task) -> str | None:
    if not recipe.data.cache:
        return "off (data.cache: false)"
    for split, source in recipe.data.sources():
        if source.local_files() is None:
            return (f"not used (data.{split} is {source.describe()}, not local files named one by one whose content "
                    "hftk can hash; datasets' own cache keeps such data)")
    if not task.cache_prepared:
        return f"not used (task {task.name} sets cache_prepared = False: its prepare keeps state outside the datasets)"
    return None


def unsaveable(prepared: Any) -> str | None:
    """Why `prepared` cannot be saved and read back as it is, or None."""
    from datasets import Dataset, DatasetDict

    if not isinstance(prepared, DatasetDict):
        return f"is a {type(prepared).__name__}, not a DatasetDict"
    for name, split in prepared.items():
        if not isinstance(split, Dataset):
            return f"holds a {type(split).__name__} as {name}, not a Dataset"
        if split.format["type"] == "custom":
            return f"transforms {name} on the fly (set_transform / with_transform), which cannot be saved"
    return None


# --------------------------------------------------------------------------------------------
# Helpers


@contextlib.contextmanager
def _warnings_recorded() -> Iterator[list[str]]:
    """The warnings hftk logs meanwhile (a cache hit prints them again)."""
    handler = _Recorder(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


class _Recorder(logging.Handler):
    """Keeps the messages of the records it handles."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _remove(entry: Path) -> None:
    """Move `entry` aside (one rename), then delete it."""
    aside = entry.parent / f"{INCOMPLETE}removed-{uuid.uuid4().hex[:8]}"
    with contextlib.suppress(OSError):
        os.rename(entry, aside)
        shutil.rmtree(aside, ignore_errors=True)


def _sweep(folder: Path) -> None:
    """Delete .incomplete-* directories left by writes interrupted more than a day ago."""
    now = time.time()
    for leftover in folder.glob(f"{INCOMPLETE}*"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
