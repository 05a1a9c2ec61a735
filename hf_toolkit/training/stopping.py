"""What stops a training run early and how: SIGTERM or Ctrl-C (SIGINT), and a non-finite loss.

:func:`guard` adds a TrainerCallback to a Trainer. While the Trainer trains, SIGTERM and SIGINT
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
import sys
import threading
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


def guard(trainer: Any) -> Any:
    """Add the stop callback to `trainer` and return it (see the module docstring)."""
    from transformers import TrainerCallback

    class StopGuard(TrainerCallback):
        def __init__(self) -> None:
            self.signum = 0  # the first signal received, on this rank
            self.non_finite = None  # this rank's tensor: some training loss of the step was not finite
            self.stop: tuple[int, bool] | None = None  # (signal, non-finite loss) agreed by every rank
            self.stopped_at: int | None = None
            self.previous: dict[int, Any] = {}
            self.hook = None
            self.main = True

        # -- signals -----------------------------------------------------------------------
        def _on_signal(self, signum: int, frame: Any) -> None:
            if not self.signum:
                self.signum = signum
                sys.stderr.write(f"hftk: {signal.Signals(signum).name} received: saving a checkpoint at the end of this "
                                 "optimizer step, then stopping\n")

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.main = state.is_world_process_zero
            if threading.current_thread() is threading.main_thread():
                for signum in SIGNALS:
                    self.previous[signum] = signal.signal(signum, self._on_signal)
            if model is not None:
                self.hook = model.register_forward_hook(self._watch_loss)

        def on_train_end(self, args, state, control, **kwargs):
            for signum, handler in self.previous.items():
                signal.signal(signum, handler)
            self.previous.clear()
            if self.hook is not None:
                self.hook.remove()

        # -- the loss ----------------------------------------------------------------------
        def _watch_loss(self, module: Any, inputs: Any, output: Any) -> None:
            import torch

            loss = getattr(output, "loss", None)
            if module.training and isinstance(loss, torch.Tensor):
                bad = ~torch.isfinite(loss.detach()).all()
                self.non_finite = bad if self.non_finite is None else self.non_finite | bad

        # -- agreeing and acting -----------------------------------------------------------
        def _agree(self, args) -> tuple[int, bool]:
            """(a signal any rank received, whether any rank's loss was non-finite) this step."""
            import torch

            non_finite = bool(self.non_finite.item()) if self.non_finite is not None else False
            self.non_finite = None
            requested = os.environ.get(STOP_FILE_ENV)
            if not self.signum and requested and os.path.exists(requested):
                with open(requested, encoding="utf-8") as handle:
                    self.signum = int(handle.read().strip() or signal.SIGTERM)
            if args.world_size <= 1 or not torch.distributed.is_initialized():
                return self.signum, non_finite
            device = args.device if torch.distributed.get_backend() == "nccl" else "cpu"
            flags = torch.tensor([float(self.signum), float(non_finite)], device=device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            return int(flags[0].item()), bool(flags[1].item())

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            signum, non_finite = self._agree(args)
            if non_finite and model is not None:
                for parameter in model.parameters():
                    parameter.grad = None  # the optimizer skips parameters without a gradient
            if signum or non_finite:
                self.stop = (signum, non_finite)

        def on_step_end(self, args, state, control, **kwargs):
            if self.stop is not None and self.stopped_at is None:
                self.stopped_at = state.global_step
                control.should_save = True
                control.should_training_stop = True
                control.should_evaluate = False

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.stopped_at is not None:  # saved at the step already
                control.should_save = False
                control.should_evaluate = False

    callback = StopGuard()
    trainer.add_callback(callback)
    return callback


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
