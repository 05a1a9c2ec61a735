"""Scale: LoRA fine-tuning and merged export, real 2-process CPU DDP, precision selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hf_toolkit.errors import RecipeError

TINY_GPT2 = "{model_type: gpt2, n_layer: 2, n_head: 2, n_embd: 32, n_positions: 64, resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}"


def hftk(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hf_toolkit", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=900, env=os.environ)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_corpus) -> Path:
    work = tmp_path_factory.mktemp("scale")
    (work / "train.txt").write_text(tiny_corpus.read_text()[:20_000])
    return work


@pytest.fixture(scope="module")
def base_model(corpus) -> Path:
    """A tiny GPT-2 'pretrained' base saved to disk (LoRA needs saved base weights)."""
    recipe = corpus / "base.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        task: causal-lm
        model:
          init: scratch
          train_tokenizer: {{vocab_size: 400}}
          config: {TINY_GPT2}
        data: {{train: train.txt, block_size: 32}}
        training: {{output_dir: base, max_steps: 30, learning_rate: 3e-3, save_strategy: "no", disable_tqdm: true}}
        """))
    result = hftk("finetune", recipe, cwd=corpus)
    assert result.returncode == 0, result.stderr[-3000:]
    return corpus / "base"


@pytest.fixture(scope="module")
def lora_run(corpus, base_model) -> tuple[Path, subprocess.CompletedProcess]:
    recipe = corpus / "lora.yaml"
    recipe.write_text(textwrap.dedent("""\
        task: causal-lm
        model: {name_or_path: ./base}
        data: {train: train.txt, block_size: 32, validation_split: 0.1}
        peft: {r: 4, alpha: 8, dropout: 0.0}
        generation: {max_new_tokens: 3, repetition_penalty: 1.3}
        training: {output_dir: lora, max_steps: 20, learning_rate: 1e-2, logging_steps: 5, save_strategy: "no", disable_tqdm: true}
        """))
    result = hftk("finetune", recipe, cwd=corpus)
    assert result.returncode == 0, result.stderr[-3000:]
    return corpus / "lora", result


def test_full_finetune_of_a_saved_model_changes_every_parameter(base_model, corpus):
    """Fine-tuning pretrained (saved) weights trains all of them: every tensor moves."""
    import torch
    from safetensors.torch import load_file

    recipe = corpus / "full.yaml"
    recipe.write_text(textwrap.dedent("""\
        task: causal-lm
        model: {name_or_path: ./base}
        data: {train: train.txt, block_size: 32}
        training: {output_dir: full, max_steps: 3, learning_rate: 1e-3, save_strategy: "no", disable_tqdm: true}
        """))
    result = hftk("finetune", recipe, cwd=corpus)
    assert result.returncode == 0, result.stderr[-3000:]
    before, after = load_file(base_model / "model.safetensors"), load_file(corpus / "full" / "model.safetensors")
    assert before.keys() == after.keys()
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert not unchanged, unchanged


def test_lora_trains_only_adapters_and_saves_an_adapter(lora_run, base_model):
    run, result = lora_run
    assert "trainable" in result.stderr and "PeftModelForCausalLM" in result.stderr
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["target_modules"] and set(config["target_modules"]) == {"c_attn", "c_proj"}
    assert config["fan_in_fan_out"] is True  # GPT-2 Conv1D
    assert not (run / "model.safetensors").exists()
    from safetensors.torch import load_file

    adapter = load_file(run / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # B starts at zero: nonzero means it trained


def test_lora_run_generates_and_merged_export_matches(lora_run, corpus, cli):
    run, _ = lora_run
    generated = cli("generate", "--model", run, "--prompt", "Once upon a time", "--max-new-tokens", "6", "--json")
    assert generated.exit_code == 0, generated
    assert json.loads(generated.stdout)[0]["prompt"] == "Once upon a time"

    result = cli("export", run, corpus / "merged", "--merge")
    assert result.exit_code == 0, result
    card = (corpus / "merged" / "README.md").read_text()
    assert card.startswith("# Exported from `lora`: LoRA weights merged\n")
    assert f"the LoRA adapter of the run `{run}` (rank 4, alpha 8, on " in card and "merged into the weights of its base model" in card
    assert "## The run it was exported from" in card and "\n## causal-lm fine-tune of ./base\n" in card  # its card, one level down
    assert (corpus / "merged" / "hftk_recipe.yaml").read_text() == (run / "hftk_recipe.yaml").read_text()
    # The recipe's generation section travels with the adapter and into the merged model.
    for saved in (run / "model_config", corpus / "merged"):
        settings = json.loads((saved / "generation_config.json").read_text())
        assert settings["max_new_tokens"] == 3 and settings["repetition_penalty"] == 1.3, saved
    code = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoModelForCausalLM
        merged = AutoModelForCausalLM.from_pretrained({str(corpus / "merged")!r})
        assert "peft" not in sys.modules, "the merged model must load without peft"
        from peft import PeftModel
        base = AutoModelForCausalLM.from_pretrained({str(corpus / "base")!r})
        adapter = PeftModel.from_pretrained(base, {str(run)!r}).eval()
        ids = torch.randint(0, 400, (2, 24))
        with torch.no_grad():
            print(float((merged(ids).logits - adapter(ids).logits).abs().max()))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[0]) < 1e-5


def test_lora_run_generates_with_its_recipes_generation_settings(lora_run, cli):
    from transformers import AutoTokenizer

    run, _ = lora_run
    result = cli("generate", "--model", run, "--prompt", "Once upon a time", "--json")
    assert result.exit_code == 0, result
    text = json.loads(result.stdout)[0]["text"]
    tokenizer = AutoTokenizer.from_pretrained(run)
    assert 0 < len(tokenizer(text).input_ids) <= 3  # the run's max_new_tokens, not the base's default


