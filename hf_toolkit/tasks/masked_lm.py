"""Masked-LM continued pretraining (BERT and any ``AutoModelForMaskedLM``): predict masked tokens.

Reads top to bottom: the data options and the checks across them, how text becomes examples,
the masking (the collator's class is :class:`hf_toolkit.tasks.collators.WordPieceMaskingCollator`), the metrics (evaluation loss and perplexity = exp(loss)), then inference
for ``hftk predict`` (fill-mask) and ``hftk eval --model`` (masked-token accuracy).

Two ways to cut text into examples, as in transformers' ``run_mlm.py``:

- packed (default): every text is tokenized with its special tokens (``[CLS] text [SEP]``), the
  streams are concatenated and cut into blocks of ``data.block_size`` tokens (default
  min(512, the model's context)); the last partial block is dropped;
- ``data.line_by_line: true``: each non-empty text is one example, truncated to
  ``data.max_length`` tokens (default min(512, the model's context)) and padded per batch.

Training computes the vocabulary logits at the masked positions only (the loss reads nothing
else): :class:`hf_toolkit.tasks.trainers.MaskedPositionsTrainer`.

Masking happens in the collator, afresh for every batch: ``data.mlm_probability`` (default 0.15)
of the non-special tokens are chosen; of those 80% become the mask token, 10% a random token,
10% stay. ``data.whole_word_mask: true`` masks all pieces of a word together (WordPiece
tokenizers, i.e. BERT's, whose continuation pieces start with ``##``); every chosen word then
becomes mask tokens (transformers' whole-word masking has no random replacement).
"""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from hf_toolkit.core import modeling, readable
from hf_toolkit.errors import DataError, HftkError, Problem
from hf_toolkit.recipe.schema import DataSection, Recipe
from hf_toolkit.tasks.base import (
    IGNORE_INDEX,
    CompareMetric,
    Task,
    Texts,
    add_perplexity,
)

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

DEFAULT_LENGTH = 512


class MaskedLMData(DataSection):
    """``data`` options of masked-lm."""

    block_size: int | None = Field(None, ge=8, description="Tokens per packed block; null: min(512, the model's context).")
    max_length: int | None = Field(None, ge=8, description="With line_by_line: tokens per line; null: min(512, the model's context).")
    line_by_line: bool = Field(False, description="One example per non-empty text instead of packed blocks.")
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="Share of tokens chosen for masking.")
    whole_word_mask: bool = Field(False, description="Mask all WordPiece pieces of a word together.")


class FillMaskRequest(BaseModel):
    """``POST /v1/fill-mask`` (hftk serve): one text or a list, each holding the mask token."""

    text: Texts = Field(..., description="Text(s) holding the tokenizer's mask token.")
    top_k: int = Field(5, ge=1, description="Candidates per mask token.")


