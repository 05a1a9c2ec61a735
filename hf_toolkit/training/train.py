"""``hftk finetune``: recipe -> data -> tokenizer and model -> Trainer -> saved run directory.

:func:`finetune` reads top to bottom. Everything a user can get wrong (the recipe, the training
arguments, the generation settings) is checked first (:func:`hf_toolkit.training.preflight.check_run`),
before any data or model is loaded. The run directory it writes is described in
:mod:`hf_toolkit.core.rundir`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_toolkit import compat
from hf_toolkit.core import console, modeling, rundir
from hf_toolkit.core import data as data_lib
from hf_toolkit.recipe.schema import Recipe
from hf_toolkit.tasks.base import Task
from hf_toolkit.training import arguments as training_args
from hf_toolkit.training import (
    allocator,
    callbacks,
    distillation,
    plot,
    prepcache,
    pruning,
    resumption,
    runlock,
    stopping,
    throughput,
)
from hf_toolkit.training.checkpoints import resume_point
from hf_toolkit.training.preflight import CheckedRun, check_run

logger = logging.getLogger("hftk")


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict[str, float]


def finetune(recipe_path: str | Path, overrides: list[str] | tuple[str, ...] = (), dry_run: bool = False, *,
             resume: bool = False, overwrite: bool = False) -> RunResult:
    """Train the model a recipe describes and save it; return the run directory and final metrics.

    ``dry_run``: stop once the Trainer is built and return its plan (:mod:`hf_toolkit.training.plan`) instead.
    ``resume`` (``--resume``): continue from the newest complete checkpoint; ``overwrite``
    (``--overwrite``): replace the run the output directory holds. The output directory is locked
    while the run writes it (:mod:`hf_toolkit.training.runlock`).
    """
    import time

    started = time.perf_counter()

    checked = check_run(recipe_path, overrides, resume=resume, overwrite=overwrite, dry_run=dry_run)
    if dry_run:
        return _train(checked, recipe_path, started, dry_run=True)
    with runlock.hold(checked.args.output_dir, main=checked.args.process_index == 0, overwrite=overwrite):
        return _train(checked, recipe_path, started)


def _train(checked: CheckedRun, recipe_path: str | Path, started: float, dry_run: bool = False) -> RunResult:
    """Everything after the checks: data, model, Trainer, training, the saved run."""
    from transformers import set_seed

    recipe, task, args = checked.recipe, checked.task, checked.args
    if args.process_index == 0:
        for warning in checked.warnings:
            logger.warning("warning: %s", warning)
        if recipe.sweep is not None:
            logger.info("the recipe's sweep section is for hftk sweep; hftk finetune trains the recipe's own values")
        for note in checked.notes:
            logger.info("resuming with a harmless change since the checkpoint: %s", note)
    if args.world_size > 1 and args.max_steps > 0 and args.process_index == 0:
        logger.info(
            "training.max_steps=%d fixes the step count: with %d processes each step sees %d times the data "
            "(train by num_train_epochs for the step count to follow the process count)",
            args.max_steps, args.world_size, args.world_size,
        )
    # Seed before the model is built: the Trainer only seeds afterwards.
    set_seed(recipe.seed)
    # Each node's main process loads and tokenizes first and fills the preprocessing cache
    # (hf_toolkit.training.prepcache) and the datasets cache; the other processes then read them.
    with args.main_process_first(desc="loading and tokenizing data"):
        cache = prepcache.open_cache(recipe, task, main=args.local_process_index == 0, dry_run=dry_run)
        splits = cache.splits(lambda: data_lib.load_splits(
            recipe.data, task.roles, seed=recipe.seed, optional_roles=task.optional_roles, read_rows=task.read_rows,
            text_roles=task.text_roles, nonempty_roles=task.nonempty_roles))
        if recipe.distillation is not None:  # labels read from data.train: checked before any weights load
            distillation.check_labels(recipe, task.model_config(recipe, splits))
        tokenizer, model = task.build_model(recipe, splits)
        for key, value in checked.generation.items():
            setattr(model.generation_config, key, value)
        if recipe.peft is not None:
            model = modeling.apply_lora(model, recipe.peft, task.peft_task_type)
        if args.process_index == 0:
            logger.info(modeling.describe(model))
            for line in training_args.describe_compute(training_args.precision_setting(recipe), args, model):
                logger.info(line)
        prepared = cache.prepared(lambda: task.prepare(recipe, splits, tokenizer, model), tokenizer, model)
        if args.process_index == 0:
            logger.info(cache.summary())
            unknown = modeling.unknown_token_warning(tokenizer, _input_texts(task, splits["train"]))
            if unknown:
                logger.warning("warning: %s", unknown)
        teacher = distillation.load_teacher(recipe, args.device) if recipe.distillation is not None else None
        if teacher is not None and args.process_index == 0:
            for line in distillation.describe(recipe, teacher):
                logger.info(line)
    output_dir_existed = Path(args.output_dir).exists()
    trainer = build_trainer(task, recipe, args, model, tokenizer, prepared, teacher)
    if dry_run:
        from hf_toolkit.training import plan

        return plan.make_plan(checked, splits, tokenizer, model, prepared, trainer, recipe_path=recipe_path,
                              started=started, created_output_dir=not output_dir_existed)
    resume = resume_point(args)
    progress = resumption.progress_since(resume)
    guard = callbacks.StopGuard()
    trainer.add_callback(guard)  # before the recipe saver, which then sees the save a stop asks for
    trainer.add_callback(callbacks.SaveRecipe(recipe, progress))
    trainer.add_callback(callbacks.TrimKeptMemory(allocator.keeps_freed_memory(training_args.on_gpu(args))))
    trial = pruning.spec_from_env()
    if trial is not None:  # a trial of hftk sweep: last, so it ends train() last
        trainer.add_callback(callbacks.ReportAndPrune(trial))
    with console.tied_weights_unmentioned(trainer.model):
        train_output = trainer.train(resume_from_checkpoint=resume)
    stopping.raise_if_stopped(guard, args.output_dir, recipe_path)

    metrics = dict(train_output.metrics)
    metrics.update(resumption.whole_run_metrics(metrics, trainer.state.log_history, trainer.state.global_step, progress))
    speed, line = throughput.report(trainer, prepared["train"], metrics)
    metrics.update(speed)
    if args.process_index == 0:
        logger.info(line)
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split in prepared:
            metrics.update(task.evaluate(trainer, recipe, splits[split], prepared[split], prefix))
    save_run(trainer, task, recipe, args.output_dir, metrics, splits=splits, progress=progress)
    return RunResult(Path(args.output_dir), metrics)


def _input_texts(task: Task, examples) -> list[str]:
    """The first input role's texts of up to 1,000 examples (what the tokenizer reads first)."""
    required, optional = task.input_roles
    role = next((r for r in (*required, *optional) if r in examples.column_names), None)
    return [] if role is None else list(examples.select(range(min(modeling.UNKNOWN_SAMPLE, len(examples))))[role])


