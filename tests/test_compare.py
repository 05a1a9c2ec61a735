"""``hftk compare`` beyond classification (which tests/test_compression_e2e.py covers): causal-LM
(perplexity, lower is better, tokens/s), masked-LM (masked-token accuracy, tokens/s) and
summarization / translation (ROUGE-L / BLEU, one generate call per row), each metric equal to what
``hftk eval --model`` reports for the same model and file; ONNX exports of a causal LM; and the
task/format pairs compare refuses (exit 2, before any model loads). Tiny models trained for a few
steps on the shared data: the numbers' agreement, not their size, is the point."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import finetune, shared_path, write

GPT2 = "{model_type: gpt2, n_layer: 2, n_head: 2, n_embd: 32, n_positions: 64}"
BERT = ("{model_type: bert, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, "
        "max_position_embeddings: 64}")
T5 = "{model_type: t5, d_model: 32, d_ff: 64, num_layers: 2, num_decoder_layers: 2, num_heads: 2, d_kv: 16, dropout_rate: 0.0}"
TRAINING = "training: {{output_dir: {out}, max_steps: {steps}, per_device_train_batch_size: 8, learning_rate: 0.005, " \
           "report_to: none, save_strategy: 'no', eval_strategy: 'no', disable_tqdm: true}}\n"
WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree"]


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


def train(work: Path, name: str, head: str, steps: int = 2) -> Path:
    finetune(write(work / f"{name}.yaml", head + TRAINING.format(out=work / name, steps=steps)))
    return work / name


def eval_scores(cli, model: Path, data: Path, *metric: str) -> dict:
    result = cli("eval", "--model", model, "--data", data, *[a for m in metric for a in ("-m", m)], "--json")
    assert result.exit_code == 0, result
    return json.loads(result.stdout)


def compared(cli, *args) -> dict[str, dict]:
    result = cli("compare", *args, "--json")
    assert result.exit_code == 0, result
    return {Path(row["model"]).name: row for row in json.loads(result.stdout)}


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    """A tiny GPT-2 and a tiny BERT, two training steps each, and 12 WikiText-2 test rows (empty ones among them)."""
    work = tmp_path_factory.mktemp("lm")
    rows = [json.loads(line) for line in shared_path("wikitext-2-raw-v1", "test.jsonl").read_text().splitlines()[:12]]
    assert any(not row["text"] for row in rows)
    data = jsonl(work / "test.jsonl", rows)
    train_file = shared_path("tiny_shakespeare", "input.txt")
    gpt2 = f"{{init: scratch, tokenizer: {shared_path('tokenizers', 'gpt2')}, config: {GPT2}}}"
    bert = f"{{init: scratch, tokenizer: {shared_path('tokenizers', 'bert-base-uncased')}, config: {BERT}}}"
    text = train_file.read_text()[:20_000]
    write(work / "train.txt", text)
    clm = train(work, "clm", f"task: causal-lm\nseed: 0\nmodel: {gpt2}\ndata: {{train: {work / 'train.txt'}, block_size: 32}}\n")
    mlm = train(work, "mlm", f"task: masked-lm\nseed: 0\nmodel: {bert}\ndata: {{train: {work / 'train.txt'}, block_size: 32}}\n")
    return work, data, clm, mlm


def test_causal_lm_compares_on_perplexity_as_eval_reports_it(lm_runs, cli, tmp_path):
    from hf_toolkit.apply.compare import Measured, format_table

    _, data, clm, _ = lm_runs
    measured = compared(cli, clm, "--data", data, "--plot", tmp_path / "lm.png")["clm"]
    assert measured["metric"] == "perplexity" and measured["higher_is_better"] is False and measured["throughput_unit"] == "tokens"
    assert measured["value"] == pytest.approx(eval_scores(cli, clm, data)["perplexity"], rel=1e-9) and measured["value"] > 1
    assert measured["params"] > 0 and measured["latency_p50_ms"] > 0 and measured["throughput_per_s"] > 0
    assert (tmp_path / "lm.png").read_bytes()[:4] == b"\x89PNG"
    head = format_table([Measured(**measured)]).splitlines()[0]
    assert "tokens/s @32" in head and "perplexity (lower is better)" in head and "rows/s" not in head


def test_masked_lm_compares_on_masked_token_accuracy_as_eval_reports_it(lm_runs, cli):
    _, data, _, mlm = lm_runs
    measured = compared(cli, mlm, "--data", data)["mlm"]
    assert measured["metric"] == "accuracy" and measured["higher_is_better"] is True and measured["throughput_unit"] == "tokens"
    assert measured["value"] == pytest.approx(eval_scores(cli, mlm, data)["accuracy"], rel=1e-9)


def test_models_of_different_tasks_are_refused(lm_runs, cli):
    _, data, clm, mlm = lm_runs
    result = cli("compare", clm, mlm, "--data", data)
    assert result.exit_code == 2 and "different tasks (causal-lm, masked-lm)" in result.stderr, result


@pytest.mark.slow  # one ONNX export (a dynamo trace, ~10 s of CPU) and two models measured
def test_onnx_export_of_a_causal_lm_compares_with_its_run(lm_runs, cli, tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'hf_toolkit[onnx]'")
    pytest.importorskip("onnxscript", reason="needs the onnx extra: pip install 'hf_toolkit[onnx]'")
    _, data, clm, _ = lm_runs
    exported = cli("export", clm, tmp_path / "onnx", "--format", "onnx")
    assert exported.exit_code == 0, exported
    measured = compared(cli, clm, tmp_path / "onnx", "--data", data)
    assert measured["onnx"]["value"] == pytest.approx(eval_scores(cli, tmp_path / "onnx", data)["perplexity"], rel=1e-9)
    assert measured["onnx"]["value"] == pytest.approx(measured["clm"]["value"], rel=1e-4)  # the graph computes the run's logits
    # the graph's weights are the run's parameters, plus a few constants of its own (shapes, masks)
    assert measured["clm"]["params"] <= measured["onnx"]["params"] <= measured["clm"]["params"] * 1.001


@pytest.fixture(scope="module")
def copy_rows(tmp_path_factory):
    """Targets equal to sources (3-4 colour and animal words): a task tiny models learn in seconds."""
    rng = random.Random(0)
    rows = [{"source": text, "target": text} for text in (" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 4)))
                                                          for _ in range(24))]
    work = tmp_path_factory.mktemp("copy")
    return work, jsonl(work / "train.jsonl", rows), jsonl(work / "test.jsonl", rows[:6])


@pytest.mark.parametrize("task, metric, key", [
    ("summarization", "rouge", "rougeL"),
    pytest.param("translation", "bleu", "bleu", marks=pytest.mark.slow),  # the same path as summarization, another metric
])
def test_seq2seq_compares_on_its_metric_as_eval_reports_it(task, metric, key, copy_rows, cli, tmp_path):
    _, train_file, test = copy_rows
    model = f"{{init: scratch, train_tokenizer: {{vocab_size: 300, min_frequency: 1}}, config: {T5}}}"
    run = train(tmp_path, task, f"task: {task}\nseed: 0\nmodel: {model}\ndata: {{train: {train_file}, max_target_length: 8}}\n"
                                "generation: {max_new_tokens: 6}\n", steps=30)
    measured = compared(cli, run, "--data", test)[task]
    expected = eval_scores(cli, run, test, metric)[key]
    assert measured["metric"] == key and measured["higher_is_better"] is True and measured["throughput_unit"] == "rows"
    assert measured["value"] == pytest.approx(expected, rel=1e-9)
    assert measured["value"] > 0  # it learned to copy a little: a score that could have been anything but 0
    assert measured["latency_p50_ms"] > 0 and measured["throughput_per_s"] > 0


def test_a_seq2seq_onnx_export_is_refused_before_any_model_loads(copy_rows, cli, tmp_path, monkeypatch):
    """hftk export writes no seq2seq graph; a directory that claims to be one is refused by name."""
    from hf_toolkit.core import rundir

    _, _, test = copy_rows
    fake = write(tmp_path / "s2s-onnx" / "hftk_recipe.yaml", "task: summarization\nmodel: {name_or_path: t5-small}\n"
                 f"data: {{train: {test}}}\ntraining: {{output_dir: {tmp_path / 'x'}}}\n").parent
    (fake / "model.onnx").write_bytes(b"")
    (fake / "hftk_onnx.json").write_text("{}")

    def no_loading(*args, **kwargs):
        raise AssertionError("a model loaded")

    monkeypatch.setattr(rundir, "load_model", no_loading)
    result = cli("compare", fake, "--data", test)
    assert result.exit_code == 2, result
    assert "ONNX export of a summarization model" in result.stderr
    assert "ONNX exports of causal-lm, masked-lm, text-classification, question-answering" in result.stderr


def test_the_plot_keeps_every_label_whole(tmp_path, monkeypatch):
    """Long run names on the rightmost point stay inside the picture (they were cut off at its edge)."""
    import matplotlib.pyplot as plt

    from hf_toolkit.apply import compare

    rows = [compare.Measured(f"runs/{name}", 1, 1.0, 1.0, speed, "rows", "accuracy", value, True)
            for name, speed, value in (("teacher-minilm-l6-sentiment-two-epochs", 43.9, 0.874),
                                       ("student-minilm-three-layers-distilled-int8", 87.8, 0.884))]
    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)  # keep the figure to measure it
    compare.plot(rows, tmp_path / "tradeoff.png")
    figure = drawn[0]
    renderer = figure.canvas.get_renderer()
    picture = figure.get_tightbbox(renderer)  # what savefig(bbox_inches="tight") keeps, in inches
    labels = [text for text in figure.axes[0].texts]
    assert [t.get_text() for t in labels] == [Path(r.model).name for r in rows]
    for text in labels:
        box = text.get_window_extent(renderer).transformed(figure.dpi_scale_trans.inverted())
        assert picture.x0 <= box.x0 and box.x1 <= picture.x1 and picture.y0 <= box.y0 and box.y1 <= picture.y1, text
        axes_box = figure.axes[0].get_window_extent(renderer).transformed(figure.dpi_scale_trans.inverted())
        assert axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1, f"{text.get_text()!r} reads out of the axes"
    assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
