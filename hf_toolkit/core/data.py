"""Data: load the recipe's splits, map columns to task roles, clean text, carve a validation split.

Splits come from local files (json, jsonl, csv, tsv, parquet, txt) or from ``datasets.load_dataset``
arguments (a hub dataset for users with a network). A task may reshape the rows first (its
``read_rows``: translation reads the ``{"translation": {...}}`` format), then columns named in
``data.columns`` are renamed to the task's role names (``text``, ``label``, ``source``, ...) so
task code only ever sees roles; a missing column is a :class:`~hf_toolkit.errors.DataError` that
lists the columns that exist.

Which roles hold text to clean and which may not be empty is the task's knowledge
(``Task.text_roles``, ``Task.nonempty_roles``); callers pass it in, and this module names no role.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from hf_toolkit.core import datafiles, hub
from hf_toolkit.core.htmltext import html_to_text
from hf_toolkit.errors import DataError, did_you_mean
from hf_toolkit.recipe.paths import resolve_path
from hf_toolkit.recipe.schema import PACKAGED_BUILDERS, DataSection, DataSource

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

logger = logging.getLogger("hftk")

_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".txt": "text"}
_SPACES = re.compile(r"\s+")


def load_source(source: DataSource, where: str = "data", *, encoding: str = "utf-8",
                set_encoding: str = datafiles.SET_IN_RECIPE) -> "Dataset":
    """Load one split from a local file or from ``load_dataset`` arguments (`where` names it in errors).

    A local file in another `encoding` than UTF-8 is decoded by the builder (``data.encoding``);
    a file the builder cannot read is explained by line (:mod:`hf_toolkit.core.datafiles`), and a
    file in another encoding with `set_encoding`: how the command takes one.
    A hub dataset is read from the local cache alone when the hub cannot be reached: the datasets
    library would otherwise retry for half a minute before giving up.
    """
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
        if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            options["encoding"] = encoding  # only then: the datasets cache key of UTF-8 files stays as it was
        if suffix in (".csv", ".tsv"):
            datafiles.check_shape(path, source.file, delimiter=options.get("delimiter", ","), encoding=encoding,
                                  how=set_encoding)
        if suffix == ".json" and _looks_like_squad(path, encoding):
            return load_squad_json(path, encoding, set_encoding)
        try:
            with _builder_logs_quiet():  # a failed read is explained below, by line; its logged traceback is not for users
                return datasets.load_dataset(_BUILDERS[suffix], data_files=str(path), split="train", **options)
        except (ValueError, datasets.exceptions.DatasetGenerationError) as error:
            if suffix != ".parquet":
                datafiles.explain_failure(path, source.file, kind=_BUILDERS[suffix], encoding=encoding, how=set_encoding)
            raise DataError(f"cannot read {source.file} as {_BUILDERS[suffix]}: {error}") from None
    on_hub = source.path not in PACKAGED_BUILDERS and not resolve_path(source.path).exists()
    offline = on_hub and not hub.reachable()
    try:
        with hub.cache_only(offline):
            dataset = datasets.load_dataset(source.path, source.name, split=source.split or "train", data_files=source.data_files)
    except (ConnectionError, FileNotFoundError) as error:
        raise DataError(
            f"{where}: cannot load dataset '{source.path}': {error}\n"
            + ("  The Hugging Face hub is unreachable (offline or HF_HUB_OFFLINE=1) and the dataset is not in the local cache: "
               "download it where there is a network, or point the recipe at local files (json, jsonl, csv, tsv, parquet, txt)."
               if offline else "  Check the dataset name, config name and split.")
        ) from None
    return dataset


@contextlib.contextmanager
def _builder_logs_quiet():
    """The packaged builders (json, csv, text) log a traceback when a file cannot be read."""
    builders = logging.getLogger("datasets.packaged_modules")
    level = builders.level
    builders.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        builders.setLevel(level)


# --------------------------------------------------------------------------------------------
# The official SQuAD JSON layout (nested articles -> paragraphs -> questions)

_SQUAD_START = re.compile(r'\A\s*\{\s*"(version|data)"')


def _looks_like_squad(path, encoding: str = "utf-8") -> bool:
    """A .json file that opens like SQuAD's ``{"version": ..., "data": [...]}`` (cheap: reads 4 KB)."""
    with open(path, encoding=encoding, errors="replace") as handle:
        return bool(_SQUAD_START.match(handle.read(4096)))


