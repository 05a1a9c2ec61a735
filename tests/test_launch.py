"""``hftk finetune --nproc N`` starts its ranks with the command exactly as the user typed it, so no
option can be left behind; a rank (under torchrun) runs the same command and trains instead of launching.

Unit tests on the command's arguments: the launcher and the training are replaced, nothing trains
(the real 2-process runs are in test_distributed_training.py, test_reliability.py and test_console.py).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from conftest import tiny_lm_recipe, write


@pytest.fixture
def as_typed(tmp_path, tiny_corpus, monkeypatch):
    """hftk finetune ... --nproc=2 ... as this process's own command line (a process started as hftk)."""
    from hf_toolkit import cli
    from hf_toolkit.training import allocator

    corpus = write(tmp_path / "corpus.txt", tiny_corpus.read_text(encoding="utf-8")[:3000])
    recipe = tiny_lm_recipe(tmp_path / "r.yaml", corpus, tmp_path / "run", data={"block_size": 32})
    argv = ["finetune", str(recipe), "--set", "training.max_steps=1", "--nproc=2", "--set=training.logging_steps=3",
            "--overwrite", "-v"]
    monkeypatch.setattr(sys, "argv", ["hftk", *argv])
    monkeypatch.setattr(cli, "_OWN_PROCESS", True)
    monkeypatch.setattr(allocator, "restart_keeping_freed_memory", lambda: None)  # it would re-execute pytest
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return argv, tmp_path / "run"


def test_the_ranks_get_the_process_own_arguments(as_typed, cli, monkeypatch):
    from hf_toolkit.training import launch

    argv, out = as_typed
    launched = []
    monkeypatch.setattr(launch, "relaunch", lambda nproc, args, **where: launched.append((nproc, args, where)) or 0)
    result = cli(*argv)
    assert result.exit_code == 0, result
    assert launched == [(2, argv, {"output_dir": str(out), "overwrite": True})]


def test_a_rank_running_that_command_trains_and_does_not_launch_again(as_typed, cli, monkeypatch):
    from hf_toolkit.training import launch, train

    argv, out = as_typed
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's, in every rank it starts
    monkeypatch.setattr(launch, "relaunch", lambda *args, **kwargs: pytest.fail("a rank launched ranks"))
    trained = []
    monkeypatch.setattr(train, "finetune", lambda recipe, overrides, **flags: trained.append((overrides, flags))
                        or SimpleNamespace(output_dir=out, metrics={}))
    result = cli(*argv)
    assert result.exit_code == 0, result
    assert trained == [(["training.max_steps=1", "training.logging_steps=3"], {"resume": False, "overwrite": True})]


def test_nproc_from_python_is_refused_with_one_message(tmp_path, tiny_corpus, cli, monkeypatch):
    from hf_toolkit.training import allocator

    monkeypatch.setattr(allocator, "restart_keeping_freed_memory", lambda: None)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    recipe = tiny_lm_recipe(tmp_path / "r.yaml", write(tmp_path / "c.txt", tiny_corpus.read_text()[:3000]), tmp_path / "run")
    result = cli("finetune", recipe, "--nproc", "2")  # the in-process runner: sys.argv is pytest's, not this command
    assert result.exit_code == 2 and "hftk: error: --nproc starts the command again in N processes" in result.stderr
    assert not (tmp_path / "run").exists()


def test_torchrun_passes_the_arguments_to_every_rank_untouched(monkeypatch):
    from torch.distributed.run import get_args_parser

    from hf_toolkit.training import launch

    started = []
    monkeypatch.setattr(launch, "_run_forwarding_signals", lambda command, env, stop_file: started.append(command) or 0)
    argv = ["finetune", "r.yaml", "--nproc=2", "--nproc", "2", "-v", "-r", "x", "--set", "training.max_steps=1"]
    assert launch.relaunch(2, argv) == 0
    [command] = started
    assert command[1:3] == ["-m", "torch.distributed.run"]
    parsed = get_args_parser().parse_args(command[3:])  # what torchrun reads: its options, then the rank's command
    assert (parsed.module, parsed.training_script) == (True, "hf_toolkit")
    assert [a for a in parsed.training_script_args if a != "--"] == argv  # (Python 3.11 drops the "--"; hftk ignores it)
