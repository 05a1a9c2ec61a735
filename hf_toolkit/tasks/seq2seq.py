"""Sequence-to-sequence tasks (summarization, translation): source text in, target text out.

:class:`Seq2SeqTask` is the base of :mod:`hf_toolkit.tasks.summarization` and
:mod:`hf_toolkit.tasks.translation`, which add their metrics (ROUGE; BLEU + chrF) and, for
translation, the language options. Three model shapes, picked
from the recipe's ``model`` section:

``seq2seq``
    any ``AutoModelForSeq2SeqLM`` checkpoint or config (T5, BART, Marian, mBART, ...). The source
    gets ``data.source_prefix`` (e.g. "summarize: " for T5); targets are tokenized the model's
    way (``text_target=``). Multilingual tokenizers (mBART-50, M2M100, NLLB) get
    ``data.source_lang``/``target_lang`` as their language codes, and generation forces the
    target language code as first token when the tokenizer puts it there.
``pair``
    ``model.encoder`` + ``model.decoder``: a transformers ``EncoderDecoderModel`` warm-started from
    two checkpoints (BERT2BERT, BERT2GPT2, ...). The encoder's tokenizer reads the source, the
    decoder's writes the target; generation starts from the decoder tokenizer's BOS (or [CLS]) and
    stops at its EOS (or [SEP]). A decoder tokenizer that differs from the encoder's
    (:meth:`Seq2SeqTask.target_tokenizer`) is saved in the run directory.
``decoder-only``
    a causal LM (GPT-2, ...) with ``data.prompt_template``: the model reads
    ``template.format(source=...)`` then the target and an EOS token; the loss covers the target
    and EOS only (prompt labels are -100). Evaluation generates from the prompt and stops at EOS.

Lengths: ``data.max_source_length`` (tokens of the source; default 1024, or for decoder-only what
fits beside the target in the model's context) and ``data.max_target_length`` (target tokens,
EOS included; default 128). Padding never counts in the loss (labels are padded with -100).

Evaluation during training generates with the model's generation config, i.e. the recipe's
``generation`` section (default ``max_new_tokens`` = ``data.max_target_length``), the same
settings ``hftk generate`` and ``hftk eval --model`` read from the saved
``generation_config.json``. It reports the task's metrics plus ``gen_len``, the mean number of
generated tokens before EOS. Its references are the label ids decoded back to text, so a target
longer than ``data.max_target_length`` is scored cut short there, while ``hftk eval --model``
scores against the text itself: keep max_target_length above the longest reference and the two
agree.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from hf_toolkit import metrics as metrics_lib
from hf_toolkit.core import modeling, readable
from hf_toolkit.errors import DataError, Problem, RecipeError
from hf_toolkit.recipe.schema import DataSection, ModelPart, Recipe
from hf_toolkit.tasks.base import IGNORE_INDEX, LENGTH_GROUPED, Task

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

DEFAULT_MAX_SOURCE_LENGTH = 1024


class Seq2SeqData(DataSection):
    """``data`` options of summarization and translation."""

    max_source_length: int | None = Field(None, ge=1, description="Source tokens kept; null: 1024, or for decoder-only "
                                                                  "what fits beside template and target.")
    max_target_length: int = Field(128, ge=1, description="Target tokens kept, EOS included.")
    source_prefix: str | None = Field(None, description="Encoder-decoder models: text put before each source ('summarize: ').")
    prompt_template: str | None = Field(None, description="Decoder-only models: the prompt, with {source} where the source goes.")

    @field_validator("prompt_template")
    @classmethod
    def _one_source_field(cls, value: str | None) -> str | None:
        """A prompt template holds `{source}` once and no other `{field}` (write `{{`/`}}` for braces)."""
        if value is None:
            return value
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


class Seq2SeqTask(Task):
    """Source text in, target text out; subclasses name their metrics (and options)."""

    Data = Seq2SeqData
    auto_class = "AutoModelForSeq2SeqLM"  # the encoder-decoder shapes; decoder-only: see auto_model
    roles = ("source", "target")
    target_roles = ("target",)
    text_roles = ("source", "target")  # the target is text too: cleaned as the source is
    seq2seq_trainer = True
    # Generic PeftModel: the same adapters work for all three shapes.
    peft_task_type = None
    # Evaluation generates text to score.
    training_defaults = {"predict_with_generate": True, **LENGTH_GROUPED}
    generates = True
    continues_prompt = False
    accepts_model_pair = True
    # Both seq2seq tasks have these heads: a model directory without a recipe serves either.
    architectures = ("ForConditionalGeneration", "EncoderDecoderModel")

    def auto_model(self, recipe: Recipe | None = None):
        """AutoModelForSeq2SeqLM for the encoder-decoder shapes (an EncoderDecoderModel loads with it
        too), AutoModelForCausalLM for decoder-only."""
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        if recipe is not None and shape(recipe) == "decoder-only":
            return AutoModelForCausalLM
        return AutoModelForSeq2SeqLM

    def check_environment(self, recipe: Recipe) -> list[Problem]:
        """Data options that do not fit the model's shape (reads the model config only, no weights)."""
        return shape_problems(recipe, shape(recipe))

    def build_model(self, recipe: Recipe, splits: "DatasetDict"):
        """(tokenizer, model) for the recipe's shape; the tokenizer is the one that reads sources."""
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        kind = shape(recipe)  # its options were checked with the recipe (check_environment)
        texts = _tokenizer_training_texts(recipe, splits) if recipe.model.train_tokenizer is not None else None
        if kind == "pair":
            tokenizer, model = _build_pair(recipe, texts)
        else:
            tokenizer = modeling.load_tokenizer(recipe.model, texts)
            auto_class = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
            model = modeling.load_model(auto_class, recipe.model, tokenizer)
            if kind == "seq2seq" and recipe.model.init == "scratch":
                _scratch_special_ids(model, tokenizer)
            if kind == "seq2seq":
                self.adapt_model(recipe, tokenizer, model)
        config = model.generation_config
        if recipe.generation.max_new_tokens is None and config.max_new_tokens is None and config.max_length is None:
            config.max_new_tokens = recipe.data.max_target_length
        return tokenizer, model

    def adapt_model(self, recipe: Recipe, tokenizer, model) -> None:
        """Task settings of an encoder-decoder checkpoint's tokenizer and model (translation: languages)."""

    def target_tokenizer(self, recipe: Recipe, tokenizer):
        """The decoder's tokenizer for a pair with two tokenizers, else `tokenizer`."""
        return _side_tokenizer(recipe.model.decoder) if _has_own_decoder_tokenizer(recipe) else tokenizer

    def encode_prompts(self, recipe: Recipe | None, tokenizer, model, prompts: list[str]) -> list[list[int]]:
        """Model input ids for source texts: training and ``hftk generate`` both encode through here."""
        if recipe is None:
            return super().encode_prompts(recipe, tokenizer, model, prompts)
        return encode_sources(recipe, tokenizer, model, prompts)

    def prepare(self, recipe: Recipe, splits: "DatasetDict", tokenizer, model) -> "DatasetDict":
        """Tokenize every split into input_ids / attention_mask / labels (see the module docstring)."""
        writer = self.target_tokenizer(recipe, tokenizer)
        decoder_only = model_shape(model) == "decoder-only"

        def encode(batch: dict[str, list]) -> dict[str, list]:
            for role in self.roles:
                bad = next((i for i, value in enumerate(batch[role]) if not isinstance(value, str)), None)
                if bad is not None:
                    raise DataError(f"a {role} value is {batch[role][bad]!r}, not text; remove or fix that row")
            sources = encode_sources(recipe, tokenizer, model, batch["source"])
            targets = encode_targets(recipe, writer, model, batch["target"])
            if decoder_only:
                inputs = [s + t for s, t in zip(sources, targets)]
                labels = [[IGNORE_INDEX] * len(s) + t for s, t in zip(sources, targets)]
            else:
                inputs, labels = sources, targets
            return {"input_ids": inputs, "attention_mask": [[1] * len(row) for row in inputs], "labels": labels}

        return type(splits)({
            name: dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=f"Tokenizing {name}")
            for name, dataset in splits.items()
        })

    def loss_view(self, recipe: Recipe, tokenizer, model, example: dict[str, Any]) -> dict[str, list[tuple[str, bool]]]:
        """Encoder-decoder: the source (no loss) and the target the decoder is trained to write.
        Decoder-only: one sequence, its -100 prompt part carrying no loss (the default view)."""
        if model_shape(model) == "decoder-only":
            return super().loss_view(recipe, tokenizer, model, example)
        writer = self.target_tokenizer(recipe, tokenizer)
        target = [t for t in example["labels"] if t != IGNORE_INDEX]
        return {"source": [(readable.decode(tokenizer, example["input_ids"]), False)], "target": [(readable.decode(writer, target), True)]}

    def truncation_limit(self, recipe: Recipe, tokenizer, model) -> int | None:
        """Sources are cut to data.max_source_length tokens."""
        return max_source_length(recipe, tokenizer, model)

    def trainer_kwargs(self, recipe: Recipe, tokenizer, model) -> dict[str, Any]:
        """Collator padding labels with -100, and generation-based metrics."""
        from transformers import DataCollatorForSeq2Seq

        encoder_decoder = model_shape(model) != "decoder-only"
        # With the model, the collator also builds decoder_input_ids from the labels (shifted right
        # after the decoder start token). An EncoderDecoderModel left to build them itself also masks
        # every decoder position holding the pad id: when the start token is the pad token (GPT-2's
        # <|endoftext|> is BOS, EOS and pad) training would hide the start token that generation shows.
        kwargs: dict[str, Any] = {
            "data_collator": DataCollatorForSeq2Seq(
                tokenizer, model=model if encoder_decoder else None, label_pad_token_id=IGNORE_INDEX
            )
        }
        if recipe.training.get("predict_with_generate", self.training_defaults["predict_with_generate"]):
            writer = self.target_tokenizer(recipe, tokenizer)
            kwargs["compute_metrics"] = self.metrics_function(recipe, writer, encoder_decoder=encoder_decoder)
        return kwargs

    def metrics_function(self, recipe: Recipe, tokenizer, *, encoder_decoder: bool):
        """compute_metrics for Seq2SeqTrainer: decode generated ids and labels, score, add gen_len."""
        import numpy as np

        options = self.metric_options(recipe)
        eos, pad = end_id(tokenizer), tokenizer.pad_token_id

        def compute_metrics(eval_prediction) -> dict[str, float]:
            predictions = eval_prediction.predictions
            if isinstance(predictions, tuple):
                predictions = predictions[0]
            # Encoder-decoder outputs start with the decoder start token; everything from EOS on is padding.
            rows = [_until(row[1:] if encoder_decoder else row, eos) for row in np.asarray(predictions)]
            texts = readable.batch_decode(tokenizer, [[int(t) for t in row if t >= 0] for row in rows], skip_special_tokens=True)
            labels = np.where(eval_prediction.label_ids == IGNORE_INDEX, pad, eval_prediction.label_ids)
            references = readable.batch_decode(tokenizer, labels, skip_special_tokens=True)
            scores = metrics_lib.compute(self.eval_metrics, [t.strip() for t in texts], [r.strip() for r in references], **options)
            scores["gen_len"] = float(np.mean([len(row) for row in rows]))
            return scores

        return compute_metrics

    def trainer_class(self):
        """Seq2SeqTrainer that, for decoder-only models, evaluates by generating from the prompt
        (:class:`hf_toolkit.tasks.trainers.PromptSeq2SeqTrainer`)."""
        from hf_toolkit.tasks.trainers import PromptSeq2SeqTrainer

        return PromptSeq2SeqTrainer

    def predict(self, model, tokenizer, recipe: Recipe | None, dataset: "Dataset", generate) -> tuple[list[str], list[str]]:
        """(generated texts, reference texts) for `dataset`, decoded as ``hftk generate`` decodes."""
        return [text.strip() for text in generate(list(dataset["source"]))], list(dataset["target"])


