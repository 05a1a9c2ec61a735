"""The GPU paths, checked without a GPU: attention implementation choice and its checks, fused
AdamW, the liger-kernel switch, flash-attention sequence boundaries for padding-free packing, and
the throughput / MFU report. (tests/test_scale.py trains on a real GPU where there is one.)"""

from __future__ import annotations

import pytest
from conftest import shared_path, write

TINY = "{model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 16, n_positions: 32}"


def recipe_text(tmp_path, model_extra: str = "", training_extra: str = "") -> str:
    write(tmp_path / "t.txt", "hello world\n" * 20)
    return (f"task: causal-lm\nmodel: {{init: scratch, tokenizer: {shared_path('tokenizers', 'gpt2')}, config: {TINY}{model_extra}}}\n"
            f"data: {{train: {tmp_path / 't.txt'}, block_size: 16}}\n"
            f"training: {{output_dir: {tmp_path / 'run'}, max_steps: 1{training_extra}}}\n")


def problems_of(tmp_path, text: str) -> str:
    from hf_toolkit.errors import RecipeError
    from hf_toolkit.training.preflight import check_run

    path = write(tmp_path / "r.yaml", text)
    with pytest.raises(RecipeError) as raised:
        check_run(path)
    return str(raised.value)


def test_attn_implementation_reaches_the_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_toolkit.core.modeling import load_model
    from hf_toolkit.training.preflight import check_run

    recipe = check_run(write(tmp_path / "r.yaml", recipe_text(tmp_path, ", attn_implementation: eager"))).recipe
    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "gpt2"))
    assert load_model(AutoModelForCausalLM, recipe.model, tokenizer).config._attn_implementation == "eager"
    default = check_run(write(tmp_path / "d.yaml", recipe_text(tmp_path))).recipe
    assert load_model(AutoModelForCausalLM, default.model, tokenizer).config._attn_implementation == "sdpa"


def test_flash_attention_is_refused_before_loading_without_a_gpu_or_its_package(tmp_path, monkeypatch):
    import torch

    text = recipe_text(tmp_path, ", attn_implementation: flash_attention_2")
    assert "model.attn_implementation" in (message := problems_of(tmp_path, text)) and "needs a CUDA GPU" in message
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    from hf_toolkit.recipe import environment
    from hf_toolkit.recipe.schema import ModelSection

    monkeypatch.setattr(environment.importlib.util, "find_spec", lambda name: None)
    problems = environment.attention_problems(ModelSection(name_or_path="gpt2",
                                                           attn_implementation="flash_attention_2"))
    assert [p.message for p in problems] == ["'flash_attention_2' needs the flash-attn package: pip install flash-attn, or use 'sdpa'"]


def test_unknown_attention_implementation_gets_a_suggestion(tmp_path):
    message = problems_of(tmp_path, recipe_text(tmp_path, ", attn_implementation: sdpaa"))
    assert "unknown attention implementation 'sdpaa'" in message and "did you mean 'sdpa'" in message


def test_liger_kernel_switch_needs_its_package(tmp_path):
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed here: the switch passes through to the Trainer")
    message = problems_of(tmp_path, recipe_text(tmp_path, training_extra=", use_liger_kernel: true"))
    assert "training.use_liger_kernel" in message and "pip install liger-kernel" in message


def test_training_uses_fused_adamw_by_default(tmp_path):
    from hf_toolkit.training.preflight import check_run

    args = check_run(write(tmp_path / "r.yaml", recipe_text(tmp_path))).args
    assert str(getattr(args.optim, "value", args.optim)) == "adamw_torch_fused"


def test_padding_free_batches_carry_flash_attention_boundaries():
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_toolkit.tasks.causal_lm import padding_free_collator

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_layer=1, n_head=2, n_embd=8))
    texts = [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}]
    assert "cu_seq_lens_q" not in padding_free_collator(model)(texts)  # sdpa: position ids are enough
    model.config._attn_implementation = "flash_attention_2"
    batch = padding_free_collator(model)(texts)
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5] and batch["max_length_q"] == 3


def test_throughput_report_and_mfu():
    from hf_toolkit.training.throughput import gpu_peak_tflops, measure

    assert gpu_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_peak_tflops("NVIDIA A10G") == 125.0 and gpu_peak_tflops("NVIDIA H100 PCIe") == 756.0
    # The SXM5 card names itself "H100 80GB HBM3": its own peak, not the PCIe card's (31% lower).
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0 and gpu_peak_tflops("NVIDIA H100 SXM5") == 989.0
    assert gpu_peak_tflops("NVIDIA H100 NVL") == 835.0
    assert gpu_peak_tflops("NVIDIA H100") is None and gpu_peak_tflops("Some GPU") is None
    added, line = measure({"train_samples_per_second": 100.0}, 512.0, 85_000_000, device_name="NVIDIA A100-SXM4-80GB", lora=False)
    tokens = 100.0 * 512.0
    assert added["train_tokens_per_second"] == tokens
    assert added["train_model_tflops"] == pytest.approx(6 * 85e6 * tokens / 1e12, rel=1e-3)
    assert added["train_mfu"] == pytest.approx(6 * 85e6 * tokens / 312e12, rel=1e-3)
    assert "MFU 8.4% of the NVIDIA A100-SXM4-80GB's 312 TFLOP/s peak" in line
    cpu, cpu_line = measure({"train_samples_per_second": 2.0}, 100.0, 1_000_000, device_name=None, lora=True)
    assert "train_mfu" not in cpu and "LoRA does about 4/6 of that" in cpu_line


def test_gpu_and_cpu_mfu_share_one_flops_definition():
    """hftk's run report counts FLOPs as the benchmarks' MFU rows do (PaLM app. B with attention)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from benchmarks.compute import model_flops_per_token
    from hf_toolkit.training.throughput import flops_per_token, matmul_parameters, measure

    config = GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=500)
    model = GPT2LMHeadModel(config)
    n = matmul_parameters(model)  # the tied LM head counts: every token goes through it
    assert n == model.num_parameters(exclude_embeddings=True) + 500 * 64
    ours = flops_per_token(n, 2, 64, 128)
    theirs = model_flops_per_token(2, 64, 500, 128)
    assert abs(ours - theirs) / theirs < 0.02, (ours, theirs)  # only biases and layer norms differ (~1/width)
    added, line = measure({"train_samples_per_second": 1000.0}, 128.0, n, device_name=None, lora=False, layers=2, width=64)
    assert added["train_model_tflops"] == pytest.approx(ours * 128_000 / 1e12, rel=1e-3)
    assert "12 x 2 layers x 64 x 128 tokens" in line


def test_mean_tokens_reads_real_lengths():
    from datasets import Dataset

    from hf_toolkit.training.throughput import mean_tokens

    assert mean_tokens(Dataset.from_dict({"input_ids": [[1, 2, 3], [4], [5, 6]]})) == 2.0
    assert mean_tokens(Dataset.from_dict({"text": ["a"]})) is None
