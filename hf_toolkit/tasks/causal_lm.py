"""Causal-LM fine-tuning (GPT-2 and any ``AutoModelForCausalLM``): next-token prediction on packed text.

Reads top to bottom: the data options, the model it builds, how text becomes fixed-size blocks,
and the metrics it reports (evaluation loss and perplexity = exp(loss)).

Packing: every text is tokenized (batched ``datasets.map``), the token streams are concatenated
and cut into blocks of ``data.block_size`` tokens (default: min(1024, the model's context)); the
last partial block is dropped, as in transformers' ``run_clm.py``. Rows of json/csv/parquet files
are separate documents and get an EOS token between them; a ``.txt`` file is read line by line
with its line breaks kept, so its blocks see the text exactly as it is written.

``data.packing: padding_free`` keeps every text (row, or line of a ``.txt`` file) whole instead,
truncated to ``block_size``, and the collator (``DataCollatorWithFlattening``) joins a batch into
one row whose position ids restart at each text: no token is padding, and no text attends to
another (transformers builds a block-diagonal causal mask from the restarting position ids for
sdpa/eager attention; flash attention reads the sequence boundaries). For texts of different
lengths it beats padding each batch to its longest text (BENCHMARKS.md, the packing row).
"""

from __future__ import annotations

from itertools import chain
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from hf_toolkit.core import modeling
from hf_toolkit.errors import DataError
from hf_toolkit.recipe.schema import DataSection, Recipe
from hf_toolkit.tasks.base import IGNORE_INDEX, CompareMetric, Task, add_perplexity

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

DEFAULT_BLOCK_SIZE = 1024


class CausalLMData(DataSection):
    """``data`` options of causal-lm."""

    block_size: int | None = Field(None, ge=8, description="Tokens per packed block; null: min(1024, the model's context).")
    packing: Literal["blocks", "padding_free"] = Field(
        "blocks", description="blocks: concatenate the texts and cut them into block_size-token blocks (run_clm.py); "
        "padding_free: each text whole (at most block_size tokens), a batch joined into one row with position ids "
        "restarting at each text, so texts never attend to each other and nothing is padding.")


