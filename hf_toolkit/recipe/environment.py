"""Pass two of the recipe checks, the parts that need no task: files, the hub, and the
``training`` keys and value types against transformers' ``TrainingArguments``.

Each check returns :class:`~hf_toolkit.errors.Problem` records; :mod:`hf_toolkit.recipe.checks` runs
them (with the task's own and the model-config checks) after the shape is known to be right.
"""

from __future__ import annotations

import glob
import importlib.util
import math
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from hf_toolkit.core import hub
from hf_toolkit.errors import HftkError, Problem, did_you_mean
from hf_toolkit.recipe.paths import looks_local, resolve_path
from hf_toolkit.recipe.schema import PACKAGED_BUILDERS, DataSource, ModelSection

# --------------------------------------------------------------------------------------------
# Files and the hub


def file_problems(sources: list[tuple[str, DataSource]], model: ModelSection | None) -> list[Problem]:
    """Data files (per split) and local model/tokenizer paths that do not exist."""
    problems = []
    for split, source in sources:
        problems += [Problem(("data", split), message) for message in _source_problems(source)]
    for key, part in model.parts() if model is not None else []:
        for name in ("name_or_path", "tokenizer"):
            value = getattr(part, name)
            if value is not None and looks_local(value):
                message = _missing_path(value, "give an existing directory or a hub id such as 'gpt2'")
                if message:
                    problems.append(Problem((*key.split("."), name), message))
        pickle_only = _pickle_only(part.name_or_path) if part.init == "pretrained" and not part.allow_pickle else None
        if pickle_only:
            problems.append(Problem((*key.split("."), "name_or_path"),
                                    f"'{part.name_or_path}' holds only pickle weights ({pickle_only}), which can run code when "
                                    f"loaded; convert them to safetensors, or if you trust the file set {key}.allow_pickle: true"))
    return problems


def _pickle_only(reference: str | None) -> str | None:
    """The pickle weights file of a local model directory without safetensors weights, else None."""
    if reference is None or not looks_local(reference):
        return None
    try:
        path = resolve_path(reference)
    except ValueError:
        return None
    if not path.is_dir() or any(path.glob("*.safetensors")) or any(path.glob("*.safetensors.index.json")):
        return None
    pickles = sorted(p.name for p in path.glob("*.bin") if p.name.startswith(("pytorch_model", "tf_model", "model")))
    return pickles[0] if pickles else None


def _missing_path(value: str, fix: str) -> str | None:
    try:
        path = resolve_path(value)
    except ValueError as error:  # pkg:// of a package that is not installed
        return str(error)
    return None if path.exists() else f"'{value}' does not exist (looked at {path.absolute()}); {fix}"


def _source_problems(source: DataSource) -> list[str]:
    if source.file is not None:
        try:
            path = resolve_path(source.file)
        except ValueError as error:
            return [str(error)]
        return [] if path.is_file() else [f"file not found: '{source.file}' (looked at {path.absolute()})"]
    if source.path in PACKAGED_BUILDERS:
        missing = [pattern for pattern in _local_data_files(source.data_files) if not _matches_a_file(pattern)]
        if missing:
            return [f"data_files: no file matches '{missing[0]}' (looked at {resolve_path(missing[0]).absolute()})"]
    return []


def _local_data_files(data_files: str | list[str] | dict[str, str | list[str]] | None) -> list[str]:
    """The local paths and glob patterns in a load_dataset ``data_files`` value (URLs left out)."""
    if data_files is None:
        return []
    if isinstance(data_files, dict):
        return [p for value in data_files.values() for p in _local_data_files(value)]
    patterns = [data_files] if isinstance(data_files, str) else list(data_files)
    return [p for p in patterns if "://" not in p]


def _matches_a_file(pattern: str) -> bool:
    """True when a data_files path, or glob pattern (``data/*.jsonl``, ``data/**/*.csv``), names a file."""
    return any(Path(match).is_file() for match in glob.glob(str(resolve_path(pattern)), recursive=True))


def hub_problems(model: ModelSection | None) -> list[Problem]:
    """Hub ids that cannot be loaded (no network, not cached), found in < 2 s."""
    problems = []
    for key, part in model.parts() if model is not None else []:
        for name in ("name_or_path", "tokenizer"):
            value = getattr(part, name)
            if value is not None and not looks_local(value):
                try:
                    hub.require(value, "model" if name == "name_or_path" else "tokenizer")
                except HftkError as error:
                    problems.append(Problem((*key.split("."), name), str(error)))
    return problems


