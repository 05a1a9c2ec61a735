"""Sequence-to-sequence tasks (summarization, translation): source text in, target text out.

Shared by :mod:`hf_toolkit.tasks.summarization` and :mod:`hf_toolkit.tasks.translation`, which
differ only in their metrics (ROUGE; BLEU + chrF) and data options. Three model shapes, picked
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
    stops at its EOS (or [SEP]). A decoder tokenizer that differs from the encoder's is saved in
    ``<run dir>/decoder_tokenizer``.
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

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_toolkit import metrics as metrics_lib
from hf_toolkit import modeling
from hf_toolkit.errors import DataError, RecipeError
from hf_toolkit.recipe import ModelPart, Recipe

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

# The task contract (see hf_toolkit.tasks) that summarization and translation re-export.
__all__ = [
    "OPTIONAL_ROLES",
    "PEFT_TASK_TYPE",
    "ROLES",
    "TASK_METRICS",
    "TRAINER",
    "TRAINING_DEFAULTS",
    "auto_model",
    "build_model",
    "check_recipe",
    "encode_prompts",
    "finish_metrics",
    "metric_options",
    "model_config",
    "predict",
    "prepare",
    "trainer_class",
    "trainer_kwargs",
]

ROLES = ("source", "target")
OPTIONAL_ROLES = ()
TRAINER = "Seq2SeqTrainer"
# Generic PeftModel: the same adapters work for all three shapes.
PEFT_TASK_TYPE = None
# Applied unless the recipe's `training` sets them: evaluation generates text to score.
TRAINING_DEFAULTS = {"predict_with_generate": True}
TASK_METRICS = {"summarization": ("rouge",), "translation": ("bleu", "chrf")}
DEFAULT_MAX_SOURCE_LENGTH = 1024
DEFAULT_MAX_TARGET_LENGTH = 128
DECODER_TOKENIZER_DIR = "decoder_tokenizer"
IGNORE_INDEX = -100


# --------------------------------------------------------------------------------------------
# Model shape and loading


def auto_model(recipe: Recipe | None = None):
    """The Auto class that loads the recipe's model: AutoModelForSeq2SeqLM for the encoder-decoder
    shapes (an EncoderDecoderModel loads with it too), AutoModelForCausalLM for decoder-only."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if recipe is not None and shape(recipe) == "decoder-only":
        return AutoModelForCausalLM
    return AutoModelForSeq2SeqLM


def model_config(recipe: Recipe, splits: "DatasetDict") -> dict[str, Any]:
    """No task settings for the model config (kept for the task contract; see build_model)."""
    return {}


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


def check_recipe(recipe: Recipe) -> None:
    """Data options that do not fit the model's shape (reads the model config only, no weights)."""
    check_shape_options(recipe, shape(recipe))


def check_shape_options(recipe: Recipe, kind: str) -> None:
    """Data options that do not fit the model shape are errors, before any weights load."""
    data, problems = recipe.data, []
    if kind == "decoder-only":
        if data.prompt_template is None:
            problems.append(
                "data.prompt_template: a decoder-only model needs a prompt template to tell source from target, "
                "e.g. prompt_template: \"{source}\\nTL;DR: \" (or use an encoder-decoder model)"
            )
        if data.source_prefix is not None:
            problems.append(
                "data.source_prefix: is for encoder-decoder models; with a decoder-only model put the text in "
                "data.prompt_template instead"
            )
    elif data.prompt_template is not None:
        problems.append(
            "data.prompt_template: is for decoder-only models (GPT-2 ...); this model is an encoder-decoder, "
            "use data.source_prefix (e.g. 'summarize: ') or remove it"
        )
    if problems:
        raise RecipeError(problems)


