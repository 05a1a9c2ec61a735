"""The Trainer's ``checkpoint-N`` directories in an output directory: which are complete, and
which one ``training.resume_from_checkpoint`` resumes from.

The Trainer's own choice (the highest number) may be a save that a kill cut short: it has no
``trainer_state.json``, which the Trainer writes last, and resuming from it crashes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hf_toolkit.errors import Problem

TRAINER_STATE = "trainer_state.json"
PREFIX = "checkpoint-"

logger = logging.getLogger("hftk")


def latest_checkpoint(output_dir: str | Path) -> str | None:
    """The highest-numbered checkpoint-N in `output_dir` that was saved completely."""
    steps = []
    for path in Path(output_dir).glob(f"{PREFIX}*") if Path(output_dir).is_dir() else []:
        suffix = path.name.removeprefix(PREFIX)
        if suffix.isdigit() and (path / TRAINER_STATE).is_file():
            steps.append((int(suffix), path))
    return str(max(steps)[1]) if steps else None


def resume_problems(args: Any) -> list[Problem]:
    """``training.resume_from_checkpoint``: a checkpoint directory, or true for the newest complete one in output_dir."""
    resume, key = args.resume_from_checkpoint, ("training", "resume_from_checkpoint")
    if resume is True:
        if latest_checkpoint(args.output_dir) is None:
            return [Problem(key, f"no complete checkpoint-* directory in {args.output_dir} to resume from; train with "
                                 "save_strategy 'steps' or 'epoch' first, or give a checkpoint path")]
    elif resume and not (Path(resume) / TRAINER_STATE).is_file():
        what = "has no trainer_state.json (a save cut short?)" if Path(resume).is_dir() else "not found"
        return [Problem(key, f"checkpoint directory {what}: '{resume}' (looked at {Path(resume).absolute()})")]
    return []


def resume_point(args: Any) -> str | None:
    """The checkpoint ``training.resume_from_checkpoint`` names (true: the newest complete one), or None."""
    resume = latest_checkpoint(args.output_dir) if args.resume_from_checkpoint is True else args.resume_from_checkpoint
    if resume:
        logger.info("resuming from %s", resume)
    return resume or None