def output_dir_problems(output_dir: str) -> list[Problem]:
    """An output directory that is a file, or that cannot be created where it is asked for."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        return [Problem(("training", "output_dir"), f"'{output_dir}' is a file, not a directory; choose another output_dir")]
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        return [Problem(("training", "output_dir"), f"cannot create '{output_dir}': '{existing}' is a file; choose another output_dir")]
    import os

    if not os.access(existing, os.W_OK | os.X_OK):
        return [Problem(("training", "output_dir"), f"cannot create '{output_dir}': no permission to write in '{existing}'")]
    return []


# --------------------------------------------------------------------------------------------
# training: checked against transformers.TrainingArguments


# `training` keys hftk refuses, each with what to do instead; checked before "unknown key", so a
# removed transformers 4 key gets its new spelling rather than a distant did-you-mean.
_DECODING = "; it drives evaluation during training, hftk eval and hftk generate alike"
_SCRIPT_ONLY = "remove it: the Trainer does not read it (only example scripts do), and "
_REMOVED_IN_5 = "a transformers 4 key that transformers 5 removed: "
REFUSED_TRAINING_KEYS = {
    # Seq2SeqTrainingArguments' decoding settings would make evaluation decode differently from
    # the saved generation_config.json: the recipe's `generation` section is the one place for them.
    "generation_max_length": "set decoding in the recipe's generation section instead (generation.max_new_tokens)" + _DECODING,
    "generation_num_beams": "set decoding in the recipe's generation section instead (generation.num_beams)" + _DECODING,
    "generation_config": "set decoding in the recipe's generation section instead (generation.*)" + _DECODING,
    # One seed for the run: it also seeds weight initialisation, before the Trainer exists.
    "seed": "set the recipe's top-level seed instead: it seeds weight initialisation and data splits as well as the Trainer",
    # Accepting these would silently do nothing.
    "do_train": _SCRIPT_ONLY + "hftk finetune always trains",
    "do_eval": _SCRIPT_ONLY + "evaluation runs when there is validation data (data.validation or "
               "data.validation_split); turn it off with training.eval_strategy: 'no'",
    "do_predict": _SCRIPT_ONLY + "data.test is scored at the end of training when the recipe sets it",
    "evaluation_strategy": _REMOVED_IN_5 + "use eval_strategy",
    "no_cuda": _REMOVED_IN_5 + "use use_cpu: true",
    "warmup_ratio": _REMOVED_IN_5 + "use warmup_steps: a value below 1 is a fraction of the training steps (e.g. 0.1)",
    "group_by_length": _REMOVED_IN_5 + "use train_sampling_strategy: group_by_length",
    "per_gpu_train_batch_size": _REMOVED_IN_5 + "use per_device_train_batch_size",
    "per_gpu_eval_batch_size": _REMOVED_IN_5 + "use per_device_eval_batch_size",
    "push_to_hub_model_id": _REMOVED_IN_5 + "use hub_model_id",
    "include_inputs_for_metrics": _REMOVED_IN_5 + "use include_for_metrics: [inputs]",
    "overwrite_output_dir": _REMOVED_IN_5 + "remove it (the Trainer writes into output_dir as it is)",
    "save_safetensors": _REMOVED_IN_5 + "remove it (weights are always saved as safetensors)",
    "use_mps_device": _REMOVED_IN_5 + "remove it (an Apple GPU is used when present; use_cpu: true avoids it)",
}


# Keys whose type hint says text but which transformers also takes as true/false:
# resume_from_checkpoint: true is the newest checkpoint in output_dir (Trainer.train's convention);
# fsdp: true is the form transformers 5 asks for (the "full_shard auto_wrap" string is deprecated).
ALSO_BOOLEAN_TRAINING_KEYS = ("resume_from_checkpoint", "fsdp")

# report_to integrations and the package each needs (transformers fails at Trainer start without it).
REPORT_TO_PACKAGES = {
    "wandb": "wandb", "tensorboard": "tensorboard", "mlflow": "mlflow", "comet_ml": "comet_ml",
    "neptune": "neptune", "clearml": "clearml", "dagshub": "dagshub", "dvclive": "dvclive",
    "codecarbon": "codecarbon", "swanlab": "swanlab", "trackio": "trackio", "azure_ml": "azureml",
}


def training_problems(training: dict[str, Any]) -> list[Problem]:
    """`training` keys and value types against TrainingArguments, and report_to packages."""
    from transformers import Seq2SeqTrainingArguments

    fields = {f.name: f for f in Seq2SeqTrainingArguments.__dataclass_fields__.values() if f.init}
    hints = typing.get_type_hints(Seq2SeqTrainingArguments)
    problems = []
    for key, value in training.items():
        if key in REFUSED_TRAINING_KEYS:
            problems.append(Problem(("training", key), REFUSED_TRAINING_KEYS[key]))
        elif key not in fields:
            hint = did_you_mean(key, fields) or " (see transformers.TrainingArguments for the accepted keys)"
            problems.append(Problem(("training", key), f"unknown TrainingArguments key{hint}"))
        elif not (key in ALSO_BOOLEAN_TRAINING_KEYS and isinstance(value, bool)):
            message = _type_problem(value, hints[key]) or _range_problem(key, value)
            if message:
                problems.append(Problem(("training", key), message))
    if "report_to" in training and not problems:
        problems += _report_to_problems(training["report_to"])
    return problems + (_package_problems(training) if not problems else [])


# Numeric `training` keys and the values that make sense, as (lowest, lowest included, highest,
# highest included, what the key is); None: no bound. TrainingArguments takes any number for most
# of them and the run fails (or silently does nothing useful) much later.
_POSITIVE, _AT_LEAST_0, _AT_LEAST_1, _SHARE = (0, False, None, False), (0, True, None, False), (1, True, None, False), (0, True, 1, True)
TRAINING_RANGES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "learning_rate": _POSITIVE,
    "per_device_train_batch_size": _AT_LEAST_1,
    "per_device_eval_batch_size": _AT_LEAST_1,
    "gradient_accumulation_steps": _AT_LEAST_1,
    "eval_accumulation_steps": _AT_LEAST_1,
    "num_train_epochs": _POSITIVE,
    "logging_steps": _POSITIVE,
    "eval_steps": _POSITIVE,
    "save_steps": _POSITIVE,
    "save_total_limit": _AT_LEAST_1,
    "warmup_steps": _AT_LEAST_0,
    "weight_decay": _AT_LEAST_0,
    "max_grad_norm": _AT_LEAST_0,
    "adam_beta1": (0, True, 1, False),
    "adam_beta2": (0, True, 1, False),
    "adam_epsilon": _POSITIVE,
    "label_smoothing_factor": (0, True, 1, False),
    "dataloader_num_workers": _AT_LEAST_0,
    "dataloader_prefetch_factor": _AT_LEAST_1,
    "eval_delay": _AT_LEAST_0,
    "torch_empty_cache_steps": _AT_LEAST_1,
    "early_stopping_patience": _AT_LEAST_1,
}


def _range_problem(key: str, value: Any) -> str | None:
    """A message when a numeric `training` value is outside what its key can mean."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if key == "max_steps":  # -1: train by num_train_epochs (0 would silently mean the same)
        return None if value == -1 or value >= 1 else f"must be a positive number of optimizer steps, or -1 to train by num_train_epochs (got {value!r})"
    if key not in TRAINING_RANGES:
        return None
    low, low_included, high, high_included = TRAINING_RANGES[key]
    if low is not None and (value < low or (value == low and not low_included)):
        return f"must be {'at least' if low_included else 'greater than'} {low} (got {value!r})"
    if high is not None and (value > high or (value == high and not high_included)):
        return f"must be {'at most' if high_included else 'less than'} {high} (got {value!r})"
    return None