def build_model(recipe: Recipe, splits: "DatasetDict"):
    """(tokenizer, model) for the recipe's shape; the tokenizer is the one that reads sources."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    kind = shape(recipe)  # its options were checked with the recipe (check_recipe)
    texts = _tokenizer_training_texts(recipe, splits) if recipe.model.train_tokenizer is not None else None
    if kind == "pair":
        tokenizer, model = _build_pair(recipe, texts)
    else:
        tokenizer = modeling.load_tokenizer(recipe.model, texts)
        auto_class = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
        model = modeling.load_model(auto_class, recipe.model, tokenizer)
        if kind == "seq2seq" and recipe.model.init == "scratch":
            _scratch_special_ids(model, tokenizer)
        if kind == "seq2seq" and recipe.task == "translation":
            _set_languages(recipe, tokenizer, model)
    if recipe.generation.max_new_tokens is None and model.generation_config.max_new_tokens is None and model.generation_config.max_length is None:
        model.generation_config.max_new_tokens = max_target_length(recipe)
    return tokenizer, model


def _tokenizer_training_texts(recipe: Recipe, splits: "DatasetDict") -> list[str]:
    train = splits["train"]
    texts = list(train["source"]) + list(train["target"])
    if recipe.data.prompt_template is not None:
        texts.append(recipe.data.prompt_template)
    if recipe.data.source_prefix is not None:
        texts.append(recipe.data.source_prefix)
    return texts


@functools.lru_cache(maxsize=8)
def _side_tokenizer(reference: str):
    """One side's tokenizer, loaded once per process (prepare and metrics reuse the same object)."""
    from transformers import AutoTokenizer

    tokenizer = modeling.from_pretrained(AutoTokenizer, reference, "tokenizer")
    modeling.ensure_pad_token(tokenizer)
    return tokenizer


def _side_reference(part: ModelPart) -> str:
    reference = part.tokenizer or part.name_or_path
    assert reference is not None  # the recipe schema guarantees one of them
    return reference


def target_tokenizer(recipe: Recipe, tokenizer):
    """The tokenizer that writes targets: the decoder's for a pair with two tokenizers, else `tokenizer`."""
    model = recipe.model
    if not model.is_pair or model.train_tokenizer is not None:
        return tokenizer
    decoder_reference = _side_reference(model.decoder)
    if decoder_reference == _side_reference(model.encoder):
        return tokenizer
    return _side_tokenizer(decoder_reference)


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
    from transformers import AutoModel, AutoModelForCausalLM, EncoderDecoderModel, GenerationConfig

    section = recipe.model
    if section.train_tokenizer is not None:
        encoder_tokenizer = modeling.load_tokenizer(section, texts)
    else:
        encoder_tokenizer = _side_tokenizer(_side_reference(section.encoder))
    decoder_tokenizer = target_tokenizer(recipe, encoder_tokenizer)
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


def _set_languages(recipe: Recipe, tokenizer, model) -> None:
    """Language codes for multilingual tokenizers (mBART-50, M2M100, NLLB), and the forced first token."""
    if not hasattr(tokenizer, "src_lang"):
        return
    source, target = recipe.data.source_lang, recipe.data.target_lang
    if source is None:
        raise RecipeError([f"data.source_lang/target_lang: {type(tokenizer).__name__} is multilingual; set both to "
                           "its language codes (e.g. en_XX and de_DE for mBART-50, eng_Latn and deu_Latn for NLLB)"])
    for key, code in (("source_lang", source), ("target_lang", target)):
        if tokenizer.convert_tokens_to_ids(code) in (None, tokenizer.unk_token_id):
            raise RecipeError([f"data.{key}: '{code}' is not a language code of {type(tokenizer).__name__} "
                               "(e.g. en_XX for mBART-50, eng_Latn for NLLB)"])
    tokenizer.src_lang, tokenizer.tgt_lang = source, target
    target_id = tokenizer.convert_tokens_to_ids(target)
    labels = tokenizer(text_target="a")["input_ids"]
    if labels[0] == target_id:  # mBART-50 / M2M100 / NLLB: labels start with the language code
        key = "forced_bos_token_id"
    elif labels[-1] == target_id:  # mBART-cc25 style: the decoder starts from the language code
        key = "decoder_start_token_id"
    else:
        return
    setattr(model.config, key, target_id)
    setattr(model.generation_config, key, target_id)


# --------------------------------------------------------------------------------------------
# Data: sources and targets to token ids


def max_target_length(recipe: Recipe) -> int:
    return recipe.data.max_target_length or DEFAULT_MAX_TARGET_LENGTH


def _context_length(model) -> int | None:
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, name, None)
        if isinstance(value, int):
            return value
    return None


def max_source_length(recipe: Recipe, tokenizer, model) -> int:
    """Source tokens kept; for decoder-only, the default is what fits beside template and target."""
    if model_shape(model) != "decoder-only":
        return recipe.data.max_source_length or DEFAULT_MAX_SOURCE_LENGTH
    context = _context_length(model) or DEFAULT_MAX_SOURCE_LENGTH + DEFAULT_MAX_TARGET_LENGTH
    template = recipe.data.prompt_template
    assert template is not None  # check_shape_options
    template_tokens = len(tokenizer(template.replace("{source}", ""))["input_ids"])
    room = context - template_tokens - max_target_length(recipe)
    wanted = recipe.data.max_source_length or min(DEFAULT_MAX_SOURCE_LENGTH, room)
    if wanted > room or wanted < 1:
        raise DataError(
            f"data.max_source_length ({wanted}) + prompt template ({template_tokens} tokens) + "
            f"data.max_target_length ({max_target_length(recipe)}) do not fit the model's context of "
            f"{context} tokens; lower data.max_source_length or data.max_target_length"
        )
    return wanted