class MaskedLM(Task):
    name = "masked-lm"
    auto_class = "AutoModelForMaskedLM"
    Data = MaskedLMData
    roles = ("text",)
    nonempty_roles = ()  # an empty line is a paragraph break (line_by_line skips it)
    peft_task_type = None  # peft has no masked-LM task type; LoRA wraps the model as is
    # `hftk eval --model`: accuracy of the model's top prediction at masked positions (see `predict`).
    eval_metrics = ("accuracy",)
    compare_metric = CompareMetric("accuracy", "accuracy", higher_is_better=True, timing="score")  # masked-token accuracy
    architectures = ("ForMaskedLM",)
    predicts = True
    endpoint = "/v1/fill-mask"
    request = FillMaskRequest
    distills = True
    # Fill-mask inputs hold the mask token, and strip_html would take RoBERTa's `<mask>` for a tag.
    input_text_roles = ()

    def check_recipe(self, recipe: Recipe) -> list[Problem]:
        """block_size is for packed text, max_length for line_by_line."""
        data, problems = recipe.data, super().check_recipe(recipe)
        if data.line_by_line and data.block_size is not None:
            problems.append(Problem(("data", "block_size"), "packs text into blocks, but data.line_by_line is true; remove one of them"))
        if not data.line_by_line and data.max_length is not None:
            problems.append(Problem(("data", "max_length"), "truncates each line with data.line_by_line: true; for packed "
                                                            "text (the default) set data.block_size instead"))
        return problems

    # ----------------------------------------------------------------------------------------
    # Tokenization

    def prepare(self, recipe: Recipe, splits: "DatasetDict", tokenizer, model) -> "DatasetDict":
        """Tokenize every split: packed blocks of block_size, or one truncated example per line."""
        if tokenizer.mask_token is None:
            raise HftkError(
                f"the tokenizer ({type(tokenizer).__name__}) has no mask token, so it cannot be used for masked-LM; "
                "use a BERT-style tokenizer (e.g. model.tokenizer: bert-base-uncased) or task: causal-lm"
            )
        if recipe.data.whole_word_mask and not is_wordpiece(tokenizer):
            raise HftkError(
                "data.whole_word_mask: works with WordPiece tokenizers (BERT's, continuation pieces start with '##'); "
                f"{type(tokenizer).__name__} is not one. Remove data.whole_word_mask"
            )
        context = context_length(model)
        length = (recipe.data.max_length if recipe.data.line_by_line else recipe.data.block_size) or min(DEFAULT_LENGTH, context)
        if length > context:
            key = "max_length" if recipe.data.line_by_line else "block_size"
            raise DataError(f"data.{key}={length} is longer than the model's context ({context} tokens); lower it")

        def tokenize_lines(batch: dict[str, list]) -> dict[str, list]:
            return tokenizer(batch["text"], truncation=True, max_length=length, return_special_tokens_mask=True)

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            return tokenizer(batch["text"], return_special_tokens_mask=True)

        def pack(batch: dict[str, list]) -> dict[str, list]:
            out = {}
            for key, rows in batch.items():
                stream = list(chain.from_iterable(rows))
                usable = len(stream) // length * length
                out[key] = [stream[i : i + length] for i in range(0, usable, length)]
            return out

        prepared = {}
        for name, dataset in splits.items():
            dataset = dataset.filter(lambda row: bool(row["text"] and row["text"].strip()), desc=f"Dropping empty {name} texts")
            if recipe.data.line_by_line:
                prepared[name] = dataset.map(tokenize_lines, batched=True, remove_columns=["text"], desc=f"Tokenizing {name}")
            else:
                tokens = dataset.map(tokenize, batched=True, remove_columns=["text"], desc=f"Tokenizing {name}")
                prepared[name] = tokens.map(pack, batched=True, batch_size=1000, desc=f"Packing {name} into {length}-token blocks")
            if len(prepared[name]) == 0:
                raise DataError(
                    f"data.{name}: no examples after tokenization (fewer tokens than one block of {length}); "
                    "add text, lower data.block_size, or set data.line_by_line: true"
                )
        return type(splits)(prepared)

    # ----------------------------------------------------------------------------------------
    # Masking and metrics

    def trainer_kwargs(self, recipe: Recipe, tokenizer, model) -> dict[str, Any]:
        """A collator that pads and masks each batch afresh (so every epoch sees new masks)."""
        from hf_toolkit.tasks import collators

        whole_words = recipe.data.whole_word_mask
        replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_words else {}
        collator = collators.WordPieceMaskingCollator(tokenizer=tokenizer, mlm_probability=recipe.data.mlm_probability,
                                                      whole_word_mask=whole_words, **replace)
        return {"data_collator": collator}

    def trainer_class(self):
        """A Trainer whose training loss computes vocabulary logits at the masked positions only
        (:class:`hf_toolkit.tasks.trainers.MaskedPositionsTrainer`); evaluation sees full logits."""
        from hf_toolkit.tasks.trainers import MaskedPositionsTrainer

        return MaskedPositionsTrainer

    def finish_metrics(self, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        """Add perplexity = exp(mean cross-entropy over the masked tokens)."""
        return add_perplexity(metrics, prefix)

    def distillation_logits(self, outputs, inputs: dict[str, Any]) -> list[tuple[Any, Any]]:
        """The vocabulary logits at the masked positions only (the others carry label -100)."""
        return [(outputs.logits, inputs["labels"] != IGNORE_INDEX)]

    def loss_view(self, recipe: Recipe, tokenizer, model, example: dict[str, Any]) -> dict[str, list[tuple[str, bool]]]:
        """The input as the collator masked it: each position with a loss shown as `input→original`
        ([MASK]→paris, or a random or kept token), the rest carrying no loss."""
        pieces: list[tuple[str, bool]] = []
        for token, label in zip(example["input_ids"], example["labels"]):
            if label != IGNORE_INDEX:
                pieces.append((f"{tokenizer.decode([token])}→{tokenizer.decode([label])} ", True))  # one token each: nothing to join
            elif pieces and not pieces[-1][1]:
                pieces[-1] = (pieces[-1][0] + [token], False)
            else:
                pieces.append(([token], False))
        return {"input": [(text if loss else " " + readable.decode(tokenizer, text) + " ", loss) for text, loss in pieces]}

    def truncation_limit(self, recipe: Recipe, tokenizer, model) -> int | None:
        """line_by_line truncates each line; packed text is cut into blocks, nothing lost."""
        return (recipe.data.max_length or min(DEFAULT_LENGTH, context_length(model))) if recipe.data.line_by_line else None

    # ----------------------------------------------------------------------------------------
    # Inference (hftk predict, hftk eval --model)

    def predict_records(self, model, tokenizer, recipe: Recipe | None, inputs: dict[str, list], *, top_k: int = 5,
                        batch_size: int = 16) -> list[dict[str, Any]]:
        """``{"text", "fills": [[{token, score, sequence}, ...] per mask token]}`` per text."""
        fills = fill_mask(model, tokenizer, inputs["text"], top_k=top_k, batch_size=batch_size)
        return [{"text": text, "fills": per_mask} for text, per_mask in zip(inputs["text"], fills)]

    def format_record(self, record: dict[str, Any]) -> str:
        lines = [record["text"]]
        for n, per_mask in enumerate(record["fills"], start=1):
            prefix = f"  mask {n}: " if len(record["fills"]) > 1 else "  "
            lines.append(prefix + "  ".join(f"{fill['token']} ({fill['score']:.3f})" for fill in per_mask))
        return "\n".join(lines)

    def prediction_rows(self, model, tokenizer, dataset: "Dataset", predictions, references) -> list[dict[str, Any]]:
        """``{"prediction", "reference"}`` per masked token (not per row), as tokens."""
        return [{"prediction": p, "reference": r} for p, r in
                zip(tokenizer.convert_ids_to_tokens(predictions), tokenizer.convert_ids_to_tokens(references))]

    def predict(self, model, tokenizer, recipe: Recipe | None, dataset: "Dataset", generate) -> tuple[list[int], list[int]]:
        """(predicted token ids, original token ids) at masked positions, for masked-token accuracy.

        A fixed, seeded ``mlm_probability`` share of each text's non-special tokens (the run's setting,
        default 0.15) is replaced by the mask token; the model's top prediction is compared with the
        original token. The same data gives the same masks every time.
        """
        import torch

        texts = [t for t in dataset["text"] if t and t.strip()]
        if not texts:
            raise DataError("--data: no non-empty text to mask")
        probability = recipe.data.mlm_probability if recipe is not None else MaskedLMData.model_fields["mlm_probability"].default
        generator = torch.Generator().manual_seed(recipe.seed if recipe is not None else 0)
        predictions, references = [], []
        for start in range(0, len(texts), 16):
            inputs = tokenizer(texts[start : start + 16], padding=True, truncation=True, max_length=min(DEFAULT_LENGTH, context_length(model)),
                               return_tensors="pt", return_special_tokens_mask=True).to(model.device)
            maskable = (inputs.pop("special_tokens_mask") == 0) & (inputs["attention_mask"] == 1)
            chosen = (torch.rand(maskable.shape, generator=generator) < probability).to(model.device) & maskable
            gold = inputs["input_ids"][chosen].tolist()
            inputs["input_ids"][chosen] = tokenizer.mask_token_id
            with torch.no_grad():
                logits = model(**inputs).logits
            predictions += logits[chosen].argmax(-1).tolist()
            references += gold
        if not references:
            raise DataError(f"--data: the texts are too short for any token to be masked at probability {probability}; give longer texts")
        return predictions, references


def context_length(model) -> int:
    return modeling.context_length(model.config) or DEFAULT_LENGTH


def is_wordpiece(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "WordPiece"


def fill_mask(model, tokenizer, texts: list[str], *, top_k: int = 5, batch_size: int = 16) -> list[list[list[dict[str, Any]]]]:
    """For each text, for each mask token in it (in order): the top-k {token, score, sequence}.

    A fill's ``sequence`` is the text as given with that one mask token replaced by the fill's
    token; any other mask tokens stay as they are (as transformers' fill-mask pipeline shows each
    mask of a multi-mask input).
    """
    import re

    import torch

    mask = tokenizer.mask_token
    for text in texts:
        if mask is None or mask not in text:
            raise HftkError(f"fill-mask input has no mask token {mask!r}: {text!r}; put {mask} where a word is missing")
    results = []
    for start in range(0, len(texts), batch_size):
        batch_texts = texts[start : start + batch_size]
        inputs = tokenizer(batch_texts, padding=True, truncation=True, max_length=context_length(model), return_tensors="pt").to(model.device)
        with torch.no_grad():
            probabilities = model(**inputs).logits.float().softmax(-1)
        for row, text in enumerate(batch_texts):
            positions = (inputs["input_ids"][row] == tokenizer.mask_token_id).nonzero().flatten().tolist()
            # The n-th mask token of the input ids is the n-th occurrence of the mask token in the text.
            spans = [(found.start(), found.end()) for found in re.finditer(re.escape(mask), text)]
            per_mask = []
            for position, (begin, end) in zip(positions, spans):
                scores, ids = probabilities[row, position].topk(top_k)
                fills = []
                for score, token_id in zip(scores.tolist(), ids.tolist()):
                    token = tokenizer.decode([token_id]).strip()
                    fills.append({"token": token, "score": float(score), "sequence": text[:begin] + token + text[end:]})
                per_mask.append(fills)
            results.append(per_mask)
    return results
