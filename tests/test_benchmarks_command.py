"""`python -m benchmarks` itself (benchmarks/__main__.py): a crashing row is listed as failed and
makes the command exit 1, after the other rows have run; an unmet goal or a skipped row does not."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a folder of the repository, not installed

import benchmarks.__main__ as command
from benchmarks.rows import Row


def slow_row(work, quick, state):
    return Row("slow row", "1 s", "2 s", 0.5, ">= 1.0x", "goal unmet")


def skipped_row(work, quick, state):
    return Row("skipped row", skipped="no GPU")


def crashing_row(work, quick, state):
    raise RuntimeError("boom")


def run_main(monkeypatch, capsys, rows):
    monkeypatch.setattr(command, "ROWS", rows)
    monkeypatch.setattr(sys, "argv", ["python -m benchmarks", "--quick", "--no-write"])
    monkeypatch.setattr(command, "write", lambda section: pytest.fail("--no-write wrote BENCHMARKS.md"))
    command.main()
    return capsys.readouterr().out


def test_unmet_goals_and_skipped_rows_exit_0(monkeypatch, capsys):
    out = run_main(monkeypatch, capsys, (slow_row, skipped_row))
    assert "| slow row | 1 s | 2 s | 0.50x | >= 1.0x | no | goal unmet |" in out
    assert "| skipped row | | | |  | skipped | no GPU |" in out


def test_a_crashing_row_is_listed_and_exits_1_after_the_others_ran(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exited:
        run_main(monkeypatch, capsys, (crashing_row, slow_row))
    assert "1 row(s) failed: crashing_row" in str(exited.value.code)
    out = capsys.readouterr().out
    assert "| crashing_row | | | |  | skipped | failed: RuntimeError: boom |" in out
    assert "| slow row |" in out
