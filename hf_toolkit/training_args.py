"""TrainingArguments from a recipe's ``training`` section: hftk's defaults and the precision
that suits this machine. Built during the recipe checks (a value TrainingArguments refuses is
a recipe problem) and used as is by training.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_toolkit.errors import Problem, RecipeError

if TYPE_CHECKING:
    from hf_toolkit.recipe.schema import Recipe
    from hf_toolkit.tasks.base import Task


def training_arguments(recipe: "Recipe", task: "Task", *, default_output_dir: str):
    """TrainingArguments (Seq2SeqTrainingArguments for seq2seq tasks) from the recipe's `training`.

    hftk's defaults, each overridable in the recipe: output_dir runs/<recipe name>, no experiment
    trackers, evaluation every epoch when there is validation data, and ``use_cpu`` on machines
    without CUDA (the Trainer only engages CPU DDP under torchrun with it).
    """
    import torch
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    has_validation = recipe.data.has_validation
    training = dict(recipe.training)
    training.setdefault("output_dir", default_output_dir)
    training.setdefault("report_to", "none")
    training["seed"] = recipe.seed  # one seed for the whole run (training.seed is rejected)
    training.setdefault("eval_strategy", "epoch" if has_validation else "no")
    for key, value in task.training_defaults.items():
        training.setdefault(key, value)
    if not torch.cuda.is_available():
        training.setdefault("use_cpu", True)
    if training["eval_strategy"] != "no" and not has_validation:
        raise RecipeError([Problem(("training", "eval_strategy"),
                                   f"'{training['eval_strategy']}' needs validation data; "
                                   "set data.validation or data.validation_split, or eval_strategy: 'no'")])
    training.update(precision_flags(recipe, training))
    cls = Seq2SeqTrainingArguments if task.seq2seq_trainer else TrainingArguments
    try:
        return cls(**training)
    except ValueError as error:  # TrainingArguments' own checks of values and combinations
        raise RecipeError([Problem(("training",), str(error))]) from None
    except ImportError:  # transformers imports deepspeed as soon as the key is set
        if "deepspeed" not in training:
            raise
        raise RecipeError([Problem(("training", "deepspeed"), "needs the deepspeed package: pip install deepspeed "
                                   "(on a machine with CUDA), or remove the key")]) from None


def precision_flags(recipe: "Recipe", training: dict[str, Any]) -> dict[str, bool]:
    """TrainingArguments bf16/fp16 for the recipe's `precision` (None: leave training as written).

    ``auto``: bf16 on CUDA GPUs that support it, fp16 on older CUDA GPUs, bf16 autocast on CPUs
    with native bf16 (AVX512-BF16 or AMX), fp32 elsewhere.
    """
    if recipe.precision is None:
        return {}
    if "bf16" in training or "fp16" in training:
        raise RecipeError([Problem(("precision",), "set either precision or training.bf16/training.fp16, not both")])
    choice = resolve_precision(recipe.precision)
    return {"bf16": choice == "bf16", "fp16": choice == "fp16"}


def resolve_precision(precision: str) -> str:
    """'fp32', 'bf16' or 'fp16' for a recipe's `precision` on this machine."""
    import torch

    if precision != "auto":
        if precision == "fp16" and not torch.cuda.is_available():
            raise RecipeError([Problem(("precision",), "fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")])
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 in /proc/cpuinfo (Linux); elsewhere assume not."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags
