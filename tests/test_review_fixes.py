"""Bug risks found in review (issue 10), each pinned: saved recipes are validated like any other,
user errors are told apart from bugs, and no process-wide state leaks between runs."""

from __future__ import annotations

import json

import pytest
from conftest import finetune, shared_path, write

TINY_RUN_RECIPE = """\
task: causal-lm
model:
  init: scratch
  train_tokenizer: {{vocab_size: 300}}
  config: {{model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 16, n_positions: 64}}
data:
  train: {corpus}
  block_size: 32
training:
  output_dir: {out}
  max_steps: 2
  report_to: none
  disable_tqdm: true
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_corpus):
    tmp = tmp_path_factory.mktemp("tiny")
    corpus = write(tmp / "corpus.txt", tiny_corpus.read_text()[:5000])
    recipe = write(tmp / "r.yaml", TINY_RUN_RECIPE.format(corpus=corpus, out=tmp / "run"))
    finetune(recipe)
    write(tmp / "held_out.txt", "Once upon a time there was a fox.\nThe fox ran home.\n")
    return tmp / "run", tmp / "held_out.txt"


@pytest.mark.parametrize("assignment, expected", [
    ("data.block_size=abc", "data.block_size: Input should be a valid integer (got 'abc')"),
    ("data.block_size=-3", "data.block_size: Input should be greater than or equal to 8"),
    ("peft.r=-3", "peft.r: Input should be greater than or equal to 1"),
    ("data.doc_stride=8", "data.doc_stride: does not apply to task causal-lm"),
])
def test_a_saved_recipe_read_back_is_validated_like_any_other(tiny_run, cli, assignment, expected):
    run, data = tiny_run
    result = cli("eval", "--model", run, "--data", data, "--set", assignment)
    assert result.exit_code == 2, result
    assert f"--set {assignment}: {expected}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_model_file_is_a_bug_with_its_traceback_not_a_user_error(tiny_run, tmp_path, cli):
    """Only what a user can fix becomes exit 2: a directory without a config is; a corrupt config is not."""
    import shutil

    run, _ = tiny_run
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("generate", "--model", empty, "--prompt", "x")
    assert result.exit_code == 2 and "has none of config.json" in result.stderr
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(Exception) as caught:
        cli("generate", "--model", broken, "--prompt", "x")
    from hf_toolkit.errors import HftkError

    assert not isinstance(caught.value, HftkError)


def test_the_hub_probe_is_reused_for_a_minute_not_forever(monkeypatch):
    from huggingface_hub import constants

    from hf_toolkit.core import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_probed", {})
    probes = []
    monkeypatch.setattr(hub, "_probe", lambda endpoint: probes.append(endpoint) or False)
    clock = [1000.0]
    monkeypatch.setattr(hub.time, "monotonic", lambda: clock[0])
    assert hub.reachable() is False and hub.reachable() is False
    assert len(probes) == 1
    clock[0] += hub.PROBE_TTL_SECONDS + 1
    hub.reachable()
    assert len(probes) == 2


def test_question_answering_leaves_the_callers_tokenizer_alone():
    from transformers import AutoTokenizer

    from hf_toolkit.tasks import TASKS
    from hf_toolkit.tasks.question_answering import QuestionAnsweringData, encode

    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "bert-base-uncased"), padding_side="left")
    settings = QuestionAnsweringData.model_construct(max_length=32, doc_stride=8)
    encode(tokenizer, ["Where?"], ["In a small town by the sea. " * 10], settings)
    collator = TASKS["question-answering"].trainer_kwargs(None, tokenizer, None)["data_collator"]
    assert tokenizer.padding_side == "left"
    assert collator.tokenizer.padding_side == "right"


def test_a_too_long_question_is_a_data_error_naming_it():
    from transformers import AutoTokenizer

    from hf_toolkit.errors import DataError
    from hf_toolkit.tasks.question_answering import QuestionAnsweringData, encode

    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "bert-base-uncased"))
    settings = QuestionAnsweringData.model_construct(max_length=32, doc_stride=8)
    with pytest.raises(DataError, match="question 'why why why.*leaves no room for context"):
        encode(tokenizer, ["why " * 40], ["Because."], settings)


def test_pair_tokenizers_are_not_shared_between_runs(tmp_path):
    """No process-wide cache hands one run's (mutable) tokenizer to the next."""
    from hf_toolkit.recipe.checks import validate_recipe
    from hf_toolkit.tasks import TASKS

    bert, gpt2 = shared_path("tokenizers", "bert-base-uncased"), shared_path("tokenizers", "gpt2")
    recipe = validate_recipe({
        "task": "summarization", "data": {"train": "t.jsonl"},
        "model": {"encoder": {"init": "scratch", "tokenizer": str(bert), "config": {"model_type": "bert"}},
                  "decoder": {"init": "scratch", "tokenizer": str(gpt2), "config": {"model_type": "gpt2"}}},
    })
    task = TASKS["summarization"]
    first, second = task.target_tokenizer(recipe, None), task.target_tokenizer(recipe, None)
    assert first is not second and type(first).__name__.startswith("GPT2")
    first.padding_side = "left"
    assert second.padding_side == "right"


def test_eval_model_mode_warnings_are_hftk_warnings(tiny_run, cli):
    run, data = tiny_run
    result = cli("eval", "--model", run, "--data", data, "--json")
    assert result.exit_code == 0, result
    assert json.loads(result.stdout)["perplexity"] > 1
    assert "UserWarning" not in result.stderr
