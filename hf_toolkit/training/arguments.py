"""TrainingArguments from a recipe's ``training`` section: hftk's defaults and the precision
that suits this machine. Built during the recipe checks (a value TrainingArguments refuses is
a recipe problem) and used as is by training, which logs what it computes in and why
(:func:`describe_compute`: the precision, and the attention kernel from :mod:`hf_toolkit.core.attention`).
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
    trackers, evaluation every epoch when there is validation data, ``use_cpu`` on machines
    without CUDA (the Trainer only engages CPU DDP under torchrun with it), and fused AdamW
    (:func:`torch_defaults`).
    """
    import torch
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    has_validation = recipe.data.has_validation
    training = dict(recipe.training)
    training.setdefault("output_dir", default_output_dir)
    training.setdefault("report_to", "none")
    training["seed"] = recipe.seed  # one seed for the whole run (training.seed is rejected)
    training.setdefault("eval_strategy", "epoch" if has_validation else "no")
    for key, value in {**torch_defaults(training), **task.training_defaults}.items():
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


def torch_defaults(training: dict[str, Any]) -> dict[str, Any]:
    """Defaults that depend on the installed torch: ``optim: adamw_torch_fused`` from torch 2.4 on.

    Fused AdamW updates each parameter group in one kernel; the Trainer's default before torch 2.8,
    ``adamw_torch`` (foreach), takes several passes over the weights and optimizer states: measured
    on 2 CPU cores for MiniLM (22.7M parameters), about 350 ms per step against 45-85 ms fused, some
    10% of a batch-32 x 256-token QA step. From torch 2.8 the Trainer picks fused itself. Not under
    DeepSpeed, whose config may bring its own optimizer.
    """
    import torch
    from packaging.version import Version

    if "deepspeed" in training or Version(torch.__version__.split("+")[0]) < Version("2.4"):
        return {}
    return {"optim": "adamw_torch_fused"}


def precision_setting(recipe: "Recipe") -> str | None:
    """What decides a run's precision: the recipe's ``precision``; when it sets none, ``'default'``
    (bf16 where the hardware runs it natively, else fp32), or None when ``training.bf16``/``fp16``
    are written (they then apply as written)."""
    if recipe.precision is not None:
        return recipe.precision
    return None if "bf16" in recipe.training or "fp16" in recipe.training else "default"


def precision_flags(recipe: "Recipe", training: dict[str, Any]) -> dict[str, bool]:
    """TrainingArguments bf16/fp16 for the recipe's `precision`.

    ``auto``: bf16 on CUDA GPUs that support it, fp16 on older CUDA GPUs, bf16 autocast on CPUs
    with native bf16 (AVX512-BF16 or AMX), fp32 elsewhere. No ``precision`` (the default): the
    same, except fp16, which only a recipe that asks for it gets (fp16 overflows in some models,
    T5 among them; bf16 has fp32's range); with ``training.bf16``/``fp16`` written, those apply.
    bf16 autocast keeps fp32 weights, optimizer states and loss: only matmul inputs round to bf16.
    """
    if recipe.precision is None:
        if "bf16" in training or "fp16" in training:
            return {}
        return {"bf16": resolve_precision("auto") == "bf16", "fp16": False}
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
    return bool(cpu_bf16_features())


def cpu_bf16_features() -> list[str]:
    """This CPU's native bf16 instructions by name (``AMX-BF16``, ``AVX512-BF16``) from /proc/cpuinfo (Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return [name for flag, name in ((" amx_bf16", "AMX-BF16"), (" avx512_bf16", "AVX512-BF16")) if flag in flags]


def compute_dtype(args) -> Any:
    """The dtype training's matmuls (and attention) run in: bf16/fp16 under autocast, else float32."""
    import torch

    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32


def describe_precision(precision: str | None, args) -> str:
    """hftk's log line on the precision a run trains in, and why: `precision` as
    :func:`precision_setting` gives it (the recipe's, ``'default'``, or None for ``training.bf16/fp16``)
    and what the machine offers, e.g. 'precision: bf16 autocast (precision:
    auto; this CPU has AMX-BF16, AVX512-BF16)'."""
    import torch

    what = "bf16 autocast" if args.bf16 else "fp16 autocast with loss scaling" if args.fp16 else "fp32"
    gpu = on_gpu(args)
    native = cpu_bf16_features()
    if gpu:
        auto = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        offers = f"the GPU ({torch.cuda.get_device_name(0)}) {'supports' if auto == 'bf16' else 'lacks'} bf16"
    elif native:
        auto, offers = "bf16", f"this CPU has {', '.join(native)}"
    else:
        auto, offers = "fp32", "this CPU has neither AMX-BF16 nor AVX512-BF16, so bf16 is emulated and slower than fp32"
    if precision == "default":
        hint = "; precision: auto or fp16 trains in fp16 with loss scaling" if auto == "fp16" else ""
        return f"precision: {what} (the recipe sets no precision: bf16 where the hardware runs it natively; {offers}{hint})"
    if precision is not None:
        return f"precision: {what} (precision: {precision}; {offers})"
    return f"precision: {what} (training.bf16: {str(args.bf16).lower()}, training.fp16: {str(args.fp16).lower()}; {offers})"


def describe_compute(precision: str | None, args, model) -> list[str]:
    """hftk's log lines at the start of training: the precision, the attention kernel and, on CPU,
    the memory allocator's settings (:func:`hf_toolkit.training.allocator.describe`), each with why."""
    from hf_toolkit.core import attention
    from hf_toolkit.training import allocator

    device = "cuda" if on_gpu(args) else "cpu"
    lines = [describe_precision(precision, args), attention.describe_attention(model, dtype=compute_dtype(args), device=device)]
    memory = allocator.describe(on_gpu(args))
    return lines + ([memory] if memory else [])


def on_gpu(args) -> bool:
    """True when the run trains on a CUDA GPU."""
    import torch

    return torch.cuda.is_available() and not args.use_cpu
