"""The run directory tells its story: after a tiny run made by the real ``hftk`` command, the model
card holds every field (task, base model, data files with sha256 and rows, the resolved recipe,
final metrics, library versions, the command line, the hardware), the loss-curve PNG exists, is a
real PNG of a sensible size and is linked from the card; ``report_to: tensorboard`` writes event files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_lm_recipe, write

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def hftk_command() -> list[str]:
    script = Path(sys.executable).with_name("hftk")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hf_toolkit"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_corpus):
    tmp = tmp_path_factory.mktemp("card")
    corpus = write(tmp / "corpus.txt", tiny_corpus.read_text()[:8000])
    recipe = tiny_lm_recipe(tmp / "tiny.yaml", corpus, tmp / "run", data={"validation_split": 0.2, "block_size": 32},
                            training={"max_steps": 6, "logging_steps": 1, "eval_strategy": "steps", "eval_steps": 3,
                                      "per_device_train_batch_size": 8, "learning_rate": 1.0e-2, "save_strategy": "no",
                                      "report_to": "tensorboard" if HAS_TENSORBOARD else "none"})
    command = [*hftk_command(), "finetune", str(recipe), "--set", "training.warmup_steps=1"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run", corpus, recipe


def card_sections(card: str) -> dict[str, str]:
    sections, name = {}, "head"
    for line in card.splitlines():
        if line.startswith("## "):
            name = line[3:].strip()
            sections[name] = ""
        else:
            sections[name] = sections.get(name, "") + line + "\n"
    return sections


def test_card_names_task_base_model_and_data_with_hash_and_rows(run):
    out, corpus, _ = run
    card = (out / "README.md").read_text()
    assert "- **Task:** causal-lm" in card
    # Built from a config: the gpt2 architecture, not gpt2's weights.
    assert card.startswith("# causal-lm model: the gpt2 architecture trained from scratch\n")
    assert ("- **Base model:** none: the gpt2 architecture trained from scratch, its weights initialized at random "
            "from the recipe's config") in card and "fine-tune of" not in card
    data = card_sections(card)["Data"]
    digest = hashlib.sha256(corpus.read_bytes()).hexdigest()
    train_row = next(line for line in data.splitlines() if line.startswith("| train |"))
    assert str(corpus) in train_row and digest in train_row
    lines = [line for line in corpus.read_text().splitlines()]
    rows = int(train_row.split("|")[3])
    validation_row = next(line for line in data.splitlines() if line.startswith("| validation |"))
    assert rows + int(validation_row.split("|")[3]) == len(lines), "train + carved validation rows = the file's lines"
    assert "0.2 of train" in validation_row


def test_card_holds_the_resolved_recipe_and_final_metrics(run):
    out, _, _ = run
    sections = card_sections((out / "README.md").read_text())
    recipe_text = sections["Recipe (resolved)"].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(recipe_text) == yaml.safe_load((out / "hftk_recipe.yaml").read_text())
    assert yaml.safe_load(recipe_text)["training"]["warmup_steps"] == 1, "the --set override is in the resolved recipe"
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"| eval_loss | {metrics['eval_loss']:.4g} |" in sections["Metrics"]
    assert f"| eval_perplexity | {metrics['eval_perplexity']:.4g} |" in sections["Metrics"]


def test_card_says_versions_command_line_and_hardware(run):
    import torch
    import transformers

    out, _, recipe = run
    made = card_sections((out / "README.md").read_text())["How it was made"]
    assert f"| torch | {torch.__version__} |" in made
    assert f"| transformers | {transformers.__version__} |" in made
    for name in ("datasets", "peft", "hf_toolkit"):
        assert f"| {name} | " in made and f"| {name} | not installed |" not in made
    assert f"finetune {recipe} --set training.warmup_steps=1" in made
    assert "Hardware: CPU " in made and f"({os.cpu_count()} cores)" in made
    assert "GPU: " in made and "training processes: 1" in made


def test_loss_curve_is_a_real_png_linked_from_the_card(run):
    out, _, _ = run
    png = out / "loss_curve.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (600, 400), "one panel: losses (evaluation logged no metric besides its loss)"
    assert len(data) > 10_000, "a drawn plot, not an empty canvas"
    assert "![train and eval loss by step](loss_curve.png)" in (out / "README.md").read_text()


def test_loss_curve_adds_a_metrics_panel_when_evaluation_reports_metrics(tmp_path):
    from hf_toolkit.training import plot

    history = [{"loss": 3.0 - s / 10, "step": s} for s in range(1, 11)]
    history += [{"eval_loss": 2.5, "eval_accuracy": 0.6, "eval_runtime": 0.1, "step": 5},
                {"eval_loss": 2.1, "eval_accuracy": 0.8, "eval_runtime": 0.1, "step": 10}]
    assert plot.eval_metric_keys(history) == ["eval_accuracy"]
    path = plot.loss_curve(history, tmp_path / "curve.png")
    width, _ = struct.unpack(">II", path.read_bytes()[16:24])
    assert width == 1000, "two panels: losses, and the accuracy by step"
    assert plot.loss_curve([{"train_runtime": 1.0, "step": 3}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed (pip install -e '.[tensorboard]')")
def test_report_to_tensorboard_writes_event_files(run):
    out, _, _ = run
    events = list(out.rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events), sorted(p.name for p in out.rglob("*"))
