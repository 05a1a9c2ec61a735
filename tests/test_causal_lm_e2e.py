"""End to end: `hftk finetune` a tiny GPT-2 from scratch, load it back in plain transformers, generate."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import shared_path

RECIPE = """\
task: causal-lm
seed: 0
model:
  init: scratch
  {tokenizer}
  config: {{model_type: gpt2, n_layer: 2, n_head: 2, n_embd: 32, n_positions: 64}}
data:
  train: {train}
  validation_split: 0.1
  block_size: 32
training:
  output_dir: {out}
  max_steps: 40
  per_device_train_batch_size: 8
  learning_rate: 3e-3
  logging_steps: 5
  eval_strategy: "no"
  save_strategy: "no"
  disable_tqdm: true
generation:
  max_new_tokens: 12
"""


def hftk(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hf_toolkit", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=os.environ
    )


def train_losses(run: Path) -> list[float]:
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


@pytest.fixture(scope="module")
def shakespeare_run(tmp_path_factory, gpt2_tokenizer_dir):
    """A run with the real GPT-2 tokenizer on tiny-shakespeare text (the issue's done-when recipe)."""
    work = tmp_path_factory.mktemp("clm")
    text = shared_path("tiny_shakespeare", "input.txt").read_text()[:60_000]
    (work / "shakespeare.txt").write_text(text)
    recipe = RECIPE.format(tokenizer=f"tokenizer: {gpt2_tokenizer_dir}", train="shakespeare.txt", out="run")
    (work / "recipe.yaml").write_text(recipe)
    result = hftk("finetune", "recipe.yaml", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "run", result


def test_loss_falls_and_metrics_are_saved(shakespeare_run):
    run, result = shakespeare_run
    losses = train_losses(run)
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 1.0, losses
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert "eval_perplexity" in result.stdout
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 40


def test_output_loads_in_plain_transformers(shakespeare_run, cli):
    run, _ = shakespeare_run
    code = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(run)!r})
        tokenizer = AutoTokenizer.from_pretrained({str(run)!r})
        assert "hf_toolkit" not in sys.modules
        ids = tokenizer("ROMEO:", return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        print(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
        print(type(model).__name__, model.config.n_layer, model.generation_config.max_new_tokens)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    plain_text, summary = result.stdout.rsplit("\n", 2)[-3:-1]
    assert summary == "GPT2LMHeadModel 2 12"
    # `hftk generate` greedy gives the same continuation as plain transformers.
    generated = cli("generate", "--model", run, "--prompt", "ROMEO:", "--json")
    assert generated.exit_code == 0, generated.stderr[-2000:]
    assert json.loads(generated.stdout) == [{"prompt": "ROMEO:", "text": plain_text}]


def test_generate_json_batches_prompts_and_sequences(shakespeare_run, cli):
    run, _ = shakespeare_run
    result = cli(
        "generate", "--model", run, "--prompt", "ROMEO:", "--prompt", "JULIET: O Romeo",
        "--do-sample", "--seed", "1", "--num-return-sequences", "2", "--max-new-tokens", "5", "--json",
    )
    assert result.exit_code == 0, result
    items = json.loads(result.stdout)
    assert [i["prompt"] for i in items] == ["ROMEO:", "ROMEO:", "JULIET: O Romeo", "JULIET: O Romeo"]
    assert all(isinstance(i["text"], str) and not i["text"].startswith("ROMEO") for i in items)
    again = cli(
        "generate", "--model", run, "--prompt", "ROMEO:", "--prompt", "JULIET: O Romeo",
        "--do-sample", "--seed", "1", "--num-return-sequences", "2", "--max-new-tokens", "5", "--json",
    )
    assert json.loads(again.stdout) == items  # --seed makes sampling reproducible


def test_generate_streams_a_single_prompt(shakespeare_run, cli):
    run, _ = shakespeare_run
    streamed = cli("generate", "--model", run, "--prompt", "ROMEO:", "--max-new-tokens", "8")
    as_json = cli("generate", "--model", run, "--prompt", "ROMEO:", "--max-new-tokens", "8", "--json")
    assert streamed.exit_code == 0, streamed
    assert streamed.stdout.rstrip("\n") == "ROMEO:" + json.loads(as_json.stdout)[0]["text"].rstrip("\n")


def test_beam_search_and_max_length(shakespeare_run, cli):
    run, _ = shakespeare_run
    result = cli("generate", "--model", run, "--prompt", "ROMEO:", "--num-beams", "3", "--max-length", "10", "--json")
    assert result.exit_code == 0, result
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run)
    text = json.loads(result.stdout)[0]["text"]
    assert len(tokenizer("ROMEO:" + text).input_ids) <= 10


def test_max_length_overrides_the_runs_max_new_tokens(shakespeare_run, cli):
    """The run saved max_new_tokens=12; --max-length 6 must cap prompt + continuation at 6 tokens."""
    from transformers import AutoTokenizer

    run, _ = shakespeare_run
    tokenizer = AutoTokenizer.from_pretrained(run)
    prompt_tokens = len(tokenizer("ROMEO:").input_ids)
    default = cli("generate", "--model", run, "--prompt", "ROMEO:", "--json")
    capped = cli("generate", "--model", run, "--prompt", "ROMEO:", "--max-length", "6", "--json")
    assert default.exit_code == capped.exit_code == 0, (default, capped)
    default_ids = tokenizer(json.loads(default.stdout)[0]["text"]).input_ids
    capped_ids = tokenizer(json.loads(capped.stdout)[0]["text"]).input_ids
    assert len(default_ids) > 6 - prompt_tokens
    assert len(capped_ids) <= 6 - prompt_tokens


def test_impossible_generation_options_exit_2(shakespeare_run, cli):
    run, _ = shakespeare_run
    result = cli("generate", "--model", run, "--prompt", "x", "--num-return-sequences", "2")
    assert result.exit_code == 2
    assert "num_return_sequences" in result.stderr
    both = cli("generate", "--model", run, "--prompt", "x", "--max-length", "5", "--max-new-tokens", "5")
    assert both.exit_code == 2 and "not both" in both.stderr
    # Checked like a recipe's generation section, with the option named:
    for options, message in (
        (["--do-sample", "--temperature", "0"], "--temperature: Input should be greater than 0"),
        (["--top-p", "1.5"], "--top-p: Input should be less than or equal to 1"),
        (["--greedy", "--top-k", "5"], "use --do-sample instead of --greedy"),
    ):
        result = cli("generate", "--model", run, "--prompt", "x", *options)
        assert result.exit_code == 2, (options, result)
        assert message in result.stderr and "Traceback" not in result.stderr


def test_trained_tokenizer_run_without_shared_data(tmp_path, tiny_corpus, cli, monkeypatch):
    recipe = RECIPE.format(tokenizer="train_tokenizer: {vocab_size: 400}", train=tiny_corpus, out="run")
    recipe = recipe.replace("max_steps: 40", "max_steps: 10")
    (tmp_path / "recipe.yaml").write_text(recipe)
    monkeypatch.chdir(tmp_path)
    result = cli("finetune", "recipe.yaml", "--set", "training.learning_rate=1e-2")
    assert result.exit_code == 0, result.stderr[-3000:]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run")
    assert len(tokenizer) == 400
    assert tokenizer.decode(tokenizer("Once upon a time").input_ids) == "Once upon a time"
    saved = (tmp_path / "run" / "hftk_recipe.yaml").read_text()
    assert "learning_rate: 0.01" in saved  # the override is part of the resolved recipe


def test_missing_column_exits_2_before_model_load(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.jsonl").write_text('{"content": "hello"}\n')
    recipe = RECIPE.format(tokenizer="train_tokenizer: {vocab_size: 300}", train="train.jsonl", out="run")
    (tmp_path / "recipe.yaml").write_text(recipe)
    result = cli("finetune", "recipe.yaml")
    assert result.exit_code == 2
    assert "column 'text' (role text) not found" in result.stderr and "content" in result.stderr
    assert not (tmp_path / "run").exists()


def test_help_is_fast_and_shows_examples():
    for args in ([], ["finetune"], ["generate"], ["eval"], ["predict"], ["export"]):
        result = subprocess.run(
            [sys.executable, "-m", "hf_toolkit", *args, "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0
        assert "hftk " in result.stdout and "Example" in result.stdout
    code = "import sys, hf_toolkit.cli; print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_eval_model_mode_scores_perplexity(shakespeare_run, cli, tmp_path):
    run, _ = shakespeare_run
    data = tmp_path / "held_out.jsonl"
    texts = ["ROMEO: I will go.", "JULIET: Stay a while, my love."]
    data.write_text("".join(json.dumps({"line": t}) + "\n" for t in texts))
    result = cli("eval", "--model", run, "--data", data, "--set", "data.columns.text=line", "--json")
    assert result.exit_code == 0, result
    scores = json.loads(result.stdout)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_toolkit.metrics import perplexity

    plain = perplexity(texts, AutoModelForCausalLM.from_pretrained(run), AutoTokenizer.from_pretrained(run))
    assert scores["perplexity"] == pytest.approx(plain["perplexity"], rel=1e-9)
    assert json.loads((run / "eval" / "held_out.jsonl.scores.json").read_text()) == scores
    missing = cli("eval", "--model", run, "--data", data)
    assert missing.exit_code == 2 and "column 'text' (role text) not found" in missing.stderr
