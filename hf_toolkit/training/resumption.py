"""A run trained in parts (stopped, then ``--resume``d): how far it had come at each checkpoint,
and the whole run's figures at the end.

The Trainer reports only the part it ran last: a resumed run's ``train_loss`` is that part's mean
loss and ``train_runtime`` its time. So every checkpoint also holds ``hftk_progress.json``
(:data:`PROGRESS_FILE`): the training time of every part so far and the steps the run was resumed
at (written by :class:`hf_toolkit.training.callbacks.SaveRecipe`). At the end
:func:`whole_run_metrics` puts together:

- ``train_loss`` over all steps: the logged losses (the Trainer's log history, which the checkpoint
  carries over) up to the last resume step, each weighted by the steps it covers, plus the last
  part's own sum; exact when the logs reach the resume step (``logging_steps`` divides it, as with
  1), else the logged steps' mean stands for the unlogged few;
- ``train_runtime``: the parts' times summed; ``train_samples_per_second`` and
  ``train_steps_per_second`` of the whole run over that time.

The model card then says the run was resumed, at which steps, and how often.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_toolkit.core.rundir import TRAINER_STATE, write_atomically

PROGRESS_FILE = "hftk_progress.json"


@dataclass
class Progress:
    """A part of a run: the time trained before it (None: resumed from a checkpoint without the
    record) and the steps the run was resumed at, the last being where this part began."""

    earlier_runtime: float | None = 0.0
    resumed_at: list[int] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)  # reset when training begins

    def save(self, checkpoint: str | Path) -> None:
        """The record a checkpoint keeps: the training time up to now over all parts."""
        runtime = None if self.earlier_runtime is None else self.earlier_runtime + time.perf_counter() - self.started
        record = {"train_runtime": runtime, "resumed_at": self.resumed_at}
        write_atomically(Path(checkpoint) / PROGRESS_FILE, json.dumps(record) + "\n")


def progress_since(checkpoint: str | Path | None) -> Progress:
    """The part that begins at `checkpoint` (None: a run from its start)."""
    if not checkpoint:
        return Progress()
    checkpoint = Path(checkpoint)
    step = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))["global_step"]  # checked: complete
    saved_file = checkpoint / PROGRESS_FILE
    saved = json.loads(saved_file.read_text(encoding="utf-8")) if saved_file.is_file() else {"train_runtime": None}
    return Progress(saved["train_runtime"], [*saved.get("resumed_at", []), step])


def whole_run_metrics(metrics: dict[str, float], log_history: list[dict[str, Any]], global_step: int,
                      progress: Progress) -> dict[str, float]:
    """The Trainer's train_* figures of the last part, made the whole run's (see the module
    docstring); {} for a run trained in one part."""
    if not progress.resumed_at or global_step <= progress.resumed_at[-1]:
        return {}
    begun = progress.resumed_at[-1]
    part_steps = global_step - begun
    whole: dict[str, float] = {}
    earlier_loss = _logged_loss_sum(log_history, begun)
    if earlier_loss is not None and "train_loss" in metrics:
        whole["train_loss"] = (earlier_loss + metrics["train_loss"] * part_steps) / global_step
    runtime = metrics.get("train_runtime")
    if progress.earlier_runtime is not None and runtime:
        samples = metrics.get("train_samples_per_second", 0.0) * runtime * global_step / part_steps
        whole["train_runtime"] = round(progress.earlier_runtime + runtime, 4)
        whole["train_samples_per_second"] = round(samples / whole["train_runtime"], 3)
        whole["train_steps_per_second"] = round(global_step / whole["train_runtime"], 3)
    return whole


def _logged_loss_sum(log_history: list[dict[str, Any]], until: int) -> float | None:
    """The summed per-step training loss of steps 1..`until` from the logged interval means."""
    total, last = 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry.get("step", 0) <= until:
            total += entry["loss"] * (entry["step"] - last)
            last = entry["step"]
    if last == 0:
        return None
    return total * until / last  # the logged steps' mean for any unlogged steps before `until`


def card_line(progress: Progress) -> str | None:
    """The model card's line for a resumed run, or None."""
    steps = progress.resumed_at
    if not steps:
        return None
    times = "once" if len(steps) == 1 else f"{len(steps)} times"
    at = ", ".join(f"step {step}" for step in steps)
    runtime = ("the metrics cover the whole run (train_loss over all steps, runtime and speed summed over the parts)"
               if progress.earlier_runtime is not None else
               "train_loss covers the whole run; runtime and speed only the last part (a checkpoint without hftk's progress record)")
    return f"Resumed {times} (from the checkpoint at {at}); {runtime}."