# Keys that only act under one strategy: (key, its strategy key, the strategy value that reads it).
_STRATEGY_KEYS = (
    ("eval_steps", "eval_strategy", "steps"),
    ("save_steps", "save_strategy", "steps"),
    ("logging_steps", "logging_strategy", "steps"),
)


def training_warnings(training: dict[str, Any]) -> list[Problem]:
    """Settings the Trainer runs as written but whose effect a user may not expect, said before
    training (as ``hftk: warning: ...``): warmup at least as long as training (a smoke run with a
    small ``max_steps`` is the usual case), where the learning rate never reaches its peak."""
    warmup, max_steps = training.get("warmup_steps"), training.get("max_steps", -1)
    if isinstance(warmup, (int, float)) and not isinstance(warmup, bool) and warmup >= 1 and isinstance(max_steps, int) and max_steps >= 1 and warmup >= max_steps:
        return [Problem(("training", "warmup_steps"),
                        f"{warmup} warmup steps but training stops after max_steps={max_steps}: the learning rate "
                        f"rises to {max_steps}/{warmup} of its peak and never reaches it (a value below 1 is a fraction "
                        "of the steps, e.g. 0.1)")]
    return []


def strategy_problems(training: dict[str, Any], args: Any) -> list[Problem]:
    """``eval_steps`` / ``save_steps`` / ``logging_steps`` written in the recipe while the (resolved)
    strategy is not 'steps', so the value would be silently ignored."""
    problems = []
    for key, strategy_key, uses in _STRATEGY_KEYS:
        strategy = str(getattr(getattr(args, strategy_key), "value", getattr(args, strategy_key)))
        if key in training and strategy != uses:
            given = "as written" if strategy_key in training else "the default"
            problems.append(Problem(("training", key),
                                    f"only used with {strategy_key}: {uses}, but {strategy_key} is '{strategy}' ({given}); "
                                    f"set {strategy_key}: {uses}, or remove {key}"))
    return problems


