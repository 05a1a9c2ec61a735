"""Padding-free packing of causal-LM texts (``data.packing: padding_free``): a batch joined into one
row whose position ids restart at each text must compute exactly what each text computes alone."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import finetune, shared_path, write


def tiny_gpt2():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=64, n_layer=2, n_head=2, n_embd=32)).eval()


def test_a_flattened_batch_computes_what_each_text_computes_alone():
    import torch

    from hf_toolkit.tasks.causal_lm import padding_free_collator

    model = tiny_gpt2()
    texts = [[5, 9, 12, 40, 3], [7, 7, 8], [60, 61, 62, 63, 64, 65, 66, 2], [11, 4]]
    batch = padding_free_collator(model)([{"input_ids": ids} for ids in texts])
    assert batch["input_ids"].shape == (1, sum(map(len, texts)))  # no padding at all
    assert batch["position_ids"][0].tolist() == [i for ids in texts for i in range(len(ids))]
    with torch.no_grad():
        flat = model(**batch)
        start, losses, counts = 0, [], []
        for ids in texts:
            alone = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids]))
            torch.testing.assert_close(flat.logits[0, start : start + len(ids)], alone.logits[0], atol=1e-5, rtol=1e-5)
            losses.append(alone.loss * (len(ids) - 1))
            counts.append(len(ids) - 1)
            start += len(ids)
    # The flattened loss is the token mean over all texts, each text's first token predicting nothing.
    torch.testing.assert_close(flat.loss, sum(losses) / sum(counts), atol=1e-5, rtol=1e-5)


def test_without_the_restarting_positions_texts_would_attend_to_each_other():
    """The check above can fail: the same row without position ids is one long text."""
    import torch

    from hf_toolkit.tasks.causal_lm import padding_free_collator

    model = tiny_gpt2()
    texts = [[5, 9, 12, 40, 3], [7, 7, 8]]
    batch = padding_free_collator(model)([{"input_ids": ids} for ids in texts])
    with torch.no_grad():
        joined = model(input_ids=batch["input_ids"]).logits[0, 5:]
        alone = model(input_ids=torch.tensor([texts[1]])).logits[0]
    assert (joined - alone).abs().max() > 1e-3


def test_padding_free_recipe_trains_and_loads_back(tmp_path):
    tokenizer = shared_path("tokenizers", "gpt2")
    lines = ["Once upon a time there was a little fox.", "The sun rose.", "A very long story " * 12, "Hello there, friend."] * 16
    data = write(tmp_path / "texts.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in lines))
    recipe = write(tmp_path / "r.yaml", textwrap.dedent(f"""\
        task: causal-lm
        seed: 0
        model:
          init: scratch
          tokenizer: {tokenizer}
          config: {{model_type: gpt2, n_layer: 2, n_head: 2, n_embd: 32, n_positions: 64}}
        data: {{train: {data}, block_size: 32, packing: padding_free}}
        training: {{output_dir: {tmp_path / 'run'}, max_steps: 12, per_device_train_batch_size: 8, learning_rate: 5e-3,
                   save_strategy: "no", disable_tqdm: true, logging_steps: 1}}
        """))
    finetune(recipe)
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 12 and losses[-1] < losses[0] - 1.0, losses
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "run").config.n_layer == 2


def test_padding_free_is_a_causal_lm_option_only(tmp_path):
    from hf_toolkit.errors import RecipeError
    from hf_toolkit.recipe.checks import validate_recipe

    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": 0}\n')
    with pytest.raises(RecipeError, match="packing"):
        validate_recipe({"task": "text-classification", "model": {"name_or_path": "x"},
                         "data": {"train": str(tmp_path / "t.jsonl"), "packing": "padding_free"}})
    with pytest.raises(RecipeError, match="packing"):
        validate_recipe({"task": "causal-lm", "model": {"name_or_path": "x"},
                         "data": {"train": str(tmp_path / "t.jsonl"), "packing": "tight"}})
