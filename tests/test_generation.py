"""Unit tests of how hftk generate merges a model's saved decoding settings with the user's options."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hf_toolkit.errors import HftkError
from hf_toolkit.generation import DEFAULT_MAX_NEW_TOKENS, generation_config


def saved(**settings):
    """A stand-in for a loaded model and tokenizer: only the generation config matters here."""
    from transformers import GenerationConfig

    return SimpleNamespace(generation_config=GenerationConfig(**settings)), SimpleNamespace(pad_token_id=0)


def test_greedy_turns_off_the_saved_sampling_settings():
    model, tokenizer = saved(do_sample=True, temperature=0.8, top_k=40, max_new_tokens=60)
    config = generation_config(model, tokenizer, {"do_sample": False})
    assert config.do_sample is False
    assert config.temperature is None and config.top_k is None
    assert config.max_new_tokens == 60  # everything else stays as saved
    assert model.generation_config.temperature == 0.8  # the model's own config is not touched


def test_max_length_replaces_the_saved_max_new_tokens():
    model, tokenizer = saved(max_new_tokens=60)
    config = generation_config(model, tokenizer, {"max_length": 5, "max_new_tokens": None})
    assert config.max_length == 5 and config.max_new_tokens is None


def test_default_length_when_neither_model_nor_user_sets_one():
    model, tokenizer = saved()
    assert generation_config(model, tokenizer, {}).max_new_tokens == DEFAULT_MAX_NEW_TOKENS


def test_impossible_combinations_are_user_errors():
    model, tokenizer = saved()
    with pytest.raises(HftkError, match="num_return_sequences"):
        generation_config(model, tokenizer, {"num_return_sequences": 3})