def build_trainer(task: Task, recipe: Recipe, args, model, tokenizer, prepared, teacher=None):
    """The task's Trainer class with the prepared splits and the task's collator and metrics (and
    with a `teacher`, the distillation loss: :mod:`hf_toolkit.training.distillation`)."""
    kwargs = task.trainer_kwargs(recipe, tokenizer, model)
    writer = task.target_tokenizer(recipe, tokenizer)
    if writer is not tokenizer:
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), callbacks.SaveTargetTokenizer(writer)]
    trainer_class = task.trainer_class()
    if teacher is not None:
        from hf_toolkit.training import distillation_trainers

        trainer_class = distillation_trainers.trainer_class(trainer_class)
        kwargs.update(teacher_model=teacher, distilled_task=task, distillation=recipe.distillation)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=prepared["train"],
        eval_dataset=prepared["validation"] if "validation" in prepared else None,
        processing_class=tokenizer,
        **kwargs,
    )
    pass_loss_kwargs_only_to_losses_that_read_them(trainer)
    return trainer


def pass_loss_kwargs_only_to_losses_that_read_them(trainer) -> None:
    """Turn off the Trainer's ``num_items_in_batch`` loss normalization for models whose loss ignores it.

    Why: the Trainer sets ``model_accepts_loss_kwargs`` for any model whose ``forward`` takes
    ``**kwargs`` (nearly all in transformers 5). It then passes ``num_items_in_batch`` (the label
    count of the whole step, summed over all processes when ``average_tokens_across_devices``, the
    default) and, trusting the model to divide its summed loss by that global count, multiplies
    the loss by the number of processes (so that DDP's gradient mean gives the global token mean)
    and skips the division by gradient-accumulation steps. Heads that compute a plain batch mean
    with ``nn.CrossEntropyLoss`` / ``MSELoss`` (BERT and GPT-2 classification, BERT masked-LM, T5,
    BART, EncoderDecoderModel) ignore the count: under N processes their loss and gradients come
    out N times too large (and G times with G accumulation steps). (QA heads too, but their
    batches have no ``labels``, so the Trainer counts nothing and scales nothing.)

    How it decides, from the model: transformers models that honour the count do so by handing
    their ``**kwargs`` (or ``num_items_in_batch=``) to ``self.loss_function`` (the LOSS_MAPPING
    losses, which sum and divide by it), e.g. GPT-2 / Llama causal LMs; so the model's ``forward``
    source is searched for such a call (:func:`hf_toolkit.compat.forward_hands_item_count_to_loss`). When in doubt (no source, no such call) the flag goes off:
    wrongly off only loses the exact token weighting across processes (each process averages its
    own tokens, as plain DDP does), wrongly on multiplies the gradients. A model that sets
    ``accepts_loss_kwargs`` itself, a label smoother or a ``compute_loss_func`` (losses the Trainer
    computes with the count) keep the Trainer's choice.
    """
    model = modeling.base_model(trainer.model)
    if not trainer.model_accepts_loss_kwargs or hasattr(model, "accepts_loss_kwargs"):
        return
    if trainer.label_smoother is not None or trainer.compute_loss_func is not None:
        return
    hands_count_to_loss = compat.forward_hands_item_count_to_loss(type(model))
    if not hands_count_to_loss:
        logger.debug("%s computes its own mean loss: the Trainer passes it no num_items_in_batch", type(model).__name__)
        trainer.model_accepts_loss_kwargs = False


