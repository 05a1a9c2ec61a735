"""The recipe schema: pass one of the recipe checks, the shape only, with no I/O.

Every section is a strict pydantic model: unknown keys and type coercion ("1" for 1) are errors,
ranges are checked, and so are rules across keys (validation data given twice, a pair of models
for a task that takes one). Whether files exist, hub ids resolve or model configs accept their
overrides is pass two (:mod:`hf_toolkit.recipe.environment`, :mod:`hf_toolkit.recipe.checks`).

The ``data`` section is the task's own model: :class:`DataSection` holds what every task reads
(splits, columns, cleaning, sample limits), and each task in :mod:`hf_toolkit.tasks` subclasses
it with its options and their defaults, so an option of another task is an unknown key.
:func:`recipe_model` builds the recipe class for one task's data section.
"""

from __future__ import annotations

import functools
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    field_validator,
    model_validator,
)

LOCAL_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt")
# load_dataset builders that read local files (``path: json`` + ``data_files``): no hub involved.
HASHED_BUILDERS = ("json", "csv", "parquet", "text")
"""``load_dataset`` builders whose output depends only on the files they read and their arguments."""
PACKAGED_BUILDERS = ("json", "csv", "parquet", "text", "arrow", "pandas", "webdataset", "imagefolder", "audiofolder")


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
    allow_pickle: bool = Field(False, description="As model.allow_pickle, for this side.")
    trust_remote_code: bool = Field(False, description="As model.trust_remote_code, for this side.")

    @model_validator(mode="after")
    def _consistent(self) -> "ModelPart":
        if self.init == "pretrained" and self.name_or_path is None:
            raise ValueError("name_or_path is required with init: pretrained (or set init: scratch with config.model_type)")
        if self.init == "scratch" and self.name_or_path is None and "model_type" not in self.config:
            raise ValueError("init: scratch without name_or_path needs config.model_type (e.g. config: {model_type: bert})")
        return self


# Keys of `model` that describe a single model; with model.encoder/decoder they belong to each side.
SINGLE_MODEL_KEYS = ("name_or_path", "tokenizer", "init", "config")


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
    allow_pickle: bool = Field(
        False, description="Load pickle weights (pytorch_model.bin), which can run code when loaded; default: safetensors only."
    )
    attn_implementation: str | None = Field(
        None, description="Attention kernel: 'sdpa' (transformers' default), 'eager', 'flex_attention', or on CUDA GPUs "
        "'flash_attention_2'/'flash_attention_3' (need the flash-attn package); null: the default.")
    trust_remote_code: bool = Field(
        False, description="Run the model repository's own Python code (auto_map); only for repositories you trust."
    )

    @property
    def is_pair(self) -> bool:
        """True for an encoder-decoder pair (model.encoder + model.decoder)."""
        return self.encoder is not None or self.decoder is not None

    def parts(self) -> list[tuple[str, "ModelSection | ModelPart"]]:
        """(key, section) of each model the recipe builds: ``model``, or ``model.encoder`` and ``model.decoder``."""
        if self.is_pair:
            return [(f"model.{side}", part) for side, part in (("encoder", self.encoder), ("decoder", self.decoder)) if part]
        return [("model", self)]

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
        if self.file is not None and PurePath(self.file).suffix.lower() not in LOCAL_FILE_SUFFIXES:
            raise ValueError(f"'{self.file}' has an unsupported extension; use one of {', '.join(LOCAL_FILE_SUFFIXES)}")
        return self

    def describe(self) -> str:
        """The file, or the load_dataset call, for messages."""
        if self.file is not None:
            return self.file
        given = {"data_files": self.data_files, "split": self.split}
        return f"load_dataset({self.path!r}, {self.name!r}{''.join(f', {k}={v!r}' for k, v in given.items() if v is not None)})"

    def local_files(self) -> list[Path] | None:
        """The files this split is read from, when all are local files named one by one: the local
        file, or the files a :data:`HASHED_BUILDERS` builder's ``data_files`` name, each an existing
        file (relative to the working directory, as ``load_dataset`` reads them). None otherwise (a
        hub dataset, a pattern, a URL): what hftk can hash to know the data by its content."""
        from hf_toolkit.recipe.paths import resolve_path

        if self.file is not None:
            return [resolve_path(self.file)]
        if self.path not in HASHED_BUILDERS or self.data_files is None:
            return None
        values = self.data_files.values() if isinstance(self.data_files, dict) else [self.data_files]
        names = [name for value in values for name in ([value] if isinstance(value, str) else value)]
        if not names or any(any(mark in name for mark in "*?[") or "://" in name for name in names):
            return None
        paths = [Path(name) for name in names]
        return paths if all(path.is_file() for path in paths) else None

    def dump(self) -> str | dict[str, Any]:
        """As written in a recipe: the file name alone, or the load_dataset arguments that are set."""
        return self.file if self.file is not None else self.model_dump(mode="json", exclude_none=True)


