"""Translation (``task: translation``): source-language text in, target-language text out,
scored with BLEU and chrF (sacreBLEU; Chinese targets use sacreBLEU's ``zh`` tokenizer).

Everything but the metrics and the language options is
:class:`~hf_toolkit.tasks.seq2seq.Seq2SeqTask`. Data: ``source``/``target`` columns
(``data.columns``), or the Hugging Face translation format ``{"translation": {"en": ..., "de": ...}}``
read with ``data.source_lang``/``data.target_lang``, which multilingual tokenizers (mBART-50,
M2M100, NLLB) also take as their language codes; generation then forces the target language
code as first token when the tokenizer puts it there.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from hf_toolkit.errors import DataError, RecipeError
from hf_toolkit.recipe.schema import Recipe
from hf_toolkit.tasks.base import CompareMetric
from hf_toolkit.tasks.seq2seq import Seq2SeqData, Seq2SeqTask

if TYPE_CHECKING:
    from datasets import Dataset


class TranslationData(Seq2SeqData):
    """``data`` options of translation: the seq2seq ones and the language pair."""

    source_lang: str | None = Field(None, description="Source language: key of the translation format, or a tokenizer's language code.")
    target_lang: str | None = Field(None, description="Target language, as source_lang.")

    @model_validator(mode="after")
    def _languages_together(self) -> "TranslationData":
        if (self.source_lang is None) != (self.target_lang is None):
            raise ValueError("data.source_lang and data.target_lang go together; set both (e.g. en and de)")
        return self


class Translation(Seq2SeqTask):
    name = "translation"
    Data = TranslationData
    eval_metrics = ("bleu", "chrf")
    compare_metric = CompareMetric("bleu", "bleu", higher_is_better=True, timing="generate")

    def adapt_model(self, recipe: Recipe, tokenizer, model) -> None:
        _set_languages(recipe, tokenizer, model)

    def metric_options(self, recipe: Recipe | None) -> dict[str, Any]:
        """sacreBLEU's Chinese tokenizer for Chinese targets."""
        if recipe is not None and (recipe.data.target_lang or "").lower().startswith("zh"):
            return {"tokenize": "zh"}
        return {}

    def read_rows(self, dataset: "Dataset", data: TranslationData, *, where: str) -> "Dataset":
        return flatten_translation(dataset, data, where=where)


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


def flatten_translation(dataset: "Dataset", data: TranslationData, *, where: str) -> "Dataset":
    """Hugging Face translation format -> ``source`` / ``target`` columns.

    Rows like ``{"translation": {"en": ..., "de": ...}}`` (WMT, OPUS) are read with
    ``data.source_lang`` / ``data.target_lang`` as keys. A code with a region or script part
    (``en_XX`` for mBART, ``eng_Latn`` for NLLB) falls back to its first part (``en``) when the
    full code is not a key, as in transformers' ``run_translation.py``. Data without a
    ``translation`` column is returned unchanged.
    """
    if "translation" not in dataset.column_names:
        return dataset
    if data.source_lang is None:
        raise DataError(
            f"{where}: rows hold a 'translation' mapping of language -> text; set data.source_lang and "
            "data.target_lang to pick the pair (e.g. source_lang: en, target_lang: de)"
        )
    mapped = [role for role in ("source", "target") if role in data.columns]
    if mapped:
        raise DataError(
            f"{where}: source and target come from the 'translation' column here; remove data.columns.{mapped[0]}"
        )
    first = dataset[0]["translation"]
    if not isinstance(first, dict):
        raise DataError(f"{where}: the 'translation' column must hold {{language: text}} mappings, got {type(first).__name__}")
    keys = {lang: _language_key(lang, first) for lang in (data.source_lang, data.target_lang)}
    for lang, key in keys.items():
        if key is None:
            raise DataError(
                f"{where}: language '{lang}' is not in the 'translation' mappings (they hold {', '.join(first)}); "
                "set data.source_lang/target_lang to two of those"
            )
    source_key, target_key = keys[data.source_lang], keys[data.target_lang]
    dataset = dataset.map(
        lambda row: {"source": row["translation"][source_key], "target": row["translation"][target_key]},
        remove_columns=["translation"],
        desc="Reading translation pairs",
    )
    return dataset


def _language_key(code: str, example: dict) -> str | None:
    for key in (code, re.split(r"[_-]", code)[0]):
        if key in example:
            return key
    return None
