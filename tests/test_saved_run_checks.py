"""A saved run read back by another command: its recipe is validated like any written one, a
user's mistake is told apart from a bug (broken files keep their traceback), and eval's model mode
shows its warnings as hftk's own."""

from __future__ import annotations

import json

import pytest
from conftest import finetune, tiny_lm_recipe, write


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_corpus):
    tmp = tmp_path_factory.mktemp("tiny")
    corpus = write(tmp / "corpus.txt", tiny_corpus.read_text()[:5000])
    recipe = tiny_lm_recipe(tmp / "r.yaml", corpus, tmp / "run", seed=None, data={"block_size": 32},
                            training={"max_steps": 2, "report_to": "none"})
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


def test_eval_model_mode_warnings_are_hftk_warnings(tiny_run, cli):
    run, data = tiny_run
    result = cli("eval", "--model", run, "--data", data, "--json")
    assert result.exit_code == 0, result
    assert json.loads(result.stdout)["perplexity"] > 1
    assert "UserWarning" not in result.stderr
