"""Unit tests of train.py's helpers that decide what the end of a run does."""

from __future__ import annotations

from types import SimpleNamespace

from hf_toolkit.train import evaluation_of_final_weights


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