def encode_prompts(recipe: Recipe, tokenizer, model, prompts: list[str]) -> list[list[int]]:
    """Model input ids for source texts: training and ``hftk generate`` both encode through here.

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
    limit = max_target_length(recipe)
    if model_shape(model) == "seq2seq" and _adds_special_tokens(tokenizer):
        # T5, BART, Marian, mBART know their own target format (EOS, language codes).
        return tokenizer(text_target=targets, truncation=True, max_length=limit)["input_ids"]
    eos = end_id(tokenizer)
    ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    return [row[: limit - 1] + [eos] for row in ids]


def _adds_special_tokens(tokenizer) -> bool:
    return tokenizer(text_target="a")["input_ids"] != tokenizer(text_target="a", add_special_tokens=False)["input_ids"]


def prepare(recipe: Recipe, splits: "DatasetDict", tokenizer, model) -> "DatasetDict":
    """Tokenize every split into input_ids / attention_mask / labels (see the module docstring)."""
    writer = target_tokenizer(recipe, tokenizer)
    decoder_only = model_shape(model) == "decoder-only"

    def encode(batch: dict[str, list]) -> dict[str, list]:
        for role in ROLES:
            bad = next((i for i, value in enumerate(batch[role]) if not isinstance(value, str)), None)
            if bad is not None:
                raise DataError(f"a {role} value is {batch[role][bad]!r}, not text; remove or fix that row")
        sources = encode_prompts(recipe, tokenizer, model, batch["source"])
        targets = encode_targets(recipe, writer, model, batch["target"])
        if decoder_only:
            inputs = [s + t for s, t in zip(sources, targets)]
            labels = [[IGNORE_INDEX] * len(s) + t for s, t in zip(sources, targets)]
        else:
            inputs, labels = sources, targets
        return {"input_ids": inputs, "attention_mask": [[1] * len(row) for row in inputs], "labels": labels}

    return type(splits)(
        {
            name: dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=f"Tokenizing {name}")
            for name, dataset in splits.items()
        }
    )


# --------------------------------------------------------------------------------------------
# Trainer: collator, metrics, generation during evaluation


def trainer_kwargs(recipe: Recipe, tokenizer, model) -> dict[str, Any]:
    """Collator padding labels with -100, generation-based metrics, and saving the decoder tokenizer."""
    from transformers import DataCollatorForSeq2Seq

    writer = target_tokenizer(recipe, tokenizer)
    kind = model_shape(model)
    encoder_decoder = kind != "decoder-only"
    # With the model, the collator also builds decoder_input_ids from the labels (shifted right
    # after the decoder start token). An EncoderDecoderModel left to build them itself also masks
    # every decoder position holding the pad id: when the start token is the pad token (GPT-2's
    # <|endoftext|> is BOS, EOS and pad) training would hide the start token that generation shows.
    kwargs: dict[str, Any] = {
        "data_collator": DataCollatorForSeq2Seq(
            tokenizer, model=model if encoder_decoder else None, label_pad_token_id=IGNORE_INDEX
        )
    }
    if _predict_with_generate(recipe):
        kwargs["compute_metrics"] = metrics_function(recipe, writer, encoder_decoder=encoder_decoder)
    if writer is not tokenizer:
        kwargs["callbacks"] = [_decoder_tokenizer_saver(writer)]
    return kwargs


def _predict_with_generate(recipe: Recipe) -> bool:
    key = "predict_with_generate"
    return recipe.training[key] if key in recipe.training else TRAINING_DEFAULTS[key]


def metric_options(recipe: Recipe) -> dict[str, Any]:
    """Options for hf_toolkit.metrics.compute: sacreBLEU's Chinese tokenizer for Chinese targets."""
    if recipe.task == "translation" and (recipe.data.target_lang or "").lower().startswith("zh"):
        return {"tokenize": "zh"}
    return {}


