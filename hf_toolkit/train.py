"""``hftk finetune``: recipe -> data -> tokenizer and model -> Trainer -> saved run directory.

:func:`finetune` reads top to bottom. Everything a user can get wrong (the recipe, the training
arguments, the generation settings) is checked first (:func:`hf_toolkit.checks.check_run`),
before any data or model is loaded. The run directory it writes is described in
:mod:`hf_toolkit.rundir`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_toolkit import data as data_lib
from hf_toolkit import modeling, rundir
from hf_toolkit.checkpoints import resume_point
from hf_toolkit.checks import check_run
from hf_toolkit.recipe.schema import Recipe
from hf_toolkit.tasks.base import Task

logger = logging.getLogger("hftk")


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict[str, float]


def finetune(recipe_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunResult:
    """Train the model a recipe describes and save it; return the run directory and final metrics."""
    from transformers import set_seed

    checked = check_run(recipe_path, overrides)
    recipe, task, args = checked.recipe, checked.task, checked.args
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
        splits = data_lib.load_splits(recipe.data, task.roles, seed=recipe.seed, optional_roles=task.optional_roles,
                                      read_rows=task.read_rows)
        tokenizer, model = task.build_model(recipe, splits)
        for key, value in checked.generation.items():
            setattr(model.generation_config, key, value)
        if recipe.peft is not None:
            model = modeling.apply_lora(model, recipe.peft, task.peft_task_type)
        if args.process_index == 0:
            logger.info(modeling.describe(model))
        prepared = task.prepare(recipe, splits, tokenizer, model)
    trainer = build_trainer(task, recipe, args, model, tokenizer, prepared)
    train_output = trainer.train(resume_from_checkpoint=resume_point(args))

    metrics = dict(train_output.metrics)
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split in prepared:
            metrics.update(task.evaluate(trainer, recipe, splits[split], prepared[split], prefix))
    save_run(trainer, task, recipe, args.output_dir, metrics)
    return RunResult(Path(args.output_dir), metrics)


def build_trainer(task: Task, recipe: Recipe, args, model, tokenizer, prepared):
    """The task's Trainer class with the prepared splits and the task's collator and metrics."""
    kwargs = task.trainer_kwargs(recipe, tokenizer, model)
    writer = task.target_tokenizer(recipe, tokenizer)
    if writer is not tokenizer:
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), _target_tokenizer_saver(writer)]
    return task.trainer_class()(
        model=model,
        args=args,
        train_dataset=prepared["train"],
        eval_dataset=prepared["validation"] if "validation" in prepared else None,
        processing_class=tokenizer,
        **kwargs,
    )


def _target_tokenizer_saver(tokenizer):
    """Saves a second (decoder) tokenizer next to every checkpoint and into the run directory."""
    from transformers import TrainerCallback

    class SaveTargetTokenizer(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                tokenizer.save_pretrained(Path(args.output_dir) / f"checkpoint-{state.global_step}" / rundir.DECODER_TOKENIZER_DIR)

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                tokenizer.save_pretrained(Path(args.output_dir) / rundir.DECODER_TOKENIZER_DIR)

    return SaveTargetTokenizer()


def save_run(trainer, task: Task, recipe: Recipe, output_dir: str, metrics: dict[str, Any]) -> None:
    """Model, tokenizer and generation config, plus the resolved recipe, metrics and a model card.

    Every rank calls ``save_model`` (under FSDP or DeepSpeed ZeRO-3 it gathers the full weights
    collectively; the Trainer writes on the main process only); hftk's own files are written by rank 0.
    """
    trainer.save_model(output_dir)
    trainer.save_state()
    if not trainer.is_world_process_zero():
        return
    if hasattr(trainer.model, "peft_config"):  # LoRA: keep the fine-tuned (generation) config too
        rundir.save_adapter_model_config(trainer.model, output_dir)
    rundir.write_run_files(output_dir, recipe, metrics, task.auto_model(recipe).__name__)
    logger.info("saved the run to %s", output_dir)
