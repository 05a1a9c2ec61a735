"""The TrainerCallbacks hftk adds to a run, each adapting one module's logic to the Trainer's events:
:class:`StopGuard` (:mod:`~hf_toolkit.training.stopping`: a signal or a non-finite loss stops every
rank at one step), :class:`SaveRecipe` (:mod:`~hf_toolkit.training.checkpoints`: the recipe and data
fingerprints in each checkpoint, and the run's progress, :mod:`~hf_toolkit.training.resumption`), :class:`SaveTargetTokenizer` (a decoder tokenizer saved beside the
model), :class:`TrimKeptMemory` (:mod:`~hf_toolkit.training.allocator`) and :class:`ReportAndPrune`
(:mod:`~hf_toolkit.training.pruning`: a sweep trial's evaluations reported to Optuna, and pruning).

Imports transformers at module level: only the training flow imports this module.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from hf_toolkit.core import rundir
from hf_toolkit.errors import HftkError
from hf_toolkit.training import allocator, checkpoints, pruning
from hf_toolkit.training.stopping import SIGNALS, STOP_FILE_ENV

if TYPE_CHECKING:
    from hf_toolkit.recipe.schema import Recipe
    from hf_toolkit.training import resumption


class StopGuard(TrainerCallback):
    """Stops training at the end of an optimizer step on SIGTERM/SIGINT or a non-finite loss, every
    rank at the same step, after the step's checkpoint is saved (see :mod:`hf_toolkit.training.stopping`);
    :func:`~hf_toolkit.training.stopping.raise_if_stopped` then ends the command."""

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


class SaveRecipe(TrainerCallback):
    """Writes the recipe and data fingerprints into each checkpoint (rank 0), and the run's
    `progress` over its parts (:mod:`~hf_toolkit.training.resumption`, timed from the start of
    training): when a save is decided (step or epoch end, before the Trainer writes) and again on
    save (a save decided by the best metric)."""

    def __init__(self, recipe: "Recipe", progress: "resumption.Progress | None" = None) -> None:
        self.recipe = recipe
        self.progress = progress
        self.fingerprints: dict | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.started = time.perf_counter()

    def _write(self, args, state) -> None:
        if not state.is_world_process_zero:
            return
        if self.fingerprints is None:
            self.fingerprints = checkpoints.data_fingerprints(self.recipe)
        checkpoint = Path(args.output_dir) / f"{checkpoints.PREFIX}{state.global_step}"
        checkpoints.save_recipe(checkpoint, self.recipe, self.fingerprints)
        if self.progress is not None:
            self.progress.save(checkpoint)

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            self._write(args, state)

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save:
            self._write(args, state)

    def on_save(self, args, state, control, **kwargs):
        if not (Path(args.output_dir) / f"{checkpoints.PREFIX}{state.global_step}" / checkpoints.CHECKPOINT_RECIPE).is_file():
            self._write(args, state)


class SaveTargetTokenizer(TrainerCallback):
    """Saves a second (decoder) tokenizer next to every checkpoint and into the run directory."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.tokenizer.save_pretrained(Path(args.output_dir) / f"checkpoint-{state.global_step}" / rundir.DECODER_TOKENIZER_DIR)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.tokenizer.save_pretrained(Path(args.output_dir) / rundir.DECODER_TOKENIZER_DIR)


class TrimKeptMemory(TrainerCallback):
    """While a CPU run keeps freed memory (:mod:`hf_toolkit.training.allocator`), hands it back after
    the optimizer steps at which the process has outgrown its size (:class:`allocator.Trimmer`)."""

    def __init__(self, active: bool) -> None:
        self.trimmer = allocator.Trimmer(active)

    def on_step_end(self, args, state, control, **kwargs):
        self.trimmer.after_step(state.global_step)


class ReportAndPrune(TrainerCallback):
    """Reports each evaluation of the sweep trial `spec` to Optuna and stops the trial when its pruner
    says so, every rank at the same step (see :mod:`hf_toolkit.training.pruning`)."""

    def __init__(self, spec: pruning.TrialSpec) -> None:
        self.spec = spec
        self.trial = None
        self.evaluations = 0
        self.pruned_at: int | None = None
        self.training_over = False

    def _trial(self):
        if self.trial is None:
            import optuna

            spec = self.spec
            storage = pruning.open_storage(spec.storage)
            study = optuna.load_study(study_name=spec.study, storage=storage,
                                      sampler=optuna.samplers.RandomSampler(), pruner=pruning.pruner(spec))
            self.trial = optuna.trial.Trial(study, pruning.trial_id(storage, spec.study, spec.number))
        return self.trial

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.pruned_at is not None or self.training_over or metrics is None:
            return  # after training: the final scoring of the validation and test splits
        self.evaluations += 1
        prune = False
        if state.is_world_process_zero:
            prune = self._report(metrics, state.global_step)
        if _rank_zero_decides(args, prune):
            self.pruned_at = state.global_step
            control.should_training_stop = True
            control.should_save = False

    def _report(self, metrics: dict[str, float], step: int) -> bool:
        spec = self.spec
        if spec.metric not in metrics:
            keys = ", ".join(sorted(k for k in metrics if isinstance(metrics[k], (int, float))))
            raise HftkError(f"sweep.metric: {spec.metric} is not among the evaluation metrics ({keys}); "
                            "set sweep.metric to one of them")
        value = float(metrics[spec.metric])
        trial = self._trial()
        trial.report(value, step)
        if self.evaluations <= spec.warmup_evaluations:
            return False
        if trial.should_prune():
            trial.set_user_attr("pruned_at_step", step)
            trial.set_user_attr("reason", f"{spec.metric} {value:.4g} at step {step} behind the median of the "
                                "earlier trials there" + (" (not a number)" if math.isnan(value) else ""))
            return True
        return False

    def on_train_end(self, args, state, control, **kwargs):
        self.training_over = True
        if self.pruned_at is not None:
            message = (f"pruned by the sweep at step {self.pruned_at}: {self.spec.metric} fell behind the median of the "
                       "earlier trials") if state.is_world_process_zero else ""
            raise pruning.TrialPruned(message, 0 if os.environ.get(STOP_FILE_ENV) else 2)


def _rank_zero_decides(args: Any, prune: bool) -> bool:
    """Rank 0's pruning decision, on every rank (one all_reduce under several processes)."""
    if args.world_size <= 1:
        return prune
    import torch

    if not torch.distributed.is_initialized():
        return prune
    device = args.device if torch.distributed.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([float(prune)], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())