def metrics_function(recipe: Recipe, tokenizer, *, encoder_decoder: bool):
    """compute_metrics for Seq2SeqTrainer: decode generated ids and labels, score, add gen_len."""
    import numpy as np

    names = TASK_METRICS[recipe.task]
    options = metric_options(recipe)
    eos, pad = end_id(tokenizer), tokenizer.pad_token_id

    def compute_metrics(eval_prediction) -> dict[str, float]:
        predictions = eval_prediction.predictions
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        # Encoder-decoder outputs start with the decoder start token; everything from EOS on is padding.
        rows = [_until(row[1:] if encoder_decoder else row, eos) for row in np.asarray(predictions)]
        texts = tokenizer.batch_decode([[int(t) for t in row if t >= 0] for row in rows], skip_special_tokens=True)
        labels = np.where(eval_prediction.label_ids == IGNORE_INDEX, pad, eval_prediction.label_ids)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        scores = metrics_lib.compute(names, [t.strip() for t in texts], [r.strip() for r in references], **options)
        scores["gen_len"] = float(np.mean([len(row) for row in rows]))
        return scores

    return compute_metrics


def _until(row, eos: int):
    """The tokens of `row` before its first EOS (or padding of -100 added when batches are joined)."""
    for i, token in enumerate(row):
        if token == eos or token == IGNORE_INDEX:
            return row[:i]
    return row


def _decoder_tokenizer_saver(tokenizer):
    """Saves the decoder tokenizer next to every checkpoint and into the run directory."""
    from transformers import TrainerCallback

    class SaveDecoderTokenizer(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                tokenizer.save_pretrained(Path(args.output_dir) / f"checkpoint-{state.global_step}" / DECODER_TOKENIZER_DIR)

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                tokenizer.save_pretrained(Path(args.output_dir) / DECODER_TOKENIZER_DIR)

    return SaveDecoderTokenizer()


def trainer_class():
    """Seq2SeqTrainer that, for decoder-only models, evaluates by generating from the prompt.

    Seq2SeqTrainer would generate from the whole evaluation sequence (prompt + target). Here the
    prompt of each row is its prefix whose labels are -100; prompts are left-padded, generated
    from, and only the continuation is returned for scoring. Encoder-decoder models use
    Seq2SeqTrainer unchanged.
    """
    import copy

    import torch
    from transformers import Seq2SeqTrainer

    class PromptSeq2SeqTrainer(Seq2SeqTrainer):
        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
            if self.model.config.is_encoder_decoder or not self.args.predict_with_generate or prediction_loss_only:
                # Seq2SeqTrainer fills every unset generation setting with its default (max_length=20,
                # ...) in the model's own config, which would then be saved; keep the recipe's.
                kept = copy.deepcopy(self.model.generation_config)
                try:
                    return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)
                finally:
                    self.model.generation_config = kept
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = model(**inputs).loss.detach()
            prompt_ids, prompt_mask = left_padded_prompts(
                inputs["input_ids"], inputs["labels"], self.processing_class.pad_token_id
            )
            with torch.no_grad():
                generated = self.model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **gen_kwargs)
            return loss, generated[:, prompt_ids.shape[1] :], inputs["labels"]

    return PromptSeq2SeqTrainer


def left_padded_prompts(input_ids, labels, pad_id: int):
    """(ids, attention mask) of each row's prompt (the tokens before its first label), left-padded."""
    import torch

    starts = [int((row != IGNORE_INDEX).nonzero()[0]) for row in labels]
    width = max(starts)
    ids = torch.full((len(starts), width), pad_id, dtype=input_ids.dtype, device=input_ids.device)
    mask = torch.zeros((len(starts), width), dtype=torch.long, device=input_ids.device)
    for i, start in enumerate(starts):
        ids[i, width - start :] = input_ids[i, :start]
        mask[i, width - start :] = 1
    return ids, mask


def finish_metrics(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """Nothing to derive: compute_metrics already scored the generated text."""
    return metrics


# --------------------------------------------------------------------------------------------
# Scoring a trained run (hftk eval --model)


def predict(run_dir, recipe: Recipe | None, dataset: "Dataset") -> tuple[list[str], list[str]]:
    """(generated texts, reference texts) for `dataset`, decoded as ``hftk generate`` does.

    `dataset` holds ``source`` and ``target`` columns (see :func:`hf_toolkit.data.eval_rows`).
    Generation settings are the run's saved ``generation_config.json``.
    """
    from hf_toolkit import generation

    results = generation.generate(str(run_dir), list(dataset["source"]), {"num_return_sequences": 1}, recipe=recipe)
    return [result.text.strip() for result in results], list(dataset["target"])
