"""``hftk finetune``: recipe -> data -> tokenizer and model -> Trainer -> saved run directory.

:func:`finetune` reads top to bottom. Everything a user can get wrong (the recipe, the training
arguments, the generation settings) is checked before any data or model is loaded.

A run directory is a plain Hugging Face model directory (weights, config, tokenizer,
generation_config.json) that loads with ``AutoModelFor*.from_pretrained(dir)`` without hftk, plus:

- ``hftk_recipe.yaml``: the resolved recipe (defaults filled in), which ``hftk generate`` /
  ``hftk eval`` read to know the task and column mapping;
- ``metrics.json``: final train / validation / test metrics;
- ``trainer_state.json``: the Trainer's log history and step count;
- ``README.md``: a short model card.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from hf_toolkit import data as data_lib
from hf_toolkit import modeling
from hf_toolkit.errors import RecipeError
from hf_toolkit.recipe import Recipe, load_recipe, locate_problems
from hf_toolkit.tasks import get_task

logger = logging.getLogger("hftk")
RECIPE_FILE = "hftk_recipe.yaml"
METRICS_FILE = "metrics.json"
TRAINER_STATE = "trainer_state.json"


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict[str, float]


@dataclass
class CheckedRun:
    """A recipe that passed every check that needs no data or weights, with what those checks built."""

    recipe: Recipe
    task: ModuleType
    args: Any  # TrainingArguments or Seq2SeqTrainingArguments
    generation: dict[str, Any]


def check_run(recipe_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> CheckedRun:
    """Every check that runs before data or weights load; all problems at once, located in the recipe.

    The recipe schema, then the task's own checks, the roles ``data.columns`` maps, the model
    config overrides (against the model's config class), the training arguments and the
    generation settings.
    """
    recipe = load_recipe(recipe_path, overrides)
    task = get_task(recipe.task)
    problems: list[str] = []

    def attempt(check, *args, **kwargs):
        try:
            return check(*args, **kwargs)
        except RecipeError as error:
            problems.extend(error.problems)
            return None

    if hasattr(task, "check_recipe"):
        attempt(task.check_recipe, recipe)
    attempt(data_lib.check_columns, recipe.data, task.ROLES, task.OPTIONAL_ROLES, recipe.task)
    attempt(modeling.check_configs, recipe.model)
    args = attempt(training_arguments, recipe, task, default_output_dir=f"runs/{Path(recipe_path).stem}")
    if args is not None:
        attempt(check_resume, args)
    generation = attempt(check_generation, recipe)
    if problems:  # two checks may meet the same problem (an unknown model_type): report it once
        raise locate_problems(RecipeError(list(dict.fromkeys(problems))), recipe_path, overrides)
    return CheckedRun(recipe, task, args, generation)


def finetune(recipe_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunResult:
    """Train the model a recipe describes and save it; return the run directory and final metrics."""
    from transformers import set_seed

    checked = check_run(recipe_path, overrides)
    recipe, task, args, generation_config = checked.recipe, checked.task, checked.args, checked.generation
    if args.world_size > 1 and args.max_steps > 0 and args.process_index == 0:
        logger.info(
            "training.max_steps=%d fixes the step count: with %d processes each step sees %d times the data "
            "(train by num_train_epochs for the step count to follow the process count)",
            args.max_steps, args.world_size, args.world_size,
        )
    # Seed before the model is built: the Trainer only seeds afterwards.
    set_seed(recipe.seed)
    # Rank 0 tokenizes first and fills the datasets cache; other ranks then read it.
    with args.main_process_first(desc="loading and tokenizing data"):
        splits = data_lib.load_splits(recipe.data, task.ROLES, seed=recipe.seed, optional_roles=task.OPTIONAL_ROLES)
        if hasattr(task, "build_model"):  # the model shape depends on the recipe (seq2seq tasks)
            tokenizer, model = task.build_model(recipe, splits)
        else:
            train_texts = splits["train"]["text"] if recipe.model.train_tokenizer is not None else None
            tokenizer = modeling.load_tokenizer(recipe.model, train_texts)
            model = modeling.load_model(task.auto_model(), recipe.model, tokenizer, **task.model_config(recipe, splits))
        for key, value in generation_config.items():
            setattr(model.generation_config, key, value)
        if recipe.peft is not None:
            model = modeling.apply_lora(model, recipe.peft, task.PEFT_TASK_TYPE)
        logger.info(modeling.describe(model))
        prepared = task.prepare(recipe, splits, tokenizer, model)
    trainer = build_trainer(task, recipe, args, model, tokenizer, prepared)
    train_output = trainer.train(resume_from_checkpoint=resume_point(args))

    metrics = dict(train_output.metrics)
    for split in ("validation", "test"):
        if split in prepared:
            prefix = "eval" if split == "validation" else "test"
            if hasattr(task, "evaluate"):  # scored on examples, not on the prepared features
                result = task.evaluate(trainer, recipe, splits[split], prepared[split], prefix)
            elif split == "validation" and (last := evaluation_of_final_weights(trainer)) is not None:
                result = last  # the Trainer just scored these weights on this split
            else:
                result = trainer.evaluate(prepared[split], metric_key_prefix=prefix)
            metrics.update(task.finish_metrics(result, prefix))
    if trainer.is_world_process_zero():
        save_run(trainer, recipe, args.output_dir, metrics)
    return RunResult(Path(args.output_dir), metrics)


def evaluation_of_final_weights(trainer) -> dict[str, float] | None:
    """The in-training evaluation of the validation split at the last step, if there was one.

    With ``eval_strategy: epoch`` (or steps that divide the total) the Trainer has already scored
    the final weights; evaluating again would repeat the work (for seq2seq, all the generation).
    Not when ``load_best_model_at_end`` swapped in other weights after that evaluation.
    """
    if trainer.args.load_best_model_at_end:
        return None
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry:
            if entry.get("step") != trainer.state.global_step:
                return None
            return {key: value for key, value in entry.items() if key != "step"}
    return None


def training_arguments(recipe: Recipe, task, *, default_output_dir: str):
    """TrainingArguments (Seq2SeqTrainingArguments for seq2seq tasks) from the recipe's `training`.

    hftk's defaults, each overridable in the recipe: output_dir runs/<recipe name>, no experiment
    trackers, evaluation every epoch when there is validation data, and ``use_cpu`` on machines
    without CUDA (the Trainer only engages CPU DDP under torchrun with it).
    """
    import torch
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    has_validation = recipe.data.validation is not None or recipe.data.validation_split is not None
    training = dict(recipe.training)
    training.setdefault("output_dir", default_output_dir)
    training.setdefault("report_to", "none")
    training["seed"] = recipe.seed  # one seed for the whole run (training.seed is rejected)
    training.setdefault("eval_strategy", "epoch" if has_validation else "no")
    for key, value in getattr(task, "TRAINING_DEFAULTS", {}).items():
        training.setdefault(key, value)
    if not torch.cuda.is_available():
        training.setdefault("use_cpu", True)
    if training["eval_strategy"] != "no" and not has_validation:
        raise RecipeError(
            [f"training.eval_strategy: '{training['eval_strategy']}' needs validation data; "
             "set data.validation or data.validation_split, or eval_strategy: 'no'"]
        )
    training.update(precision_flags(recipe, training))
    cls = Seq2SeqTrainingArguments if task.TRAINER == "Seq2SeqTrainer" else TrainingArguments
    try:
        return cls(**training)
    except (ValueError, TypeError) as error:
        raise RecipeError([f"training: {error}"]) from None
    except ImportError as error:  # a setting whose package is missing
        if "deepspeed" in training:
            raise RecipeError(["training.deepspeed: needs the deepspeed package: pip install deepspeed "
                               "(on a machine with CUDA), or remove the key"]) from None
        raise RecipeError([f"training: a setting needs a package that is not installed: {error}"]) from None


def check_resume(args) -> None:
    """``training.resume_from_checkpoint``: a checkpoint directory, or true for the newest complete one in output_dir."""
    resume = args.resume_from_checkpoint
    if resume is True:
        if latest_checkpoint(args.output_dir) is None:
            raise RecipeError([f"training.resume_from_checkpoint: no complete checkpoint-* directory in {args.output_dir} "
                               "to resume from; train with save_strategy 'steps' or 'epoch' first, or give a checkpoint path"])
    elif resume and not (Path(resume) / TRAINER_STATE).is_file():
        what = "has no trainer_state.json (a save cut short?)" if Path(resume).is_dir() else "not found"
        raise RecipeError([f"training.resume_from_checkpoint: checkpoint directory {what}: '{resume}' "
                           f"(looked at {Path(resume).absolute()})"])


def resume_point(args) -> str | None:
    """The checkpoint ``training.resume_from_checkpoint`` names (true: the newest complete one), or None."""
    resume = latest_checkpoint(args.output_dir) if args.resume_from_checkpoint is True else args.resume_from_checkpoint
    if resume:
        logger.info("resuming from %s", resume)
    return resume or None


def latest_checkpoint(output_dir: str) -> str | None:
    """The highest-numbered checkpoint-N in `output_dir` that was saved completely.

    The Trainer's own choice (the highest number) may be a save that a kill cut short: it has no
    trainer_state.json, which the Trainer writes last, and resuming from it crashes.
    """
    steps = []
    for path in Path(output_dir).glob("checkpoint-*") if Path(output_dir).is_dir() else []:
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / TRAINER_STATE).is_file():
            steps.append((int(suffix), path))
    return str(max(steps)[1]) if steps else None


def precision_flags(recipe: Recipe, training: dict[str, Any]) -> dict[str, bool]:
    """TrainingArguments bf16/fp16 for the recipe's `precision` (None: leave training as written).

    ``auto``: bf16 on CUDA GPUs that support it, fp16 on older CUDA GPUs, bf16 autocast on CPUs
    with native bf16 (AVX512-BF16 or AMX), fp32 elsewhere.
    """
    if recipe.precision is None:
        return {}
    if "bf16" in training or "fp16" in training:
        raise RecipeError(["precision: set either precision or training.bf16/training.fp16, not both"])
    choice = resolve_precision(recipe.precision)
    return {"bf16": choice == "bf16", "fp16": choice == "fp16"}


def resolve_precision(precision: str) -> str:
    """'fp32', 'bf16' or 'fp16' for a recipe's `precision` on this machine."""
    import torch

    if precision != "auto":
        if precision == "fp16" and not torch.cuda.is_available():
            raise RecipeError(["precision: fp16 needs a CUDA GPU; use bf16 or fp32 on CPU"])
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


def check_generation(recipe: Recipe) -> dict[str, Any]:
    """The recipe's generation settings, checked by transformers' GenerationConfig."""
    from transformers import GenerationConfig

    settings = recipe.generation.model_dump(exclude_none=True)
    try:
        GenerationConfig(**settings).validate(strict=True)
    except ValueError as error:
        raise RecipeError([f"generation: {error}"]) from None
    return settings


def build_trainer(task, recipe: Recipe, args, model, tokenizer, prepared):
    """The task's Trainer class with the prepared splits and the task's collator and metrics."""
    import transformers

    trainer_class = task.trainer_class() if hasattr(task, "trainer_class") else getattr(transformers, task.TRAINER)
    return trainer_class(
        model=model,
        args=args,
        train_dataset=prepared["train"],
        eval_dataset=prepared["validation"] if "validation" in prepared else None,
        processing_class=tokenizer,
        **task.trainer_kwargs(recipe, tokenizer, model),
    )


def save_run(trainer, recipe: Recipe, output_dir: str, metrics: dict[str, float]) -> None:
    """Model, tokenizer and generation config, plus the resolved recipe, metrics and a model card."""
    out = Path(output_dir)
    trainer.save_model(str(out))
    if hasattr(trainer.model, "peft_config"):  # LoRA: keep the fine-tuned (generation) config too
        modeling.save_adapter_model_config(trainer.model, out)
    trainer.save_state()
    (out / RECIPE_FILE).write_text(yaml.safe_dump(recipe.dump(), sort_keys=False), encoding="utf-8")
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(model_card(recipe, metrics), encoding="utf-8")
    logger.info("saved the run to %s", out)


def model_card(recipe: Recipe, metrics: dict[str, float]) -> str:
    if recipe.model.is_pair:
        base = f"{base_model_name(recipe.model.encoder)} + {base_model_name(recipe.model.decoder)} (EncoderDecoderModel)"
    else:
        base = base_model_name(recipe.model)
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in metrics.items() if isinstance(v, (int, float)))
    return (
        f"# {recipe.task} fine-tune of {base}\n\n"
        "Trained with hf_toolkit (`hftk finetune`); the resolved recipe is "
        f"`{RECIPE_FILE}`.\n\n"
        f"```python\nfrom transformers import {task_auto_class_name(recipe)}, AutoTokenizer\n"
        f"model = {task_auto_class_name(recipe)}.from_pretrained(\"<this dir>\")\n```\n\n"
        f"| metric | value |\n|---|---|\n{rows}\n"
    )


def base_model_name(section) -> str:
    """'gpt2', or 'gpt2 (from scratch)' for a model built from a config."""
    return section.name_or_path or f"{section.config['model_type']} (from scratch)"


def task_auto_class_name(recipe: Recipe) -> str:
    task = get_task(recipe.task)
    # A task whose model shape depends on the recipe (it has build_model) names that shape's class.
    return (task.auto_model(recipe) if hasattr(task, "build_model") else task.auto_model()).__name__
