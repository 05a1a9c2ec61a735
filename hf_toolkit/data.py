"""Data: load the recipe's splits, map columns to task roles, clean text, carve a validation split.

Splits come from local files (json, jsonl, csv, tsv, parquet, txt) or from ``datasets.load_dataset``
arguments (a hub dataset for users with a network). A task may reshape the rows first (its
``read_rows``: translation reads the ``{"translation": {...}}`` format), then columns named in
``data.columns`` are renamed to the task's role names (``text``, ``label``, ``source``, ...) so
task code only ever sees roles; a missing column is a :class:`~hf_toolkit.errors.DataError` that
lists the columns that exist.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from collections.abc import Callable

from hf_toolkit import hub
from hf_toolkit.errors import DataError, did_you_mean
from hf_toolkit.recipe.paths import resolve_path
from hf_toolkit.recipe.schema import PACKAGED_BUILDERS, DataSection, DataSource

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".txt": "text"}
_HTML_TAG = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")
# Roles holding text that data.strip_html / data.normalize_whitespace clean.
TEXT_ROLES = ("text", "text_pair", "source", "target", "question", "context")


def load_source(source: DataSource, where: str = "data") -> "Dataset":
    """Load one split from a local file or from ``load_dataset`` arguments (`where` names it in errors).

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
        if suffix == ".json" and _looks_like_squad(path):
            return load_squad_json(path)
        try:
            return datasets.load_dataset(_BUILDERS[suffix], data_files=str(path), split="train", **options)
        except (ValueError, datasets.exceptions.DatasetGenerationError) as error:
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


# --------------------------------------------------------------------------------------------
# The official SQuAD JSON layout (nested articles -> paragraphs -> questions)

_SQUAD_START = re.compile(r'\A\s*\{\s*"(version|data)"')


def _looks_like_squad(path) -> bool:
    """A .json file that opens like SQuAD's ``{"version": ..., "data": [...]}`` (cheap: reads 4 KB)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return bool(_SQUAD_START.match(handle.read(4096)))


def load_squad_json(path) -> "Dataset":
    """Flatten a SQuAD v1.1/v2.0 file into rows ``id, title, context, question, answers``.

    ``answers`` takes the ``datasets`` SQuAD layout ``{"text": [...], "answer_start": [...]}``;
    unanswerable v2.0 questions (``is_impossible``) get empty lists. A ``data`` list that already
    holds flat rows (``{"version": ..., "data": [{id, question, context, answers}, ...]}``, as in
    transformers' test fixtures) is read as it is.
    """
    import json

    from datasets import Dataset, Features, Sequence, Value

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
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
                read_rows: RowReader = _as_is) -> "DatasetDict":
    """Load train/validation/test, keep and rename the role columns, clean text, carve validation.

    `roles` must all be present; `optional_roles` are kept when present (e.g. ``text_pair``);
    `read_rows` is the task's reshaping of rows as loaded (see the module docstring).
    """
    from datasets import DatasetDict

    splits = DatasetDict()
    for name, source in data.sources():
        where = f"data.{name} ({source.describe()})"
        dataset = load_source(source, where)
        if len(dataset) == 0:
            raise DataError(f"data.{name}: {source.describe()} has no rows")
        dataset = read_rows(dataset, data, where=where)
        splits[name] = select_roles(dataset, data.columns, roles, optional_roles, where=where)
    if data.validation_split is not None:
        carved = splits["train"].train_test_split(test_size=data.validation_split, seed=seed)
        splits["train"], splits["validation"] = carved["train"], carved["test"]
    limits = {"train": data.max_train_samples, "validation": data.max_eval_samples, "test": data.max_eval_samples}
    for name, limit in limits.items():
        if name in splits and limit is not None and limit < len(splits[name]):
            splits[name] = splits[name].select(range(limit))
    if data.strip_html or data.normalize_whitespace:
        splits = splits.map(
            _cleaner(data, [r for r in TEXT_ROLES if r in roles + optional_roles]),
            desc="Cleaning text",
        )
    return splits


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
        raise DataError(
            f"{where}: " + "; ".join(lines) + f".\n  Columns in the file: {', '.join(available)}.\n"
            "  " + how_to_map.format(role=missing[0][0], column=available[0])
        )
    dataset = dataset.select_columns(list(rename))
    return dataset.rename_columns({c: r for c, r in rename.items() if c != r})


def eval_rows(
    dataset: "Dataset", data: DataSection | None, roles: tuple[str, ...], optional_roles: tuple[str, ...] = (),
    *, where: str, how_to_map: str, read_rows: RowReader = _as_is,
) -> "Dataset":
    """Rows scored or predicted by a trained run (``hftk eval --model``, ``hftk predict --file``),
    prepared as :func:`load_splits` prepared the run's splits: the translation format flattened,
    role columns, text cleaned as the run's recipe (`data`, None for a plain model dir) says.

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
        dataset = dataset.map(_cleaner(data, [r for r in TEXT_ROLES if r in dataset.column_names]), desc="Cleaning text")
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


def clean_text(text: str, *, strip_html: bool, normalize_whitespace: bool) -> str:
    """The cleaning `load_splits` applies, for one string."""
    if strip_html:
        text = html.unescape(_HTML_TAG.sub(" ", text))
    if normalize_whitespace:
        text = _SPACES.sub(" ", text).strip()
    return text
