"""The compression path end to end through the real CLI on tiny models: fine-tune a teacher, prune
it, distil the pruned student from it, export the student to int8 ONNX, and compare the three.
Also ``hftk compare``'s mistakes. The ONNX export dominates the time (one dynamo trace)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import shared_path, write

TINY_BERT = ("{model_type: bert, hidden_size: 32, num_hidden_layers: 4, num_attention_heads: 2, intermediate_size: 64, "
             "hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}")
WORDS = {"pos": ["good", "great", "lovely", "superb"], "neg": ["bad", "awful", "dull", "poor"]}
FILLER = ["the", "movie", "plot", "actors", "film", "story", "was", "and", "really", "quite"]


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = rng.sample(FILLER, 4) + [rng.choice(WORDS[label])]
        rng.shuffle(words)
        out.append({"text": " ".join(words), "label": label})
    return out


def jsonl(path: Path, items: list[dict]) -> Path:
    return write(path, "".join(json.dumps(item) + "\n" for item in items))


def recipe(path: Path, model: str, extra: str = "") -> Path:
    return write(path, (
        f"task: text-classification\nseed: 0\nprecision: fp32\nmodel: {model}\n"
        f"data: {{train: {path.parent / 'train.jsonl'}, max_length: 16}}\n{extra}"
        f"training: {{output_dir: {path.parent / path.stem}, max_steps: 30, per_device_train_batch_size: 16, learning_rate: 0.003, "
        "report_to: none, save_strategy: 'no', disable_tqdm: true}\n"))


def test_prune_distil_export_compare(cli, tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'hf_toolkit[onnx]'")
    tokenizer = shared_path("tokenizers", "bert-base-uncased")
    jsonl(tmp_path / "train.jsonl", rows(240, 0))
    test = jsonl(tmp_path / "test.jsonl", rows(40, 1))

    teacher_recipe = recipe(tmp_path / "teacher.yaml", f"{{init: scratch, tokenizer: {tokenizer}, config: {TINY_BERT}}}")
    assert cli("finetune", teacher_recipe).exit_code == 0
    teacher = tmp_path / "teacher"
    pruned = cli("prune", teacher, tmp_path / "pruned", "--keep-layers", "0,2")
    assert pruned.exit_code == 0, pruned
    student_recipe = recipe(tmp_path / "student.yaml", f"{{name_or_path: {tmp_path / 'pruned'}}}",
                            f"distillation: {{teacher: {teacher}, temperature: 2.0, alpha: 0.5}}\n")
    distilled = cli("finetune", student_recipe)
    assert distilled.exit_code == 0, distilled
    student = tmp_path / "student"
    assert f"**Distilled from:** `{teacher}`" in (student / "README.md").read_text()
    exported = cli("export", student, tmp_path / "int8", "--format", "onnx", "--quantize", "int8")
    assert exported.exit_code == 0, exported

    result = cli("compare", teacher, student, tmp_path / "int8", "--data", test, "--json", "--plot", tmp_path / "tradeoff.png")
    assert result.exit_code == 0, result
    measured = {Path(row["model"]).name: row for row in json.loads(result.stdout)}
    assert set(measured) == {"teacher", "student", "int8"}
    assert measured["student"]["params"] < measured["teacher"]["params"]
    assert measured["int8"]["size_mb"] < measured["student"]["size_mb"] < measured["teacher"]["size_mb"]
    for row in measured.values():
        assert row["metric"] == "accuracy" and 0 <= row["value"] <= 1
        assert row["latency_p50_ms"] > 0 and row["throughput_per_s"] > 0
    # the student learned the toy task from its labels and its teacher; int8 keeps its answers
    assert measured["student"]["value"] >= 0.9, measured
    assert abs(measured["int8"]["value"] - measured["student"]["value"]) <= 0.05
    assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"

    table = cli("compare", teacher, student, "--data", test)
    assert table.exit_code == 0 and "p50 ms @1" in table.stdout and "rows/s @32" in table.stdout


def test_compare_mistakes_exit_2(cli, tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    plain = tmp_path / "plain"
    BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32)).save_pretrained(plain)
    data = jsonl(tmp_path / "test.jsonl", rows(4, 0))
    result = cli("compare", plain, "--data", data)
    assert result.exit_code == 2 and "has no hftk_recipe.yaml" in result.stderr
    result = cli("compare", tmp_path / "nowhere", "--data", data)
    assert result.exit_code == 2 and "is not a directory" in result.stderr
    result = cli("compare", plain, "--data", data, "--set", "data.columns.text=review")
    assert result.exit_code == 2 and "has no hftk_recipe.yaml to override" in result.stderr
    (tmp_path / "taken.png").write_bytes(b"mine")
    result = cli("compare", plain, "--data", data, "--plot", tmp_path / "taken.png")
    assert result.exit_code == 2 and "exists; give a new file name" in result.stderr
    assert (tmp_path / "taken.png").read_bytes() == b"mine"