# Attention implementations that need a package (and a CUDA GPU) beyond transformers and torch.
FLASH_ATTENTION_PACKAGES = {"flash_attention_2": ("flash_attn", "flash-attn"),
                            "flash_attention_3": ("flash_attn_interface", "flash-attn 3 (hopper build)")}


def attention_problems(model: ModelSection | None) -> list[Problem]:
    """``model.attn_implementation``: a name transformers knows, its package installed, a GPU for
    flash attention; not on an encoder-decoder pair (each side keeps its own)."""
    value = getattr(model, "attn_implementation", None)
    if value is None:
        return []
    key = ("model", "attn_implementation")
    if model.is_pair:
        return [Problem(key, "does not apply to an encoder-decoder pair (model.encoder + model.decoder); remove it")]
    from transformers import AttentionInterface

    known = ["eager", *AttentionInterface().valid_keys()]
    if value not in known and "/" not in value:  # "org/repo": a kernel from the hub's kernels library
        return [Problem(key, f"unknown attention implementation '{value}'{did_you_mean(value, known) or ''}; "
                             f"one of {', '.join(repr(k) for k in known)}")]
    if value in FLASH_ATTENTION_PACKAGES:
        import torch

        module, package = FLASH_ATTENTION_PACKAGES[value]
        if not torch.cuda.is_available():
            return [Problem(key, f"'{value}' needs a CUDA GPU; on CPU use 'sdpa' (the default)")]
        if importlib.util.find_spec(module) is None:
            return [Problem(key, f"'{value}' needs the {package} package: pip install {package.split()[0]}, or use 'sdpa'")]
    return []


def _package_problems(training: dict[str, Any]) -> list[Problem]:
    """Switches of `training` whose feature lives in a package that is not installed."""
    if training.get("use_liger_kernel") is True and importlib.util.find_spec("liger_kernel") is None:
        return [Problem(("training", "use_liger_kernel"), "needs the liger-kernel package (Triton kernels for CUDA GPUs): "
                                                          "pip install liger-kernel, or remove the key")]
    return []


def _report_to_problems(report_to: Any) -> list[Problem]:
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    problems = []
    for name in names:
        package = REPORT_TO_PACKAGES.get(name)
        if package is not None and importlib.util.find_spec(package) is None:
            problems.append(Problem(("training", "report_to"),
                                    f"'{name}' needs the {package} package, which is not installed: "
                                    f"pip install {package} (or remove {name} from report_to)"))
    return problems


def _type_problem(value: Any, annotation: Any) -> str | None:
    """A message when `value` cannot be a value of `annotation`; None when it fits."""
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    arms = typing.get_args(annotation) if is_union else (annotation,)
    enums = [a for a in arms if isinstance(a, type) and issubclass(a, Enum)]
    if enums:  # `Union[SomeStrategy, str]`: the str arm only exists for the enum's values
        arms = tuple(a for a in arms if a is not str)
    names = []
    for arm in arms:
        fits, name = _fits(value, arm)
        if fits is None:
            return None  # a type we do not check here; TrainingArguments checks it
        if fits:
            return None
        names.append(name)
    return f"expected {' or '.join(dict.fromkeys(names))} (got {value!r})"


def _fits(value: Any, arm: Any) -> tuple[bool | None, str]:
    """(whether `value` fits one arm of a type hint, the arm's name); None: not checked here."""
    origin = typing.get_origin(arm) or arm
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if arm is type(None):
        return value is None, "null"
    if origin is bool:
        return isinstance(value, bool), "true/false"
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool), "an integer"
    if origin is float:
        return number and math.isfinite(value), "a number"
    if isinstance(origin, type) and issubclass(origin, Enum):
        choices = [str(e.value) for e in origin]
        return isinstance(value, str) and value in choices, "one of " + ", ".join(choices)
    if origin is str:
        return isinstance(value, str), "a string"
    if origin in (list, dict):
        return isinstance(value, origin) or (origin is list and isinstance(value, str)), "a list" if origin is list else "a mapping"
    return None, ""
