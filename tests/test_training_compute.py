"""What training computes in, without training: the run log's lines on the precision and the
attention kernel and why (from the model config, TrainingArguments' flags and torch's own kernel
choice), and the defaults hftk picks for speed (fused AdamW)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hf_toolkit.core import attention, modeling
from hf_toolkit.training import arguments as training_args


def tiny_bert(**config):
    from transformers import BertConfig, BertForQuestionAnswering

    with torch.device("meta"):  # the config is all that is read: no weights
        return BertForQuestionAnswering(BertConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=64, **config))


def test_attention_dropout_leaves_the_fused_cpu_kernel_and_the_line_says_which_key_to_set():
    if attention.sdpa_kernel(0.0, torch.bfloat16) != "flash":
        pytest.skip("this torch has no fused CPU attention kernel")
    on = attention.describe_attention(tiny_bert(attention_probs_dropout_prob=0.1), dtype=torch.bfloat16)
    assert on == ("attention: sdpa, math fallback while training (attention_probs_dropout_prob 0.1 > 0 leaves the fused "
                  "CPU kernel; set model.config.attention_probs_dropout_prob: 0 to keep it; faster on long sequences, "
                  "not on short ones)")
    off = attention.describe_attention(tiny_bert(attention_probs_dropout_prob=0.0), dtype=torch.float32)
    assert off == "attention: sdpa, fused flash kernel (attention_probs_dropout_prob 0)"
    eager = tiny_bert(attention_probs_dropout_prob=0.0)
    eager.config._attn_implementation = "eager"
    assert attention.describe_attention(eager, dtype=torch.float32).startswith("attention: eager (no fused kernel")


def test_attention_dropout_is_found_under_each_family_s_key_and_in_a_pair_s_sides():
    from transformers import (
        BertConfig,
        DistilBertConfig,
        EncoderDecoderConfig,
        GPT2Config,
    )

    assert attention.attention_dropout(GPT2Config(attn_pdrop=0.1)) == ("attn_pdrop", 0.1)
    assert attention.attention_dropout(DistilBertConfig(attention_dropout=0.0)) == ("attention_dropout", 0.0)
    pair = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(attention_probs_dropout_prob=0.1),
                                                             BertConfig(attention_probs_dropout_prob=0.0))
    assert attention.attention_dropout(pair) == ("encoder.attention_probs_dropout_prob", 0.1)
    assert attention.attention_dropout(SimpleNamespace()) is None


def args(bf16=False, fp16=False):
    return SimpleNamespace(bf16=bf16, fp16=fp16, use_cpu=True)


@pytest.mark.parametrize(("precision", "flags", "features", "line"), [
    ("auto", args(bf16=True), ["AMX-BF16"], "precision: bf16 autocast (precision: auto; this CPU has AMX-BF16)"),
    ("auto", args(), [], "precision: fp32 (precision: auto; this CPU has neither AMX-BF16 nor AVX512-BF16, "
                         "so bf16 is emulated and slower than fp32)"),
    ("default", args(bf16=True), ["AVX512-BF16"], "precision: bf16 autocast (the recipe sets no precision: bf16 where the "
                                                   "hardware runs it natively; this CPU has AVX512-BF16)"),
    ("default", args(), [], "precision: fp32 (the recipe sets no precision: bf16 where the hardware runs it natively; "
                            "this CPU has neither AMX-BF16 nor AVX512-BF16, so bf16 is emulated and slower than fp32)"),
    (None, args(bf16=True), ["AMX-BF16"], "precision: bf16 autocast (training.bf16: true, training.fp16: false; "
                                          "this CPU has AMX-BF16)"),
    (None, args(), ["AMX-BF16"], "precision: fp32 (training.bf16: false, training.fp16: false; this CPU has AMX-BF16)"),
])
def test_precision_line_says_what_and_why(monkeypatch, precision, flags, features, line):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training_args, "cpu_bf16_features", lambda: features)
    assert training_args.describe_precision(precision, flags) == line


def test_a_recipe_without_precision_trains_in_bf16_only_where_it_is_native(monkeypatch, tmp_path):
    from hf_toolkit.recipe.checks import validate_recipe

    (tmp_path / "t.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    base = {"task": "causal-lm", "model": {"name_or_path": "./"}, "data": {"train": "t.txt"}}
    recipe = validate_recipe(base)
    assert training_args.precision_setting(recipe) == "default"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training_args, "cpu_has_native_bf16", lambda: True)
    assert training_args.precision_flags(recipe, {}) == {"bf16": True, "fp16": False}
    monkeypatch.setattr(training_args, "cpu_has_native_bf16", lambda: False)
    assert training_args.precision_flags(recipe, {}) == {"bf16": False, "fp16": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert training_args.precision_flags(recipe, {}) == {"bf16": False, "fp16": False}  # fp16 only when asked
    written = validate_recipe({**base, "training": {"bf16": False}})
    assert training_args.precision_setting(written) is None
    assert training_args.precision_flags(written, {"bf16": False}) == {}  # training.bf16 as written


def test_training_logs_both_lines(monkeypatch):
    monkeypatch.setattr(training_args, "cpu_bf16_features", lambda: ["AMX-BF16"])
    lines = training_args.describe_compute("auto", args(bf16=True), tiny_bert(attention_probs_dropout_prob=0.0))
    assert lines[0] == "precision: bf16 autocast (precision: auto; this CPU has AMX-BF16)"
    assert lines[1].startswith("attention: sdpa")


def test_fused_adamw_is_the_default_and_a_recipe_s_optimizer_wins(tmp_path, monkeypatch):
    from hf_toolkit.recipe.checks import validate_recipe
    from hf_toolkit.tasks import TASKS

    (tmp_path / "t.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    base = {"task": "causal-lm", "model": {"name_or_path": "./"}, "data": {"train": "t.txt"}}
    task = TASKS["causal-lm"]
    built = training_args.training_arguments(validate_recipe(base), task, default_output_dir="run")
    assert built.optim == "adamw_torch_fused"
    chosen = validate_recipe({**base, "training": {"optim": "adamw_torch"}})
    assert training_args.training_arguments(chosen, task, default_output_dir="run").optim == "adamw_torch"


def test_a_peft_model_is_unwrapped_and_counted_by_one_helper():
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=40))
    total = modeling.parameter_counts(model)["total"]
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    assert modeling.is_peft(wrapped) and not modeling.is_peft(model)
    assert modeling.base_model(wrapped) is model and modeling.base_model(model) is model
    counts = modeling.parameter_counts(wrapped)
    assert counts["total"] == total + counts["trainable"] and 0 < counts["trainable"] < total


def test_one_reading_of_a_config_s_dims_for_gpt2_bert_and_encoder_decoders():
    from transformers import (
        BartConfig,
        BertConfig,
        EncoderDecoderConfig,
        GPT2Config,
        T5Config,
    )

    gpt2 = GPT2Config(n_layer=3, n_head=4, n_embd=32, n_positions=128, vocab_size=500)
    assert modeling.config_dims(gpt2) == modeling.Dims(layers=3, hidden=32, heads=4, ffn=128, vocab=500, positions=128)
    assert modeling.config_dims(GPT2Config(n_embd=32, n_inner=40)).ffn == 40  # n_inner None: 4 x width
    bert = BertConfig(num_hidden_layers=2, hidden_size=48, num_attention_heads=3, intermediate_size=96,
                      vocab_size=700, max_position_embeddings=256)
    assert modeling.config_dims(bert) == modeling.Dims(layers=2, hidden=48, heads=3, ffn=96, vocab=700, positions=256)
    t5 = T5Config(num_layers=2, num_decoder_layers=3, d_model=64, num_heads=4, d_ff=128, vocab_size=300)
    assert modeling.config_dims(t5) == modeling.Dims(layers=5, hidden=64, heads=4, ffn=128, vocab=300, positions=None)
    bart = BartConfig(encoder_layers=2, decoder_layers=1, d_model=32, encoder_attention_heads=2, encoder_ffn_dim=64,
                      vocab_size=400, max_position_embeddings=64)
    assert modeling.config_dims(bart) == modeling.Dims(layers=3, hidden=32, heads=2, ffn=64, vocab=400, positions=64)
    pair = EncoderDecoderConfig.from_encoder_decoder_configs(bert, gpt2)  # BERT2GPT2: both stacks, the decoder's vocabulary
    assert modeling.config_dims(pair) == modeling.Dims(layers=5, hidden=48, heads=4, ffn=128, vocab=500, positions=None)