# --------------------------------------------------------------------------------------------
# Model shape and loading


def shape(recipe: Recipe) -> str:
    """'pair' (model.encoder/decoder), 'seq2seq' (an encoder-decoder config) or 'decoder-only'."""
    if recipe.model.is_pair:
        return "pair"
    return "seq2seq" if modeling.base_config(recipe.model).is_encoder_decoder else "decoder-only"


def model_shape(model) -> str:
    """The shape of a built or loaded model (see :func:`shape`)."""
    if type(model).__name__ == "EncoderDecoderModel" or getattr(model.config, "model_type", None) == "encoder-decoder":
        return "pair"
    return "seq2seq" if model.config.is_encoder_decoder else "decoder-only"


def shape_problems(recipe: Recipe, kind: str) -> list[Problem]:
    """Data options that do not fit the model shape."""
    data, problems = recipe.data, []
    if kind == "decoder-only":
        if data.prompt_template is None:
            problems.append(Problem(("data", "prompt_template"),
                                    "a decoder-only model needs a prompt template to tell source from target, "
                                    "e.g. prompt_template: \"{source}\\nTL;DR: \" (or use an encoder-decoder model)"))
        if data.source_prefix is not None:
            problems.append(Problem(("data", "source_prefix"),
                                    "is for encoder-decoder models; with a decoder-only model put the text in "
                                    "data.prompt_template instead"))
    elif data.prompt_template is not None:
        problems.append(Problem(("data", "prompt_template"),
                                "is for decoder-only models (GPT-2 ...); this model is an encoder-decoder, "
                                "use data.source_prefix (e.g. 'summarize: ') or remove it"))
    return problems


