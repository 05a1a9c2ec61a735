"""No run changes a caller's tokenizer or shares its own with the next run: question answering pads
on the right without touching the tokenizer it was given, a too-long question is a data error
naming it, and encoder-decoder pair tokenizers are built anew for every run."""

from __future__ import annotations

import pytest
from conftest import shared_path


def test_question_answering_leaves_the_callers_tokenizer_alone():
    from transformers import AutoTokenizer

    from hf_toolkit.tasks import TASKS
    from hf_toolkit.tasks.question_answering import QuestionAnsweringData, encode

    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "bert-base-uncased"), padding_side="left")
    settings = QuestionAnsweringData.model_construct(max_length=32, doc_stride=8)
    encode(tokenizer, ["Where?"], ["In a small town by the sea. " * 10], settings)
    collator = TASKS["question-answering"].trainer_kwargs(None, tokenizer, None)["data_collator"]
    assert tokenizer.padding_side == "left"
    assert collator.tokenizer.padding_side == "right"


def test_a_too_long_question_is_a_data_error_naming_it():
    from transformers import AutoTokenizer

    from hf_toolkit.errors import DataError
    from hf_toolkit.tasks.question_answering import QuestionAnsweringData, encode

    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "bert-base-uncased"))
    settings = QuestionAnsweringData.model_construct(max_length=32, doc_stride=8)
    with pytest.raises(DataError, match="question 'why why why.*leaves no room for context"):
        encode(tokenizer, ["why " * 40], ["Because."], settings)


def test_pair_tokenizers_are_not_shared_between_runs(tmp_path):
    """No process-wide cache hands one run's (mutable) tokenizer to the next."""
    from hf_toolkit.recipe.checks import validate_recipe
    from hf_toolkit.tasks import TASKS

    bert, gpt2 = shared_path("tokenizers", "bert-base-uncased"), shared_path("tokenizers", "gpt2")
    recipe = validate_recipe({
        "task": "summarization", "data": {"train": "t.jsonl"},
        "model": {"encoder": {"init": "scratch", "tokenizer": str(bert), "config": {"model_type": "bert"}},
                  "decoder": {"init": "scratch", "tokenizer": str(gpt2), "config": {"model_type": "gpt2"}}},
    })
    task = TASKS["summarization"]
    first, second = task.target_tokenizer(recipe, None), task.target_tokenizer(recipe, None)
    assert first is not second and type(first).__name__.startswith("GPT2")
    first.padding_side = "left"
    assert second.padding_side == "right"
