"""Data: load the recipe's splits, map columns to task roles, clean text, carve a validation split.

Splits come from local files (json, jsonl, csv, tsv, parquet, txt) or from ``datasets.load_dataset``
arguments (a hub dataset for users with a network). Columns named in ``data.columns`` are renamed
to the task's role names (``text``, ``label``, ``source``, ...) so task code only ever sees roles;
a missing column is a :class:`~hf_toolkit.errors.DataError` that lists the columns that exist.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from hf_toolkit.errors import DataError, did_you_mean
from hf_toolkit.recipe import DataSection, DataSource, resolve_path

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".txt": "text"}
_HTML_TAG = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")


def load_source(source: DataSource) -> "Dataset":
    """Load one split from a local file or from ``load_dataset`` arguments."""
    import datasets

    if source.file is not None:
        path = resolve_path(source.file)
        suffix = path.suffix.lower()
        if path.stat().st_size == 0:
            raise DataError(f"{source.file} is empty; give a file with at least one row")
        options: dict = {"delimiter": "\t"} if suffix == ".tsv" else {}
        if suffix == ".txt":
            # Keep line breaks: packed causal-LM blocks should see the text as it is written.
            options["keep_linebreaks"] = True
        try:
            return datasets.load_dataset(_BUILDERS[suffix], data_files=str(path), split="train", **options)
        except (ValueError, datasets.exceptions.DatasetGenerationError) as error:
            raise DataError(f"cannot read {source.file} as {_BUILDERS[suffix]}: {error}") from None
    try:
        dataset = datasets.load_dataset(
            source.path, source.name, split=source.split or "train", data_files=source.data_files
        )
    except (ConnectionError, FileNotFoundError) as error:
        raise DataError(
            f"cannot load dataset '{source.path}': {error}\n"
            "  The Hugging Face hub may be unreachable: download the data and point data.train at a local file."
        ) from None
    return dataset


def load_splits(data: DataSection, roles: tuple[str, ...], *, seed: int, optional_roles: tuple[str, ...] = ()) -> "DatasetDict":
    """Load train/validation/test, keep and rename the role columns, clean text, carve validation.

    `roles` must all be present; `optional_roles` are kept when present (e.g. ``text_pair``).
    """
    from datasets import DatasetDict

    splits = DatasetDict()
    for name in ("train", "validation", "test"):
        source = getattr(data, name)
        if source is None:
            continue
        dataset = load_source(source)
        if len(dataset) == 0:
            raise DataError(f"data.{name}: {_describe(source)} has no rows")
        splits[name] = select_roles(dataset, data.columns, roles, optional_roles, where=f"data.{name} ({_describe(source)})")
    if data.validation_split is not None:
        carved = splits["train"].train_test_split(test_size=data.validation_split, seed=seed)
        splits["train"], splits["validation"] = carved["train"], carved["test"]
    limits = {"train": data.max_train_samples, "validation": data.max_eval_samples, "test": data.max_eval_samples}
    for name, limit in limits.items():
        if name in splits and limit is not None and limit < len(splits[name]):
            splits[name] = splits[name].select(range(limit))
    if data.strip_html or data.normalize_whitespace:
        splits = splits.map(
            _cleaner(data, [r for r in ("text", "text_pair", "source", "target", "question", "context") if r in roles + optional_roles]),
            desc="Cleaning text",
        )
    return splits


def select_roles(dataset: "Dataset", columns: dict[str, str], roles: tuple[str, ...], optional_roles: tuple[str, ...] = (), *, where: str) -> "Dataset":
    """Keep the columns the task needs and rename them to their role names."""
    available = list(dataset.column_names)
    rename, missing = {}, []
    for role in roles + optional_roles:
        column = columns[role] if role in columns else role
        if column in available:
            rename[column] = role
        elif role in roles or role in columns:
            missing.append((role, column))
    if missing:
        lines = [
            f"column '{column}' (role {role}) not found{did_you_mean(column, available)}"
            for role, column in missing
        ]
        raise DataError(
            f"{where}: " + "; ".join(lines) + f".\n  Columns in the file: {', '.join(available)}.\n"
            f"  Map roles to columns in the recipe, e.g. data.columns: {{{missing[0][0]}: {available[0]}}}"
        )
    dataset = dataset.select_columns(list(rename))
    return dataset.rename_columns({c: r for c, r in rename.items() if c != r})


def _cleaner(data: DataSection, fields: list[str]):
    def clean(example: dict) -> dict:
        for field in fields:
            if field not in example or not isinstance(example[field], str):
                continue
            example[field] = clean_text(
                example[field], strip_html=data.strip_html, normalize_whitespace=data.normalize_whitespace
            )
        return example

    return clean


def clean_text(text: str, *, strip_html: bool, normalize_whitespace: bool) -> str:
    """The cleaning `load_splits` applies, for one string."""
    if strip_html:
        text = html.unescape(_HTML_TAG.sub(" ", text))
    if normalize_whitespace:
        text = _SPACES.sub(" ", text).strip()
    return text


def _describe(source: DataSource) -> str:
    return source.file if source.file is not None else f"load_dataset({source.path!r}, {source.name!r})"
