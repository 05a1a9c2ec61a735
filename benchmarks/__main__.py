"""``python -m benchmarks [--quick] [--no-write]``: every row side by side in one run, each as a
ratio against its baseline; rewrites the generated section at the top of BENCHMARKS.md with the
command, the date, the machine and the table (rows that cannot run here are listed with the reason).

``--quick`` runs fewer steps and one repeat per side (a few minutes on 2 CPU cores), for CI and a
first look; the full run takes the median of three.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

from benchmarks import bert_steps, compute, machine, rows, serving, startup

BEGIN, END = "<!-- python -m benchmarks: begin -->", "<!-- python -m benchmarks: end -->"
BENCHMARKS_MD = rows.REPO / "BENCHMARKS.md"
# In this order: generation and serving use the causal-LM row's run, prediction the classifier's.
ROWS = (*rows.ROWS, serving.serving, startup.first_step, startup.preprocessing_cache, compute.mfu, compute.memory,
        compute.torch_compile, bert_steps.bert_steps)


def run(quick: bool) -> list[rows.Row]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from hf_toolkit import console

    console.setup(models=True)
    results: list[rows.Row] = []
    state: dict = {}
    with tempfile.TemporaryDirectory() as work:
        for row in ROWS:
            print(f"benchmarks: {row.__name__} ...", file=sys.stderr, flush=True)
            produced = row(Path(work), quick, state)
            results += produced if isinstance(produced, list) else [produced]
    return results


def render(results: list[rows.Row], command: str) -> str:
    lines = [
        "## Side by side: `python -m benchmarks`",
        "",
        f"Command: `{command}` (run from the repository root), "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {machine.describe()}.",
        "Ratio: hftk's throughput over the baseline's, measured in the same run (> 1: hftk faster).",
        "",
        "| row | hftk | baseline | ratio | goal | met | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results:
        if row.skipped is not None:
            lines.append(f"| {row.name} | | | | {row.goal} | skipped | {row.skipped} |")
        else:
            lines.append(f"| {row.name} | {row.hftk} | {row.baseline} | {row.ratio:.2f}x | {row.goal} | {row.met()} | {row.note} |")
    return "\n".join(lines)


def write(section: str) -> None:
    """Replace the generated section of BENCHMARKS.md (or put one after its title)."""
    text = BENCHMARKS_MD.read_text(encoding="utf-8")
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        title, _, rest = text.partition("\n")
        text = f"{title}\n\n{block}\n{rest}"
    BENCHMARKS_MD.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, one repeat: a few minutes")
    parser.add_argument("--no-write", action="store_true", help="print the table only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    section = render(run(args.quick), command)
    print(section)
    if not args.no_write:
        write(section)


if __name__ == "__main__":
    main()