def load_squad_json(path, encoding: str = "utf-8", set_encoding: str = datafiles.SET_IN_RECIPE) -> "Dataset":
    """Flatten a SQuAD v1.1/v2.0 file into rows ``id, title, context, question, answers``.

    ``answers`` takes the ``datasets`` SQuAD layout ``{"text": [...], "answer_start": [...]}``;
    unanswerable v2.0 questions (``is_impossible``) get empty lists. A ``data`` list that already
    holds flat rows (``{"version": ..., "data": [{id, question, context, answers}, ...]}``, as in
    transformers' test fixtures) is read as it is.
    """
    import json

    from datasets import Dataset, Features, Sequence, Value

    try:
        document = json.loads(path.read_text(encoding=encoding))
    except UnicodeDecodeError:
        datafiles.explain_failure(path, str(path), kind="text", encoding=encoding, how=set_encoding)
        raise
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg}, column {error.colno})") from None
    articles = document["data"] if isinstance(document, dict) and isinstance(document.get("data"), list) else None
    if articles is None:
        raise DataError(f'{path}: expected SQuAD JSON {{"version": ..., "data": [...]}}')
    if articles and "paragraphs" not in articles[0]:
        return Dataset.from_list(articles)
    rows = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible", False) else qa["answers"]
                rows.append({
                    "id": str(qa["id"]),
                    "title": str(article.get("title", "")),
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {"text": [a["text"] for a in answers], "answer_start": [int(a["answer_start"]) for a in answers]},
                })
    if not rows:
        raise DataError(f"{path}: no questions found in the SQuAD JSON")
    features = Features({
        "id": Value("string"), "title": Value("string"), "context": Value("string"), "question": Value("string"),
        "answers": {"text": Sequence(Value("string")), "answer_start": Sequence(Value("int32"))},
    })
    return Dataset.from_list(rows, features=features)


RowReader = Callable[..., "Dataset"]


def _as_is(dataset: "Dataset", data: DataSection, *, where: str) -> "Dataset":
    return dataset


def load_splits(data: DataSection, roles: tuple[str, ...], *, seed: int, optional_roles: tuple[str, ...] = (),
                read_rows: RowReader = _as_is, text_roles: tuple[str, ...] | None = None,
                nonempty_roles: tuple[str, ...] | None = None) -> "DatasetDict":
    """Load train/validation/test, keep and rename the role columns, clean text, carve validation.

    `roles` must all be present; `optional_roles` are kept when present (e.g. ``text_pair``);
    `read_rows` is the task's reshaping of rows as loaded (see the module docstring). The task's
    `text_roles` are cleaned as ``data.strip_html`` / ``data.normalize_whitespace`` say (None: every
    role; only string values change), and a row with an empty value in one of its `nonempty_roles`
    is refused or, with ``data.drop_empty``, dropped (None: `roles`).
    """
    from datasets import DatasetDict

    splits = DatasetDict()
    for name, source in data.sources():
        where = f"data.{name} ({source.describe()})"
        dataset = load_source(source, where, encoding=data.encoding)
        if len(dataset) == 0:
            raise DataError(f"data.{name}: {source.describe()} has no rows; give a file with at least one row "
                            "(or remove the split from the recipe)")
        dataset = read_rows(dataset, data, where=where)
        dataset = select_roles(dataset, data.columns, roles, optional_roles, where=where)
        if data.strip_html or data.normalize_whitespace:
            cleaned = _present(dataset, roles + optional_roles if text_roles is None else text_roles)
            dataset = dataset.map(_cleaner(data, list(cleaned)), desc="Cleaning text")
        lines = functools.partial(_row_lines, source, data.encoding)  # read again only to explain empty rows
        nonempty = roles if nonempty_roles is None else nonempty_roles
        splits[name] = without_empty_rows(dataset, _present(dataset, nonempty), drop=data.drop_empty, where=where, lines=lines)
    if data.validation_split is not None:
        carved = splits["train"].train_test_split(test_size=data.validation_split, seed=seed)
        splits["train"], splits["validation"] = carved["train"], carved["test"]
    limits = {"train": data.max_train_samples, "validation": data.max_eval_samples, "test": data.max_eval_samples}
    for name, limit in limits.items():
        if name in splits and limit is not None and limit < len(splits[name]):
            splits[name] = splits[name].select(range(limit))
    return splits


def _present(dataset: Dataset, roles: tuple[str, ...]) -> tuple[str, ...]:
    """`roles` that are columns of `dataset` (an optional role may be absent)."""
    return tuple(role for role in roles if role in dataset.column_names)


def _is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def without_empty_rows(dataset: "Dataset", roles: tuple[str, ...], *, drop: bool, where: str,
                       lines: Callable[[], list[int] | None] | None = None) -> "Dataset":
    """`dataset` when no row has an empty (or null) value in `roles`; else a DataError with their
    count and first row numbers (and their line numbers in the file, from `lines()`, when known), or with
    `drop` (``data.drop_empty``) the dataset without them."""
    if not roles:
        return dataset
    columns = {role: dataset[role] for role in roles}
    empty = [i for i in range(len(dataset)) if any(_is_empty(columns[role][i]) for role in roles)]
    if not empty:
        return dataset
    found = [role for role in roles if any(_is_empty(columns[role][i]) for i in empty)]
    missing = any(columns[role][i] is None for role in found for i in empty)
    what = ("a missing or empty " if missing else "an empty ") + " or ".join(found)
    shown = _shown_rows(empty, lines() if lines is not None else None, len(dataset))
    if not drop:
        raise DataError(f"{where}: {len(empty)} of {len(dataset)} rows have {what} "
                        f"(after cleaning), {shown}; fix them, or set data.drop_empty: true to drop them")
    if len(empty) == len(dataset):
        raise DataError(f"{where}: every row has {what}; nothing is left to train on")
    logger.warning("%s: dropped %d row(s) with %s (data.drop_empty), %s", where, len(empty), what, shown)
    keep = sorted(set(range(len(dataset))) - set(empty))
    return dataset.select(keep)


