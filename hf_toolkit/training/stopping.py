"""What stops a training run early and how: SIGTERM or Ctrl-C (SIGINT), and a non-finite loss.

:class:`hf_toolkit.training.callbacks.StopGuard` is the TrainerCallback that does it. While the Trainer trains, SIGTERM and SIGINT
only set a flag; at the end of the optimizer step under way the callback asks the Trainer to save
a complete checkpoint (``checkpoint-N``, the Trainer's own, resumable with ``--resume``) and to
stop. A forward hook watches the training loss: when it is NaN or inf, that step's update is
dropped (the gradients are discarded before the optimizer step), the weights from before it are
saved as the step's checkpoint, and training stops. :func:`raise_if_stopped` then ends the command
with :class:`Stopped` (exit 128 + the signal: 143 for SIGTERM, 130 for Ctrl-C) or
:class:`NonFiniteLoss` (exit 2, with the step and what to change).

Under several processes the ranks agree before they act: the flags of every rank are combined
with one ``all_reduce`` per optimizer step, so all of them save and stop at the same step. Under
``hftk finetune --nproc`` the signal reaches the launcher, which asks for the stop through a file
named in ``HFTK_STOP_FILE`` (read by every rank at each step); the ranks then end with status 0 and
the launcher exits 128 + the signal. The Trainer writes ``trainer_state.json`` last, so a save a
second kill cuts short is never taken for complete.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

from hf_toolkit.errors import HftkError

logger = logging.getLogger("hftk")
SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_FILE_ENV = "HFTK_STOP_FILE"  # set by hftk's --nproc launcher: a stop request arrives as this file


class Stopped(HftkError):
    """Training stopped on a signal after saving a checkpoint; ``exit_code``: 128 + the signal (0 for
    a rank of hftk's own launcher, which reports it). Only rank 0 has a message."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteLoss(HftkError):
    """The training loss became NaN or inf."""


def raise_if_stopped(callback: Any, output_dir: str | Path, recipe_path: str | Path) -> None:
    """After ``trainer.train()``: end the command when the guard stopped the run."""
    if callback.stop is None:
        return
    signum, non_finite = callback.stop
    checkpoint = Path(output_dir) / f"checkpoint-{callback.stopped_at}"
    if non_finite:
        raise NonFiniteLoss(
            f"the training loss became NaN or inf at step {callback.stopped_at}; training stopped, and {checkpoint} holds "
            f"the weights from before that step (its update was dropped). Lower training.learning_rate, set "
            f"training.max_grad_norm (e.g. 1.0), or train in fp32 or bf16 rather than fp16 (precision), then start "
            f"again with --overwrite"
        )
    exit_code = 0 if os.environ.get(STOP_FILE_ENV) else 128 + signum  # hftk's launcher reports the signal itself
    if not callback.main:  # one message, from rank 0
        raise Stopped("", exit_code)
    raise Stopped(f"stopped by {signal.Signals(signum).name} at step {callback.stopped_at}; the checkpoint {checkpoint} "
                  f"is complete. Continue with: hftk finetune {recipe_path} --resume (and the same --set options)", exit_code)
