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
    assert "| slow row | 1 s | 2 s | 0.50x | >= 1.0x | no | goal unmet | " in out
    assert "| skipped row | | | |  | skipped | no GPU | " in out
    assert "`slow_row`, load " in out, "each line says when, by which row function and at which load it was measured"


def test_a_crashing_row_is_listed_and_exits_1_after_the_others_ran(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exited:
        run_main(monkeypatch, capsys, (crashing_row, slow_row))
    assert "1 row(s) failed: crashing_row" in str(exited.value.code)
    out = capsys.readouterr().out
    assert "| crashing_row | | | |  | skipped | failed: RuntimeError: boom | " in out
    assert "| slow row |" in out


def fast_row(work, quick, state):
    return [Row("fast row, first", "3 s", "1 s", 3.0, ">= 1.0x", "new"), Row("fast row, second", "2 s", "1 s", 2.0)]


def test_only_write_splices_rows_in_place_with_their_own_date(monkeypatch, capsys, tmp_path):
    """`--only ROW --write` replaces that row function's old lines where they stood; other lines stay."""
    table = tmp_path / "BENCHMARKS.md"
    old = [command.TABLE_HEAD, "|---|---|---|---|---|---|---|---|",
           "| slow row | 1 s | 2 s | 0.50x | >= 1.0x | no | old | 2026-01-01 00:00 UTC, `slow_row`, load 0.0 on 2 cores |",
           "| fast row, renamed since | 1 s | 1 s | 1.00x | | | old | 2026-01-01 00:00 UTC, `fast_row`, load 0.0 on 2 cores |",
           "| other row | 1 s | 1 s | 1.00x | | | kept | 2026-01-01 00:00 UTC, `other_row`, load 0.0 on 2 cores |"]
    table.write_text(f"# Benchmarks\n\n{command.BEGIN}\nintro\n\n" + "\n".join(old) + f"\n{command.END}\n\nmore\n")
    monkeypatch.setattr(command, "BENCHMARKS_MD", table)
    monkeypatch.setattr(command, "ROWS", (slow_row, fast_row))
    monkeypatch.setattr(sys, "argv", ["python -m benchmarks", "--quick", "--only", "fast_row", "--write"])
    command.main()
    lines = table.read_text().splitlines()
    names = [line.split(" | ")[0] for line in lines if line.startswith("| ") and "`" in line]
    assert names == ["| slow row", "| fast row, first", "| fast row, second", "| other row"]
    assert "renamed since" not in table.read_text() and "intro" in lines and lines[-1] == "more"
    new = next(line for line in lines if line.startswith("| fast row, first"))
    assert "2026-01-01" not in new and "`fast_row`" in new
