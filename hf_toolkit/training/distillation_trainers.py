"""The Trainer classes a distilled run trains with: each task Trainer that distils, with
:class:`~hf_toolkit.training.distillation.DistillationLoss` mixed in, as a module-level class.

A task's ``trainer_class`` hook names its Trainer; :func:`trainer_class` gives the distilling
class for it. A new task that distils with its own Trainer class adds its pair to
:data:`DISTILLING` here. Imports torch and transformers at module level: only the training flow
imports this module.
"""

from __future__ import annotations

from transformers import Trainer

from hf_toolkit.errors import HftkError
from hf_toolkit.tasks.trainers import MaskedPositionsTrainer, WindowOrderTrainer
from hf_toolkit.training.distillation import DistillationLoss


class DistillationTrainer(DistillationLoss, Trainer):
    """text-classification and causal-LM students."""


class DistillationWindowOrderTrainer(DistillationLoss, WindowOrderTrainer):
    """question-answering students (evaluated in dataset order, as the task's own Trainer)."""


class DistillationMaskedPositionsTrainer(DistillationLoss, MaskedPositionsTrainer):
    """masked-LM students; the distillation loss reads full logits (its outputs), so the
    masked-positions-only head of :class:`MaskedPositionsTrainer` does not apply to them."""


DISTILLING = {
    Trainer: DistillationTrainer,
    WindowOrderTrainer: DistillationWindowOrderTrainer,
    MaskedPositionsTrainer: DistillationMaskedPositionsTrainer,
}


def trainer_class(base: type) -> type:
    """The distilling class for a task's Trainer class `base`."""
    if base not in DISTILLING:
        raise HftkError(f"distillation has no Trainer for {base.__name__}: add a DistillationLoss class for it to "
                        "hf_toolkit/training/distillation_trainers.py (DISTILLING)")
    return DISTILLING[base]