def save_run(trainer, task: Task, recipe: Recipe, output_dir: str, metrics: dict[str, Any], splits=None,
             progress: resumption.Progress | None = None) -> None:
    """Model, tokenizer and generation config, plus the resolved recipe, metrics, loss curve and model card
    (with the story of the run: data hashes and rows of `splits`, versions, command line, hardware,
    and whether it was resumed, from `progress`).

    Every rank calls ``save_model`` (under FSDP or DeepSpeed ZeRO-3 it gathers the full weights
    collectively; the Trainer writes on the main process only); hftk's own files are written by rank 0.
    """
    trainer.save_model(output_dir)
    trainer.save_state()
    if not trainer.is_world_process_zero():
        return
    if modeling.is_peft(trainer.model):  # LoRA: keep the fine-tuned (generation) config too
        rundir.save_adapter_model_config(trainer.model, output_dir)
    from hf_toolkit.core import provenance

    rows = {name: split.num_rows for name, split in (splits or {}).items()}
    story = provenance.collect(recipe, rows, processes=trainer.args.world_size)
    log_history = trainer.state.log_history
    out = Path(output_dir)
    drawn = plot.loss_curve(log_history, out / rundir.LOSS_PLOT, title=f"{recipe.task}: {out.name}") if log_history else None
    resumed = resumption.card_line(progress) if progress is not None else None
    rundir.write_run_files(output_dir, recipe, metrics, task.auto_model(recipe).__name__, story, has_plot=drawn is not None,
                           notes=[resumed] if resumed else [])