def _shown_rows(rows: list[int], lines: list[int] | None, total: int) -> str:
    """'rows 2, 4 (lines 3, 5)': the first ten 0-based `rows` numbered from 1, and their lines in the
    file when they differ (`lines` has one entry per row of the `total`, or is not used)."""
    more = " ..." if len(rows) > 10 else ""
    shown = f"rows {', '.join(str(i + 1) for i in rows[:10])}{more}"
    if lines is not None and len(lines) == total and [lines[i] for i in rows[:10]] != [i + 1 for i in rows[:10]]:
        shown += f" (lines {', '.join(str(lines[i]) for i in rows[:10])}{more})"
    return shown


def _row_lines(source: DataSource, encoding: str) -> list[int] | None:
    """The line of a local CSV/TSV/JSONL file on which each row starts; None for other sources."""
    if source.file is None:
        return None
    path = resolve_path(source.file)
    return datafiles.row_lines(path, path.suffix.lower(), encoding)


RECIPE_MAPPING_HINT = "Map roles to columns in the recipe, e.g. data.columns: {{{role}: {column}}}"


def select_roles(
    dataset: "Dataset", columns: dict[str, str], roles: tuple[str, ...], optional_roles: tuple[str, ...] = (),
    *, where: str, how_to_map: str = RECIPE_MAPPING_HINT,
) -> "Dataset":
    """Keep the columns the task needs and rename them to their role names.

    `how_to_map` is the fix a missing column's message suggests, formatted with a missing
    ``role`` and an existing ``column``.
    """
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
        role, column = missing[0]
        raise DataError(
            f"{where}: " + "; ".join(lines) + f".\n  Columns in the file: {', '.join(available)}.\n"
            "  " + how_to_map.format(role=role, column=suggested_column(role, column, available))
        )
    dataset = dataset.select_columns(list(rename))
    return dataset.rename_columns({c: r for c, r in rename.items() if c != r})


def suggested_column(role: str, missing: str, available: list[str]) -> str:
    """The file's column a hint maps `role` to: the one named as the role, else the one named most
    like the missing column or the role, else the first column."""
    if role in available:
        return role
    for name in (missing, role):
        close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
        if close:
            return close[0]
    return available[0]


def eval_rows(
    dataset: "Dataset", data: DataSection | None, roles: tuple[str, ...], optional_roles: tuple[str, ...] = (),
    *, where: str, how_to_map: str, read_rows: RowReader = _as_is, text_roles: tuple[str, ...] | None = None,
) -> "Dataset":
    """Rows scored or predicted by a trained run (``hftk eval --model``, ``hftk predict --file``),
    prepared as :func:`load_splits` prepared the run's splits: the translation format flattened,
    role columns, the task's `text_roles` (None: every role) cleaned as the run's recipe (`data`, None for
    a plain model dir) says.

    A role's column is the one the run's recipe mapped it to when the file has that column, else
    the role's own name, so a file written with role names (``text``, ``label``) always works.
    Called before any model loads, so a missing column fails fast.
    """
    if len(dataset) == 0:
        raise DataError(f"{where}: the file has no rows")
    if data is not None:
        dataset = read_rows(dataset, data, where=where)
    columns = data.columns if data is not None else {}
    available = set(dataset.column_names)
    mapping = {role: columns[role] for role in roles + optional_roles if role in columns and columns[role] in available}
    dataset = select_roles(dataset, mapping, roles, optional_roles, where=where, how_to_map=how_to_map)
    if data is not None and (data.strip_html or data.normalize_whitespace):
        cleaned = _present(dataset, roles + optional_roles if text_roles is None else text_roles)
        dataset = dataset.map(_cleaner(data, list(cleaned)), desc="Cleaning text")
    return dataset


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


def clean_inputs(rows: dict[str, list[str]], data: DataSection | None, text_roles: tuple[str, ...]) -> dict[str, list[str]]:
    """Inputs given as values (``hftk predict --text``, a ``hftk serve`` request), by role, with the
    `text_roles` cleaned as the run's recipe (`data`; None for a plain model dir) cleaned its training
    text, so a model reads what it was trained on however its input arrives (a file's rows are cleaned
    by :func:`eval_rows`)."""
    if data is None or not (data.strip_html or data.normalize_whitespace):
        return rows
    return {role: [clean_text(value, strip_html=data.strip_html, normalize_whitespace=data.normalize_whitespace)
                   for value in values] if role in text_roles else values
            for role, values in rows.items()}


def clean_text(text: str, *, strip_html: bool, normalize_whitespace: bool) -> str:
    """The cleaning `load_splits` applies, for one string."""
    if strip_html:
        text = html_to_text(text)
    if normalize_whitespace:
        text = _SPACES.sub(" ", text).strip()
    return text
