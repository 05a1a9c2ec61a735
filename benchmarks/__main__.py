"""``python -m benchmarks [--quick] [--no-write]``: every row side by side in one run, each as a
ratio against its baseline; rewrites the generated section at the top of BENCHMARKS.md with the
command, the date, the machine and the table (rows that cannot run here are listed with the reason).

``--quick`` runs fewer steps and one repeat per side (a few minutes on 2 CPU cores), for CI and a
first look; the full run takes the median of five where a row takes seconds. ``--only ROW ...
--write`` reruns chosen rows and splices them into the table in place of that row function's old
lines, each line dated in its ``measured`` column, so no number is ever pasted by hand. The exit
status is 1 when a row crashed (listed as failed), 0 otherwise, goals met or not.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import bert_steps, compute, fair, machine, rows, serving, startup

BEGIN, END = "<!-- python -m benchmarks: begin -->", "<!-- python -m benchmarks: end -->"
BENCHMARKS_MD = rows.REPO / "BENCHMARKS.md"
# In this order: generation and serving use the causal-LM row's run, prediction the classifier's.
ROWS = (fair.fair_training, *rows.ROWS, serving.serving, startup.first_step, startup.preprocessing_cache, compute.mfu, compute.memory,
        compute.torch_compile, bert_steps.bert_steps)


def run(quick: bool, only: list[str] | None = None) -> list[rows.Row]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from hf_toolkit.core import console

    console.setup(models=True)
    results: list[rows.Row] = []
    state: dict = {}
    with tempfile.TemporaryDirectory() as work:
        for row in ROWS:
            if only and row.__name__ not in only:
                continue
            print(f"benchmarks: {row.__name__} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            try:
                produced = row(Path(work), quick, state)
            except Exception as error:  # one broken row must not lose the others' measurements
                traceback.print_exc()
                produced = rows.Row(row.__name__, skipped=f"failed: {type(error).__name__}: {error}")
            produced = produced if isinstance(produced, list) else [produced]
            when = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
            for done in produced:
                done.source, done.when = row.__name__, f"{when}, `{row.__name__}`, load {_load()}"
            for done in produced:  # progress, so a long run shows its numbers as they come
                print(f"benchmarks:   {render_row(done)}", file=sys.stderr, flush=True)
            print(f"benchmarks: {row.__name__} took {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            results += produced
    return results


def _load() -> str:
    """The 1-minute load average over the core count: how busy the machine was."""
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return "unknown"


def render_row(row: rows.Row) -> str:
    if row.skipped is not None:
        return f"| {row.name} | | | | {row.goal} | skipped | {row.skipped} | {row.when} |"
    ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
    return f"| {row.name} | {row.hftk} | {row.baseline} | {ratio} | {row.goal} | {row.met()} | {row.note} | {row.when} |"


def render(results: list[rows.Row], command: str) -> str:
    lines = [
        "## Side by side: `python -m benchmarks`",
        "",
        f"Command: `{command}` (run from the repository root), "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {machine.describe()}.",
        "Ratio: hftk's throughput over the baseline's, measured in the same run (> 1: hftk faster).",
        "",
        HOW_TO_READ,
        "",
        TABLE_HEAD,
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [render_row(row) for row in results]
    return "\n".join(lines)


HOW_TO_READ = """\
How to read this:
- **equal settings** rows give the plain Trainer script every setting hftk uses (precision, the
  allocator environment, length-grouped batches, optimizer, attention kernel): the ratio is hftk's
  own overhead or gain for the same work (goal >= 0.97x).
- **defaults vs defaults** rows run each side as its user gets it: what switching to hftk buys.
  The **ablation** rows below them measure each lever alone on the plain script, so the
  defaults-vs-defaults ratio can be traced to its causes.
- Training sides run in fresh processes, in turn, five repeats (one with `--quick`): median with
  min-max; the first optimizer steps are warm-up and not timed. The `measured` column dates each
  line and gives the load average when it ran: a line measured on a loaded machine is noisy, and
  rows whose min-max spans more than 10% say so by their spread.
- `batching` and `packing` rows compare the same texts at the same precision, batched two ways."""
TABLE_HEAD = "| row | hftk | baseline | ratio | goal | met | note | measured |"


def splice(section: str, results: list[rows.Row]) -> str:
    """`section` (the generated table) with the lines of every row function in `results` replaced by
    their new lines, at the place of the first old one (appended when the function had none)."""
    sources = {row.source for row in results}
    new = [render_row(row) for row in results]
    kept: list[str] = []
    at = None
    for line in section.splitlines():
        source = _source(line)
        if source is not None and source in sources:
            at = len(kept) if at is None else at
            continue
        kept.append(line)
    if at is None:
        at = len(kept)
    return "\n".join(kept[:at] + new + kept[at:])


def _source(line: str) -> str | None:
    """The row function named in a table line's `measured` column, or None."""
    if not line.startswith("| ") or line.startswith(TABLE_HEAD[:10]):
        return None
    cell = line.rstrip(" |").rsplit("|", 1)[-1]
    return cell.split("`")[1] if cell.count("`") >= 2 else None


def current_section() -> str | None:
    text = BENCHMARKS_MD.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return None
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip("\n")


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
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--quick", action="store_true", help="fewer steps, one repeat: a few minutes")
    parser.add_argument("--no-write", action="store_true", help="print the table only, leave BENCHMARKS.md alone")
    parser.add_argument("--only", nargs="+", metavar="ROW", choices=[row.__name__ for row in ROWS],
                        help="run these rows only (a row may need an earlier one's run); with --write, splice them into the table")
    parser.add_argument("--write", action="store_true", help="with --only: splice the rerun rows into BENCHMARKS.md")
    args = parser.parse_args()
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    results = run(args.quick, args.only)
    section = render(results, command)
    print(section)
    if args.only and args.write and not args.no_write:
        existing = current_section()
        write(splice(existing, results) if existing and TABLE_HEAD in existing else section)
    elif not args.no_write and not args.only:
        write(section)
    failed = [row.name for row in results if (row.skipped or "").startswith("failed:")]
    if failed:  # a crashing row is a defect (an unmet goal is not): CI's quick run fails on it
        sys.exit(f"python -m benchmarks: {len(failed)} row(s) failed: {'; '.join(failed)}")


if __name__ == "__main__":
    rows.keep_freed_memory()  # restarts the process (not a caller's, such as a test's) with hftk's allocator setting
    main()