class DataSection(Section):
    """What every task reads from ``data``: the splits, column mapping, cleaning and sample limits.

    Each task subclasses it with its own options (see :mod:`hf_toolkit.tasks`).
    """

    train: DataSource | None = None
    validation: DataSource | None = None
    test: DataSource | None = None
    # Any role name here: which roles a task reads is the task's (Task.check_recipe names them).
    columns: dict[str, str] = Field(default_factory=dict, description="Task role -> column name.")
    validation_split: float | None = Field(None, gt=0, lt=1, description="Carve this share of train for validation.")
    strip_html: bool = Field(False, description="Read text columns as HTML and keep the text a reader sees: script, "
                             "style and head content dropped, entities unescaped, words broken only at block elements.")
    normalize_whitespace: bool = Field(False, description="Collapse runs of whitespace into one space.")
    max_train_samples: int | None = Field(None, ge=1, description="Keep only the first N training examples.")
    max_eval_samples: int | None = Field(None, ge=1, description="Keep only the first N validation/test examples.")
    drop_empty: bool = Field(False, description="Drop rows whose text (or target, question...) is empty after cleaning, "
                             "instead of stopping with their row numbers.")
    encoding: str = Field("utf-8", min_length=1, description="Text encoding of local data files (e.g. latin-1, cp1252).")
    cache: bool = Field(True, description="Keep the loaded and tokenized splits in hftk's preprocessing cache "
                        "($HFTK_CACHE, default ~/.cache/hftk), so the next run of the same data and options skips "
                        "reading and tokenizing; false: neither read nor write it.")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}; use e.g. utf-8, latin-1, cp1252, utf-16") from None
        return value

    @model_validator(mode="after")
    def _splits(self) -> "DataSection":
        if self.train is None:
            raise ValueError("data.train is required")
        if self.validation is not None and self.validation_split is not None:
            raise ValueError("set data.validation or data.validation_split, not both")
        return self

    @property
    def has_validation(self) -> bool:
        return self.validation is not None or self.validation_split is not None

    def sources(self) -> list[tuple[str, DataSource]]:
        """(split name, source) of every split the recipe gives."""
        return [(name, source) for name in ("train", "validation", "test") if (source := getattr(self, name)) is not None]


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

    def given(self) -> dict[str, Any]:
        """The settings the recipe sets (None: the model's own default)."""
        return self.model_dump(exclude_none=True)


class SweepRange(Section):
    """A numeric range of ``sweep.space``: integers when low and high (and step) are integers, else floats."""

    low: int | float
    high: int | float
    log: bool = Field(False, description="Sample on a log scale (low must be > 0).")
    step: int | float | None = Field(None, gt=0, description="Sample only low, low + step, ... (not with log).")

    @model_validator(mode="after")
    def _ordered(self) -> "SweepRange":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("step and log: true go separately (Optuna samples a log range continuously)")
        return self

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step or 1))


SweepChoice = str | int | float | bool | None


# pydantic puts the tag of a union member into an error's location; problems.py leaves them out.
SPEC_TAGS = ("<range>", "<choices>")


def _spec_kind(value: Any) -> str | None:
    return SPEC_TAGS[0] if isinstance(value, (dict, SweepRange)) else SPEC_TAGS[1] if isinstance(value, list) else None


# A space entry is a range (a mapping) or a list of choices; anything else gets one clear message.
SweepSpec = Annotated[
    Annotated[SweepRange, Tag(SPEC_TAGS[0])] | Annotated[list[SweepChoice], Field(min_length=1), Tag(SPEC_TAGS[1])],
    Discriminator(_spec_kind, custom_error_type="sweep_spec", custom_error_message=(
        "give a list of choices ([4, 8, 16]) or a range ({low: 1.0e-5, high: 3.0e-4, log: true})")),
]
# Recipe keys a trial may not take from the space: the sweep sets them itself.
SWEEP_OWNED_KEYS = ("sweep", "training.output_dir", "training.resume_from_checkpoint")


