"""Where a run came from, for its model card: the data files (sha256 and rows per split), the
library versions, the command line and the hardware.

:func:`collect` is called by ``hftk finetune`` on rank 0 once the splits are loaded; the model card
(:func:`hf_toolkit.core.rundir.model_card`) prints what it returns. Nothing here imports torch or
transformers at module level; versions are read from the installed distributions.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from hf_toolkit.recipe.schema import Recipe

LIBRARIES = ("hf_toolkit", "torch", "transformers", "datasets", "accelerate", "peft", "tokenizers")


@dataclass
class DataFile:
    split: str
    source: str  # the file as the recipe names it, or the load_dataset call
    sha256: str | None  # None for hub datasets (no single local file)
    rows: int | None  # rows of the split as loaded (after validation_split carving)


@dataclass
class Story:
    """What made a run, as plain data."""

    data: list[DataFile] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    command: str = ""
    working_dir: str = ""
    hardware: dict[str, Any] = field(default_factory=dict)


def collect(recipe: "Recipe", rows: dict[str, int], processes: int = 1) -> Story:
    """The story of a run of `recipe` whose loaded splits have `rows` rows each."""
    files = []
    for split, source in recipe.data.sources():
        named = source.local_files()  # a local file, or a builder's one data file (split: "train[:90%]" of a CSV)
        digest = sha256(named[0]) if named is not None and len(named) == 1 and named[0].is_file() else None
        files.append(DataFile(split, source.describe(), digest, rows.get(split)))
    if recipe.data.validation is None and "validation" in rows:  # carved from train by validation_split
        files.append(DataFile("validation", f"{recipe.data.validation_split:g} of train", None, rows["validation"]))
    return Story(files, versions(), command_line(), os.getcwd(), hardware(processes))


def sha256(path: Path) -> str:
    """The file's sha256, hashed once per process while its size and modification time stay the same
    (the preprocessing cache key and the model card both need it)."""
    stat = os.stat(path)
    identity = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if identity not in _hashed:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _hashed[identity] = digest.hexdigest()
    return _hashed[identity]


_hashed: dict[tuple[str, int, int, int], str] = {}


def versions() -> dict[str, str]:
    """Installed version of each library a run depends on ('not installed' when absent)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = platform.python_version()
    return found


def command_line() -> str:
    """The command as typed: ``hftk finetune recipe.yaml --set ...`` (the program by its name)."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in ("__main__.py", "-m"):
        program = "python -m hf_toolkit"
    return shlex.join([program, *sys.argv[1:]])


def hardware(processes: int = 1) -> dict[str, Any]:
    """CPU model and core count, GPUs (name each) if any, and the number of training processes."""
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "gpus": [], "processes": processes}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"