def _tokenizer_training_texts(recipe: Recipe, splits: "DatasetDict") -> list[str]:
    train = splits["train"]
    texts = list(train["source"]) + list(train["target"])
    if recipe.data.prompt_template is not None:
        texts.append(recipe.data.prompt_template)
    if recipe.data.source_prefix is not None:
        texts.append(recipe.data.source_prefix)
    return texts


def _side_reference(part: ModelPart) -> str:
    reference = part.tokenizer or part.name_or_path
    assert reference is not None  # the recipe schema guarantees one of them
    return reference


def _side_tokenizer(part: ModelPart):
    return modeling.load_tokenizer_from(_side_reference(part))


def _has_own_decoder_tokenizer(recipe: Recipe) -> bool:
    model = recipe.model
    return model.is_pair and model.train_tokenizer is None and _side_reference(model.decoder) != _side_reference(model.encoder)


def end_id(tokenizer) -> int:
    """The token that ends a target: EOS, or [SEP] for BERT-style tokenizers."""
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if end is None:
        raise RecipeError([f"model: the target tokenizer ({type(tokenizer).__name__}) has no EOS or [SEP] token "
                           "to end targets with; use a tokenizer that has one"])
    return end


def decoder_special_ids(tokenizer) -> dict[str, int]:
    """Start, end and pad ids for a decoder that has no seq2seq convention of its own.

    GPT-2: <|endoftext|> starts and ends; BERT: [CLS] starts, [SEP] ends, [PAD] pads.
    """
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    if start is None:
        raise RecipeError([f"model.decoder: its tokenizer ({type(tokenizer).__name__}) has no BOS or [CLS] token "
                           "to start generation from; use a decoder tokenizer that has one (GPT-2's or BERT's)"])
    return {"decoder_start_token_id": start, "eos_token_id": end_id(tokenizer), "pad_token_id": tokenizer.pad_token_id}