def test_export_mistakes_exit_2(base_model, corpus, cli):
    assert "no LoRA adapter" in cli("export", base_model, corpus / "x", "--merge").stderr
    assert cli("export", base_model, corpus / "x").exit_code == 2
    assert "not supported" in cli("export", base_model, corpus / "x", "--quantize", "int4").stderr


def test_lora_with_scratch_init_is_rejected(corpus, cli, monkeypatch):
    monkeypatch.chdir(corpus)
    recipe = corpus / "bad.yaml"
    recipe.write_text(f"task: causal-lm\nmodel: {{init: scratch, train_tokenizer: {{vocab_size: 300}}, config: {TINY_GPT2}}}\n"
                      "data: {train: train.txt}\npeft: {r: 4}\n")
    result = cli("finetune", recipe, "--check")
    assert result.exit_code == 2 and "LoRA adapts pretrained weights" in result.stderr


@pytest.mark.slow  # 4 hftk processes; 2 ranks = 1 process x 2b runs by default in test_distributed_training
def test_two_process_ddp_halves_steps_and_matches_one_process(corpus):
    """2 ranks x batch 4 must equal 1 rank x batch 8 (same global batch, same data order).

    Tolerance: both runs see the same 8 blocks per step and average gradients; only float
    summation order differs (gloo all-reduce vs one batch). AdamW normalises updates to about
    lr = 1e-3 per step, so 5e-4 after 12 steps is far below what a run that did not sync
    gradients (each rank training alone on half the data) would show.
    """
    recipe = corpus / "ddp.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        task: causal-lm
        precision: fp32  # compared to 5e-4: bf16 rounds a batch of 8 and two of 4 differently
        seed: 0
        model: {{init: scratch, train_tokenizer: {{vocab_size: 300}}, config: {TINY_GPT2}}}
        data: {{train: train.txt, block_size: 32, max_train_samples: 220}}
        training: {{output_dir: ddp2, num_train_epochs: 1, per_device_train_batch_size: 4, learning_rate: 1e-3,
                   save_strategy: "no", disable_tqdm: true, logging_steps: 1}}
        """))
    two = hftk("finetune", recipe, "--nproc", 2, cwd=corpus)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("Saved to") == 1  # only rank 0 prints results
    one = hftk("finetune", recipe, "--set", "training.output_dir=ddp1", "--set", "training.per_device_train_batch_size=8", cwd=corpus)
    assert one.returncode == 0, one.stderr[-3000:]
    small = hftk("finetune", recipe, "--set", "training.output_dir=small", cwd=corpus)
    assert small.returncode == 0, small.stderr[-3000:]

    steps = {name: json.loads((corpus / name / "trainer_state.json").read_text())["global_step"] for name in ("ddp2", "ddp1", "small")}
    assert steps["ddp2"] == steps["ddp1"] and steps["small"] in (2 * steps["ddp2"], 2 * steps["ddp2"] - 1), steps

    from safetensors.torch import load_file

    weights = {name: load_file(corpus / name / "model.safetensors") for name in ("ddp2", "ddp1", "small")}
    diff = max(float((weights["ddp2"][k] - weights["ddp1"][k]).abs().max()) for k in weights["ddp1"])
    unsynced = max(float((weights["small"][k] - weights["ddp1"][k]).abs().max()) for k in weights["ddp1"])
    assert diff < 5e-4, diff
    assert unsynced > 10 * diff  # the tolerance tells real differences apart


def test_precision_auto_and_conflicts(monkeypatch, tmp_path):
    from hf_toolkit.recipe.checks import validate_recipe
    from hf_toolkit.training import arguments as training_args

    (tmp_path / "t.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    base = {"task": "causal-lm", "model": {"name_or_path": "./"}, "data": {"train": "t.txt"}}
    recipe = validate_recipe({**base, "precision": "auto"})
    monkeypatch.setattr(training_args, "cpu_has_native_bf16", lambda: False)
    assert training_args.precision_flags(recipe, {}) == {"bf16": False, "fp16": False}
    monkeypatch.setattr(training_args, "cpu_has_native_bf16", lambda: True)
    assert training_args.precision_flags(recipe, {}) == {"bf16": True, "fp16": False}
    with pytest.raises(RecipeError, match="not both"):
        training_args.precision_flags(recipe, {"bf16": True})
    with pytest.raises(RecipeError, match="fp16 needs a CUDA GPU"):
        training_args.precision_flags(validate_recipe({**base, "precision": "fp16"}), {})
    assert training_args.precision_flags(validate_recipe(base), {"bf16": True}) == {}


@pytest.mark.gpu
def test_precision_auto_trains_in_mixed_precision_on_a_gpu(corpus):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (this checks the real bf16/fp16 path)")
    recipe = corpus / "gpu.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        task: causal-lm
        precision: auto
        model: {{init: scratch, train_tokenizer: {{vocab_size: 300}}, config: {TINY_GPT2}}}
        data: {{train: train.txt, block_size: 32}}
        training: {{output_dir: gpu, max_steps: 10, learning_rate: 1e-3, save_strategy: "no", disable_tqdm: true, logging_steps: 1}}
        """))
    result = hftk("finetune", recipe, cwd=corpus)
    assert result.returncode == 0, result.stderr[-3000:]
    args = torch.load(corpus / "gpu" / "training_args.bin", weights_only=False)
    assert args.bf16 == torch.cuda.is_bf16_supported() and args.fp16 == (not args.bf16)
    losses = [e["loss"] for e in json.loads((corpus / "gpu" / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert all(loss == loss for loss in losses) and losses[-1] < losses[0]  # finite (no NaN) and falling
