"""Attention dropout 0.1 vs 0 on the shipped MiniLM recipes: time per run and held-out accuracy.

With attention dropout above 0, PyTorch's SDPA leaves its fused CPU kernel while training
(dropout needs the attention matrix), so a BERT step is much slower; this measures what turning
it off buys in speed and costs in accuracy. Each shipped recipe trains twice, the same seed and
data, once with ``model.config.attention_probs_dropout_prob`` 0.1 (BERT's default) and once with 0,
on held-out splits built the way the recipe headers describe (never scored on trained text):

- SQuAD (``recipes/squad-minilm.yaml``): the 4 articles Super_Bowl_50, Yuan_dynasty,
  American_Broadcasting_Company and Oxygen (1,692 questions) held out; training on the other 20
  (3,705 questions); exact match / F1 on the held-out questions (``data.test``).
- SST-2 (``recipes/sentiment-minilm.yaml``): 1,000 training sentences of >= 15 words
  (``random.Random(0).sample``) held out together with every training phrase that is a word span
  of one of them; training on the rest; accuracy on the 1,000 (``data.test``).

Each run is ``python -m hf_toolkit finetune RECIPE --set ...`` from the repository root; wall time
includes start-up and the final evaluation. Results print as a table and go to ``WORK/results.json``.

``--speed STEPS`` measures speed only: each recipe as shipped (its own data), ``STEPS`` optimizer
steps with each dropout, no evaluation, best of two turns (other jobs on a shared machine only slow
a turn down), seconds per step from the Trainer's ``train_runtime``.

    python benchmarks/bench_attention_dropout.py [--tasks squad sst2] [--epochs N] [--work DIR]
    python benchmarks/bench_attention_dropout.py --speed 60 [--tasks squad sst2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SQUAD = SHARED / "squad_v1.1_dev_articles_split" / "train_even_articles.jsonl"
SST2 = SHARED / "sst2" / "train_full_alps.tsv"
HELD_OUT_ARTICLES = ("Super_Bowl_50", "Yuan_dynasty", "American_Broadcasting_Company", "Oxygen")
RECIPES = {"squad": REPO / "recipes" / "squad-minilm.yaml", "sst2": REPO / "recipes" / "sentiment-minilm.yaml"}
SCORES = {"squad": ("test_exact_match", "test_f1"), "sst2": ("test_accuracy",)}


def squad_split(work: Path) -> tuple[Path, Path]:
    rows = [json.loads(line) for line in SQUAD.read_text(encoding="utf-8").splitlines()]
    train, held = work / "squad-train-20-articles.jsonl", work / "squad-held-out-4-articles.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows if r["title"] not in HELD_OUT_ARTICLES), encoding="utf-8")
    held.write_text("".join(json.dumps(r) + "\n" for r in rows if r["title"] in HELD_OUT_ARTICLES), encoding="utf-8")
    return train, held


def sst2_split(work: Path) -> tuple[Path, Path]:
    header, *lines = SST2.read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines]
    long = [i for i, (text, _) in enumerate(rows) if len(text.split()) >= 15]
    held = random.Random(0).sample(long, 1000)
    spans = set()
    for i in held:
        words = rows[i][0].split()
        spans.update(" ".join(words[a:b]) for a in range(len(words)) for b in range(a + 1, len(words) + 1))
    train_path, held_path = work / "sst2-train-without-held-out.tsv", work / "sst2-held-out-1000.tsv"
    train_path.write_text("\n".join([header] + ["\t".join(r) for r in rows if " ".join(r[0].split()) not in spans]) + "\n",
                          encoding="utf-8")
    held_path.write_text("\n".join([header] + ["\t".join(rows[i]) for i in held]) + "\n", encoding="utf-8")
    return train_path, held_path


def finetune(task: str, out: Path, overrides: list[str], work: Path) -> tuple[float, dict]:
    """(wall seconds, metrics.json) of ``hftk finetune`` on the task's shipped recipe with `overrides`."""
    command = [sys.executable, "-m", "hf_toolkit", "finetune", str(RECIPES[task].relative_to(REPO)), "--overwrite"]
    for override in overrides:
        command += ["--set", override]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1")
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (work / f"{out.name}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}); see {work / out.name}.log")
    return seconds, json.loads((out / "metrics.json").read_text())


def run(task: str, dropout: float, train: Path, test: Path, work: Path, epochs: int | None) -> dict:
    """One held-out training run: its time, train loss and held-out scores."""
    out = work / f"{task}-dropout-{dropout}"
    overrides = [f"data.train={train}", f"data.test={test}", f"training.output_dir={out}",
                 f"model.config.attention_probs_dropout_prob={dropout}", "training.disable_tqdm=true"]
    if epochs is not None:
        overrides.append(f"training.num_train_epochs={epochs}")
    seconds, metrics = finetune(task, out, overrides, work)
    return {"task": task, "dropout": dropout, "seconds": seconds, "train_runtime": metrics["train_runtime"],
            "train_loss": metrics["train_loss"],
            **{key: metrics[key] for key in SCORES[task]}}


def speed(task: str, steps: int, work: Path, turns: int = 2) -> dict[float, float]:
    """{attention dropout: seconds per step} of the task's shipped recipe, best of `turns` turns."""
    best: dict[float, float] = {}
    for turn in range(turns):
        for dropout in (0.1, 0.0):
            out = work / f"{task}-speed-{dropout}-{turn}"
            _, metrics = finetune(task, out, [f"training.output_dir={out}", f"training.max_steps={steps}",
                                              f"model.config.attention_probs_dropout_prob={dropout}", "training.eval_strategy=no",
                                              "data.validation_split=null", "training.disable_tqdm=true"], work)
            best[dropout] = min(best.get(dropout, float("inf")), metrics["train_runtime"] / steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(RECIPES), default=["sst2", "squad"])
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' num_train_epochs")
    parser.add_argument("--work", type=Path, default=None, help="where splits, runs and logs go (default: a new temp dir)")
    parser.add_argument("--speed", type=int, default=None, metavar="STEPS", help="measure seconds per step only")
    args = parser.parse_args()
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="attention-dropout-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.speed is not None:
        for task in args.tasks:
            seconds = speed(task, args.speed, work)
            print(f"{task}: attention dropout 0.1 {seconds[0.1]:.3f} s/step, 0 {seconds[0.0]:.3f} s/step "
                  f"(without dropout {seconds[0.1] / seconds[0.0]:.2f}x the speed; best of 2 turns of {args.speed} steps)", flush=True)
        return
    results = []
    for task in args.tasks:
        train, test = squad_split(work) if task == "squad" else sst2_split(work)
        for dropout in (0.1, 0.0):
            result = run(task, dropout, train, test, work, args.epochs)
            results.append(result)
            (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
            scores = "  ".join(f"{key} {result[key]:.4f}" for key in SCORES[task])
            print(f"{task} attention dropout {dropout}: {result['seconds'] / 60:.1f} min in all, "
                  f"{result['train_runtime'] / 60:.1f} min of training, train loss {result['train_loss']:.4f}, {scores}",
                  flush=True)


if __name__ == "__main__":
    main()