class CausalLM(Task):
    name = "causal-lm"
    auto_class = "AutoModelForCausalLM"
    Data = CausalLMData
    roles = ("text",)
    nonempty_roles = ()  # an empty line of a corpus is a paragraph break, not a broken example
    peft_task_type = "CAUSAL_LM"
    eval_metrics = ("perplexity",)
    compare_metric = CompareMetric("perplexity", "perplexity", higher_is_better=False, timing="score")
    generates = True
    architectures = ("LMHeadModel", "ForCausalLM")
    distills = True

    def prepare(self, recipe: Recipe, splits: "DatasetDict", tokenizer, model) -> "DatasetDict":
        """Tokenize and pack every split into blocks of `block_size` tokens with labels = input ids
        (padding-free: each text whole, cut at `block_size`)."""
        block_size = self.block_size(recipe, model)
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

        def tokenize(batch: dict[str, list], add_eos: bool) -> dict[str, list]:
            ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
            return {"input_ids": [row + eos for row in ids] if add_eos else ids}

        def pack(batch: dict[str, list]) -> dict[str, list]:
            stream = list(chain.from_iterable(batch["input_ids"]))
            usable = len(stream) // block_size * block_size
            blocks = [stream[i : i + block_size] for i in range(0, usable, block_size)]
            return {"input_ids": blocks, "attention_mask": [[1] * block_size for _ in blocks], "labels": [b[:] for b in blocks]}

        def truncate(batch: dict[str, list]) -> dict[str, list]:
            return {"input_ids": [ids[:block_size] for ids in batch["input_ids"] if len(ids) > 1]}

        packed = {}
        for name, dataset in splits.items():
            tokens = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc=f"Tokenizing {name}",
                                 fn_kwargs={"add_eos": not _is_text_file(recipe, name)})
            if recipe.data.packing == "padding_free":  # texts of 0-1 tokens predict nothing: left out
                packed[name] = tokens.map(truncate, batched=True, desc=f"Truncating {name} to {block_size} tokens")
                if len(packed[name]) == 0:
                    raise DataError(f"data.{name}: no text has two or more tokens")
                continue
            # One map batch per 1000 texts: blocks never cross a batch boundary, which loses at most
            # one partial block per 1000 texts.
            packed[name] = tokens.map(pack, batched=True, batch_size=1000, desc=f"Packing {name} into {block_size}-token blocks")
            if len(packed[name]) == 0:
                total = sum(len(ids) for ids in tokens["input_ids"])
                raise DataError(f"data.{name}: {total} tokens is less than one block of {block_size}; "
                                "add text or lower data.block_size")
        return type(splits)(packed)

    def block_size(self, recipe: Recipe, model) -> int:
        """``data.block_size``, or min(1024, the model's context); longer than the context is a DataError."""
        context = modeling.context_length(model.config) or DEFAULT_BLOCK_SIZE
        block_size = recipe.data.block_size or min(DEFAULT_BLOCK_SIZE, context)
        if block_size > context:
            raise DataError(f"data.block_size={block_size} is longer than the model's context ({context} tokens); lower it")
        return block_size

    def truncation_limit(self, recipe: Recipe, tokenizer, model) -> int | None:
        """Blocks cut nothing; padding-free packing cuts each text at `block_size`."""
        return self.block_size(recipe, model) if recipe.data.packing == "padding_free" else None

    def trainer_kwargs(self, recipe: Recipe, tokenizer, model) -> dict[str, Any]:
        """Packed blocks have equal length: the default collator stacks them. Padding-free: one row per
        batch, with position ids restarting at each text (and no cache, so the model reads them)."""
        from transformers import default_data_collator

        if recipe.data.packing == "padding_free":
            return {"data_collator": padding_free_collator(model)}
        return {"data_collator": default_data_collator}

    def distillation_logits(self, outputs, inputs: dict[str, Any]) -> list[tuple[Any, Any]]:
        """Position t's logits predict token t + 1: compared where that next token carries a label
        (the shift the model's own loss makes; prompt and padding positions are -100)."""
        return [(outputs.logits[:, :-1], inputs["labels"][:, 1:] != IGNORE_INDEX)]

    def finish_metrics(self, metrics: dict[str, float], prefix: str) -> dict[str, float]:
        return add_perplexity(metrics, prefix)

    def encode_prompts(self, recipe: Recipe | None, tokenizer, model, prompts: list[str]) -> list[list[int]]:
        """Prompts as training encoded text: no special tokens (a BERT vocabulary's [CLS] ... [SEP] would
        end the prompt with a token the model never saw inside text)."""
        return tokenizer(prompts, add_special_tokens=False)["input_ids"]

    def predict(self, model, tokenizer, recipe: Recipe | None, dataset: "Dataset", generate) -> tuple[list[str], None]:
        """The texts of `dataset`: perplexity runs the model over them itself (no references)."""
        return list(dataset["text"]), None


def padding_free_collator(model):
    """DataCollatorWithFlattening, plus ``use_cache=False``: with a cache, transformers' mask
    functions do not look for packed sequences in the position ids. Flash attention gets the
    sequence boundaries as well."""
    import inspect

    from transformers import DataCollatorWithFlattening

    base = modeling.base_model(model)  # LoRA
    if "position_ids" not in inspect.signature(base.forward).parameters:
        raise DataError(f"data.packing: padding_free needs a model that takes position ids; "
                        f"{type(base).__name__} does not: use packing: blocks")
    flash = "flash" in str(getattr(base.config, "_attn_implementation", ""))
    flatten = DataCollatorWithFlattening(return_flash_attn_kwargs=flash)

    def collate(features):
        return {**flatten(features), "use_cache": False}

    return collate


def _is_text_file(recipe: Recipe, split: str) -> bool:
    source = getattr(recipe.data, "train" if split == "validation" and recipe.data.validation is None else split)
    return source is not None and source.file is not None and PurePath(source.file).suffix.lower() == ".txt"