class SweepSection(Section):
    """``hftk sweep``: a hyperparameter search on Optuna, each trial an ordinary run of this recipe
    with the space's values (see :mod:`hf_toolkit.training.sweep`). ``hftk finetune`` ignores nothing
    here: it trains the recipe's own values and says the section is the sweep's."""

    metric: str = Field(min_length=1, description="The key of the run's metrics.json to optimize, e.g. eval_accuracy.")
    direction: Literal["maximize", "minimize"]
    trials: int = Field(ge=1, description="Trials in the study (finished or pruned), whatever the number of workers.")
    space: dict[str, SweepSpec] = Field(
        min_length=1, description="Recipe key path -> a list of choices or {low, high, log, step}.")
    pruner: Literal["median"] | None = Field(None, description="median: stop a trial whose evaluation falls below the "
                                             "median of earlier trials at the same step.")
    startup_trials: int = Field(2, ge=0, description="Trials finished before the pruner judges any.")
    warmup_evaluations: int = Field(0, ge=0, description="Evaluations of a trial before the pruner judges it.")
    seed: int | None = Field(None, ge=0, description="Seeds the sampler; default: the recipe's seed.")


class DistillationSection(Section):
    """Knowledge distillation: the student (``model``) also learns the teacher's softened outputs.

    loss = alpha x KL(teacher || student, both softmaxed at ``temperature``) x temperature^2
    + (1 - alpha) x the task's own loss, on the positions that carry a label (text-classification,
    question-answering start and end logits, masked-LM, causal-LM; see
    :mod:`hf_toolkit.training.distillation`).
    """

    teacher: str = Field(description="The teacher: a run directory, local model directory or hub id, trained for the same task.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of both models' outputs in the soft loss.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the soft (KL) loss; 1 - alpha weighs the task's loss on the labels.")


class Recipe(Section):
    """A whole run. ``data`` is the task's own section (see :func:`recipe_model`)."""

    task: str = Field(description="The task; one of hf_toolkit.tasks.TASKS (checked by hf_toolkit.recipe.checks).")
    seed: int = Field(42, ge=0, lt=2**32, description="Seeds data shuffling and weight initialisation.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] | None = Field(
        None, description="Mixed precision; 'auto' picks bf16/fp16/fp32 for the hardware. None: bf16 where the hardware "
        "runs it natively, else fp32 (training.bf16/fp16 as written when set)."
    )
    model: ModelSection
    data: DataSection
    training: dict[str, Any] = Field(default_factory=dict, description="TrainingArguments.")
    peft: PeftSection | None = None
    generation: GenerationSection = Field(default_factory=GenerationSection)
    sweep: SweepSection | None = Field(None, description="hftk sweep's search (hftk finetune trains the recipe's own values).")
    distillation: DistillationSection | None = None

    @model_validator(mode="after")
    def _lora_needs_saved_base(self) -> "Recipe":
        if self.peft is not None and self.model.init == "scratch":
            raise ValueError(
                "peft: LoRA adapts pretrained weights, but init: scratch builds weights that are never saved "
                "next to the adapter; train without peft, or point model.name_or_path at a saved model"
            )
        return self

    def dump(self) -> dict[str, Any]:
        """The resolved recipe as plain data, every default filled in (null: derived from the model
        or data at run time), for saving next to a model."""
        data = self.model_dump(mode="json")
        for split, source in self.data.sources():
            data["data"][split] = source.dump()
        single = set(SINGLE_MODEL_KEYS) if self.model.is_pair else set()  # a pair sets them per side
        data["model"] = self.model.model_dump(mode="json", exclude_none=True, exclude=single)
        data["generation"] = self.generation.given()
        if self.sweep is None:  # a trial, like any run, saves no sweep section
            del data["sweep"]
        return data


@functools.cache
def recipe_model(data_class: type[DataSection]) -> type[Recipe]:
    """The Recipe class whose ``data`` section is `data_class` (one task's options).

    Named in this module, so it pickles by reference: ``datasets`` hashes the map functions that
    use a recipe to key its cache, and a class it cannot pickle would defeat the cache.
    """
    name = f"Recipe_{data_class.__module__.replace('.', '_')}_{data_class.__qualname__}"
    model = create_model(name, __base__=Recipe, __module__=__name__, data=(data_class, ...))
    globals()[name] = model
    return model


def section_at(root: type[BaseModel], loc: tuple[str, ...]) -> type[BaseModel] | None:
    """The schema class at a key path below `root`, to list its allowed keys (None: free-form)."""
    import typing

    model: type[BaseModel] | None = root
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = next(
            (a for a in typing.get_args(annotation) or (annotation,) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
    return model
