"""Unit tests of the helpers that decide what the end of a run does (final evaluation, checkpoints, precision)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from hf_toolkit.tasks.base import evaluation_of_final_weights
from hf_toolkit.training.checkpoints import latest_checkpoint


def fake_trainer(history: list[dict], global_step: int, load_best: bool = False):
    return SimpleNamespace(
        args=SimpleNamespace(load_best_model_at_end=load_best),
        state=SimpleNamespace(log_history=history, global_step=global_step),
    )


HISTORY = [
    {"loss": 2.0, "step": 5},
    {"eval_loss": 1.5, "eval_accuracy": 0.5, "epoch": 1.0, "step": 5},
    {"loss": 1.0, "step": 10},
    {"eval_loss": 0.9, "eval_accuracy": 0.8, "epoch": 2.0, "step": 10},
    {"train_runtime": 3.0, "step": 10},
]


def test_reuses_the_evaluation_made_at_the_final_step():
    assert evaluation_of_final_weights(fake_trainer(HISTORY, 10)) == {"eval_loss": 0.9, "eval_accuracy": 0.8, "epoch": 2.0}


def test_evaluates_again_when_the_last_evaluation_is_older_than_the_weights():
    assert evaluation_of_final_weights(fake_trainer(HISTORY[:3], 10)) is None


def test_evaluates_again_without_any_evaluation_or_after_loading_the_best_model():
    assert evaluation_of_final_weights(fake_trainer([{"loss": 1.0, "step": 10}], 10)) is None
    assert evaluation_of_final_weights(fake_trainer(HISTORY, 10, load_best=True)) is None


RESUMABLE = """\
task: causal-lm
seed: 0
model:
  init: scratch
  train_tokenizer: {{vocab_size: 300}}
  config: {{model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 16, n_positions: 64}}
data: {{train: {train}, block_size: 32}}
training:
  output_dir: run
  max_steps: {steps}
  per_device_train_batch_size: 4
  logging_steps: 1
  save_strategy: steps
  save_steps: 2
  disable_tqdm: true
"""


def test_resume_from_checkpoint_continues_the_saved_run(tmp_path, tiny_corpus, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = tiny_corpus.read_text()
    (tmp_path / "a.txt").write_text(text[:6000])
    (tmp_path / "b.txt").write_text(text[6000:12000])
    (tmp_path / "first.yaml").write_text(RESUMABLE.format(train="a.txt", steps=4))
    assert cli("finetune", "first.yaml").exit_code == 0
    first = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    assert (tmp_path / "run" / "checkpoint-4").is_dir()

    # A save cut short (no trainer_state.json) is skipped, not resumed from.
    (tmp_path / "run" / "checkpoint-6").mkdir()
    (tmp_path / "run" / "checkpoint-6" / "model.safetensors").write_bytes(b"")
    # Other text would not continue the same run: refused (issue 12).
    (tmp_path / "other.yaml").write_text(RESUMABLE.format(train="b.txt", steps=6))
    refused = cli("finetune", "other.yaml", "--set", "training.resume_from_checkpoint=true")
    assert refused.exit_code == 2 and "data.train: was a.txt when checkpoint-4 was saved, now b.txt" in refused.stderr
    # More steps: steps 1-4 come from the checkpoint (the log history marked there is kept), 5-6 are new.
    saved_state = tmp_path / "run" / "checkpoint-4" / "trainer_state.json"
    marked = json.loads(saved_state.read_text())
    for entry in marked["log_history"]:
        if "loss" in entry:
            entry["loss"] += 1000.0
    saved_state.write_text(json.dumps(marked))
    (tmp_path / "second.yaml").write_text(RESUMABLE.format(train="a.txt", steps=6))
    result = cli("finetune", "second.yaml", "--set", "training.resume_from_checkpoint=true")
    assert result.exit_code == 0, result
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    losses = {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}
    assert [losses[s] for s in range(1, 5)] == [e["loss"] + 1000.0 for e in first if "loss" in e]
    assert all(losses[s] < 1000.0 for s in (5, 6))
    assert set(losses) == set(range(1, 7))


def test_resume_and_script_only_training_keys_are_checked(tmp_path, tiny_corpus, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text(tiny_corpus.read_text()[:3000])
    (tmp_path / "r.yaml").write_text(RESUMABLE.format(train="a.txt", steps=2))
    result = cli("finetune", "r.yaml", "--check", "--set", "training.resume_from_checkpoint=true")
    assert result.exit_code == 2
    assert "training.resume_from_checkpoint: no complete checkpoint-* directory in run" in result.stderr
    do_eval = cli("finetune", "r.yaml", "--check", "--set", "training.do_eval=true")
    assert do_eval.exit_code == 2
    assert "training.do_eval: remove it: the Trainer does not read it (only example scripts do), and evaluation runs when there is validation data" in do_eval.stderr
    missing = cli("finetune", "r.yaml", "--check", "--set", "training.resume_from_checkpoint=run/checkpoint-9")
    assert missing.exit_code == 2 and "checkpoint directory not found: 'run/checkpoint-9'" in missing.stderr
    (tmp_path / "run" / "checkpoint-2").mkdir(parents=True)
    partial = cli("finetune", "r.yaml", "--check", "--set", "training.resume_from_checkpoint=true")
    assert partial.exit_code == 2 and "no complete checkpoint-* directory in run" in partial.stderr
    named = cli("finetune", "r.yaml", "--check", "--set", "training.resume_from_checkpoint=run/checkpoint-2")
    assert named.exit_code == 2 and "has no readable trainer_state.json" in named.stderr


def test_latest_checkpoint_skips_saves_cut_short(tmp_path):
    assert latest_checkpoint(str(tmp_path / "missing")) is None
    for step, complete in ((5, True), (10, True), (15, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")


def test_precision_auto_on_cuda_gpus(monkeypatch):
    """The GPU branch, without a GPU: bf16 where the GPU supports it, else fp16."""
    import torch

    from hf_toolkit.training import arguments as train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert train.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert train.resolve_precision("auto") == "fp16"
    assert train.resolve_precision("fp16") == "fp16"  # allowed on a GPU
    assert train.resolve_precision("fp32") == "fp32"
