"""When bf16 autocast pays on a CPU with native bf16: the seq2seq row's BART from scratch at three
widths, `hftk finetune` with ``precision: fp32`` and ``precision: bf16`` taking turns in one process.

The first turn is cold (oneDNN builds a bf16 kernel for every new batch shape the first time it
meets it); later turns reuse the kernels, as a long run does once it has seen its batch lengths.
Reports examples/s (the Trainer's ``train_samples_per_second``) of the cold turn and the best warm one.

    python benchmarks/bench_bf16_width.py [--widths 128 256 512] [--steps 30] [--turns 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        os.environ.setdefault(key, "1")
    if (reason := rows.needs(rows.WMT)) is not None:
        raise SystemExit(f"skipped: {reason}")
    from hf_toolkit.core import console

    console.setup(models=True)
    work = Path(tempfile.mkdtemp(prefix="bf16-width-"))
    data = [{"source": r["source"], "target": r["target"]}
            for r in map(json.loads, rows.WMT.read_text(encoding="utf-8").splitlines()[: args.steps * 16])]
    train = work / "wmt-train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    print("| d_model | fp32 cold | bf16 cold | fp32 warm | bf16 warm | bf16/fp32 warm |")
    print("|---|---|---|---|---|---|")
    for width in args.widths:
        config = rows.seq2seq_config(width)
        setup = rows.SEQ2SEQ_RECIPE.format(tokenizer="train_tokenizer: {vocab_size: 4000}", config=config, train=train,
                                           out="{out}", steps=1)
        _, tokenizer_dir = rows._hftk_finetune(setup, work)  # the tokenizer both precisions share (untimed)
        speeds: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(args.turns):
            for precision in speeds:
                recipe = rows.SEQ2SEQ_RECIPE.format(tokenizer=f"tokenizer: {tokenizer_dir}", config=config, train=train,
                                                    out="{out}", steps=args.steps) + f"precision: {precision}\n"
                speeds[precision].append(rows._hftk_finetune(recipe, work)[0])
        fp32, bf16 = speeds["fp32"], speeds["bf16"]
        print(f"| {width} | {fp32[0]:.1f} | {bf16[0]:.1f} | {max(fp32[1:]):.1f} | {max(bf16[1:]):.1f} | "
              f"{max(bf16[1:]) / max(fp32[1:]):.2f}x |", flush=True)


if __name__ == "__main__":
    rows.keep_freed_memory()  # restarts this process (not a caller's) with hftk's allocator setting
    main()