def _build_pair(recipe: Recipe, texts: list[str] | None):
    """EncoderDecoderModel from two sides; cross-attention is added to the decoder (new weights)."""
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        EncoderDecoderModel,
        GenerationConfig,
    )

    section = recipe.model
    if section.train_tokenizer is not None:
        encoder_tokenizer = modeling.load_tokenizer(section, texts)
    else:
        encoder_tokenizer = _side_tokenizer(section.encoder)
    decoder_tokenizer = _side_tokenizer(section.decoder) if _has_own_decoder_tokenizer(recipe) else encoder_tokenizer
    ids = decoder_special_ids(decoder_tokenizer)
    encoder = modeling.load_model(AutoModel, section.encoder, encoder_tokenizer)
    decoder = modeling.load_model(
        AutoModelForCausalLM, section.decoder, decoder_tokenizer, is_decoder=True, add_cross_attention=True
    )
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    for key, value in ids.items():
        setattr(model.config, key, value)
    model.config.vocab_size = model.decoder.config.vocab_size
    model.generation_config = GenerationConfig(bos_token_id=ids["decoder_start_token_id"], **ids)
    return encoder_tokenizer, model


def _scratch_special_ids(model, tokenizer) -> None:
    """A config built from scratch keeps its model family's ids (BART: decoder start 2); use the tokenizer's."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id
    settings = {"decoder_start_token_id": start}
    if getattr(model.config, "forced_eos_token_id", None) is not None:
        settings["forced_eos_token_id"] = tokenizer.eos_token_id
    for key, value in settings.items():
        setattr(model.config, key, value)
        setattr(model.generation_config, key, value)



# --------------------------------------------------------------------------------------------
# Data: sources and targets to token ids


def max_source_length(recipe: Recipe, tokenizer, model) -> int:
    """Source tokens kept; for decoder-only, the default is what fits beside template and target."""
    if model_shape(model) != "decoder-only":
        return recipe.data.max_source_length or DEFAULT_MAX_SOURCE_LENGTH
    target = recipe.data.max_target_length
    context = modeling.context_length(model.config) or DEFAULT_MAX_SOURCE_LENGTH + target
    template = recipe.data.prompt_template
    assert template is not None  # shape_problems
    template_tokens = len(tokenizer(template.replace("{source}", ""))["input_ids"])
    room = context - template_tokens - target
    wanted = recipe.data.max_source_length or min(DEFAULT_MAX_SOURCE_LENGTH, room)
    if wanted > room or wanted < 1:
        raise DataError(
            f"data.max_source_length ({wanted}) + prompt template ({template_tokens} tokens) + "
            f"data.max_target_length ({target}) do not fit the model's context of "
            f"{context} tokens; lower data.max_source_length or data.max_target_length"
        )
    return wanted


def encode_sources(recipe: Recipe, tokenizer, model, prompts: list[str]) -> list[list[int]]:
    """Model input ids for source texts.

    Encoder-decoder: ``source_prefix + source``, truncated to max_source_length tokens.
    Decoder-only: the source is cut to max_source_length tokens, then put in the prompt template.
    """
    limit = max_source_length(recipe, tokenizer, model)
    if model_shape(model) != "decoder-only":
        prefix = recipe.data.source_prefix or ""
        return tokenizer([prefix + text for text in prompts], truncation=True, max_length=limit)["input_ids"]
    template = recipe.data.prompt_template
    pieces = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    cut = [text if len(ids) <= limit else tokenizer.decode(ids[:limit]) for text, ids in zip(prompts, pieces)]
    return tokenizer([template.format(source=text) for text in cut])["input_ids"]


def encode_targets(recipe: Recipe, tokenizer, model, targets: list[str]) -> list[list[int]]:
    """Label ids for target texts, ending in EOS, at most max_target_length tokens."""
    limit = recipe.data.max_target_length
    if model_shape(model) == "seq2seq" and _adds_special_tokens(tokenizer):
        # T5, BART, Marian, mBART know their own target format (EOS, language codes).
        return tokenizer(text_target=targets, truncation=True, max_length=limit)["input_ids"]
    eos = end_id(tokenizer)
    ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    return [row[: limit - 1] + [eos] for row in ids]


def _adds_special_tokens(tokenizer) -> bool:
    return tokenizer(text_target="a")["input_ids"] != tokenizer(text_target="a", add_special_tokens=False)["input_ids"]


def _until(row, eos: int):
    """The tokens of `row` before its first EOS (or padding of -100 added when batches are joined)."""
    for i, token in enumerate(row):
        if token == eos or token == IGNORE_INDEX:
            return row[:i]
    return row
