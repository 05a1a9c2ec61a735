"""Preflight of a training run: both recipe passes (:mod:`hf_toolkit.recipe.checks`) plus what
only a run needs, before any data or weights load: the task's checks against the model config,
the model config overrides (the model is built on the meta device, so a config that breaks the
model's own rules fails here), the ``training`` keys and types, TrainingArguments themselves, the
output directory and who holds it, the checkpoint to resume from, the generation settings, and a ``distillation`` section's teacher
(:mod:`hf_toolkit.training.distillation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_toolkit.core import modeling
from hf_toolkit.errors import Problem, RecipeError
from hf_toolkit.recipe import environment
from hf_toolkit.recipe.checks import check_generation, read_yaml, recipe_problems
from hf_toolkit.recipe.schema import Recipe
from hf_toolkit.tasks import TASKS, Task
from hf_toolkit.training import checkpoints, distillation, launch, runlock
from hf_toolkit.training.arguments import training_arguments


@dataclass
class CheckedRun:
    """A recipe that passed every check that needs no data or weights, with what those checks built."""

    recipe: Recipe
    task: Task
    args: Any  # TrainingArguments or Seq2SeqTrainingArguments
    generation: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # said before training: harmless changes since the checkpoint
    warnings: list[str] = field(default_factory=list)  # said before training: settings that act as written, maybe unexpectedly


def check_run(recipe_path: str | Path, overrides: Sequence[str] = (), *, resume: bool = False, overwrite: bool = False,
              dry_run: bool = False) -> CheckedRun:
    """Both passes for ``hftk finetune`` (and ``--check``): every problem at once, located in the recipe.

    ``resume`` (``--resume``) is ``training.resume_from_checkpoint: true``. Unless the run resumes,
    ``overwrite``s or only plans (``dry_run``), an output directory that holds a run is a problem;
    a resume from a checkpoint made with a recipe that differs in a way that matters is one too.
    """
    data, locator = read_yaml(recipe_path)
    recipe, missing, problems = recipe_problems(data, locator, overrides)
    if recipe is None or missing:  # the checks below need a whole recipe and the files and models it names
        raise locator.error(missing + problems)
    task = TASKS[recipe.task]
    if resume:
        recipe.training["resume_from_checkpoint"] = recipe.training.get("resume_from_checkpoint") or True
    notes: list[str] = []

    def attempt(check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return check(*args, **kwargs)
        except RecipeError as error:
            problems.extend(error.records)
            return None

    shape_problems = task.check_environment(recipe)
    problems += shape_problems
    problems += distillation.problems(recipe)
    if not shape_problems:  # the model is built (on the meta device) only from options that fit its shape
        problems += modeling.config_problems(recipe.model, task.auto_model(recipe))
    args = None
    if not any(p.key[:1] == ("training",) for p in problems):
        args = attempt(training_arguments, recipe, task, default_output_dir=f"runs/{Path(recipe_path).stem}")
    if args is not None:
        problems += environment.strategy_problems(recipe.training, args)
        problems += environment.output_dir_problems(args.output_dir)
        problems += _occupancy_problems(args, overwrite=overwrite, dry_run=dry_run)
        resume_problems = checkpoints.resume_problems(args)
        problems += resume_problems
        if args.resume_from_checkpoint and not resume_problems and not overwrite:
            changed, notes = checkpoints.resume_changes(recipe, checkpoints.resume_target(args))
            problems += changed
    generation = attempt(check_generation, recipe)
    if problems:
        raise locator.error(problems)
    warnings = [str(locator.locate(w)) for w in environment.training_warnings(recipe.training)]
    return CheckedRun(recipe, task, args, generation, notes, warnings)


def _occupancy_problems(args: Any, *, overwrite: bool, dry_run: bool) -> list[Problem]:
    """An output directory whose files this run would replace or delete although it may not: a run
    it would silently overwrite, files that are no hftk run, or (unless empty) the working
    directory, the home directory or a filesystem root. (A dry run writes nothing.)

    Only the main process (rank 0, or a single process) judges the folder: it is the one that
    claims it (:func:`hf_toolkit.training.runlock.hold` writes the lock and the manifest), and it
    may do so while another rank is still checking, which would then find rank 0's fresh files
    and refuse them as no hftk run. Under ``--nproc`` the launcher judged the folder before it
    started any rank; under another launcher rank 0's refusal stops the launch."""
    key, out = ("training", "output_dir"), Path(args.output_dir)
    if args.resume_from_checkpoint and overwrite:
        return [Problem(("training", "resume_from_checkpoint"),
                        "--overwrite deletes the checkpoints a resume continues from; use --resume or --overwrite, not both")]
    if dry_run or not out.is_dir() or not launch.is_main_process():
        return []
    found = runlock.existing_run(out)
    foreign = runlock.foreign_entries(out)
    shared = _shared_directory(out)
    if shared and any(out.iterdir()) and not args.resume_from_checkpoint:
        return [Problem(key, f"'{args.output_dir}' is {shared}, which holds {runlock.names(sorted(out.iterdir()))}; "
                             "hftk writes a run only into an empty one of these: choose a folder of its own, "
                             "e.g. training.output_dir=runs/NAME")]
    if found is None and foreign:
        replaced = runlock.would_replace(foreign)
        effect = (f"a run would replace {', '.join(replaced)}" if replaced
                  else "a run would mix its model, tokenizer and card (README.md) with them")
        return [Problem(key, f"'{args.output_dir}' holds files that are no hftk run ({runlock.names(foreign)}); {effect}. "
                             "Choose a new or empty training.output_dir, or move these files away "
                             "(--overwrite replaces only a run hftk wrote)")]
    if found is None or args.resume_from_checkpoint or overwrite:
        return []
    return [Problem(key, f"'{args.output_dir}' already holds {found}; continue it with --resume, replace it with --overwrite, "
                         "or choose another training.output_dir")]


def _shared_directory(path: Path) -> str | None:
    """'the current directory' / 'your home directory' / 'a filesystem root' when `path` is one."""
    resolved = path.resolve()
    if resolved == Path.cwd().resolve():
        return "the current directory"
    if resolved == Path.home().resolve():
        return "your home directory"
    if resolved == Path(resolved.anchor):
        return "a filesystem root"
    return None


def check_sweep(recipe_path: str | Path, overrides: Sequence[str] = ()) -> CheckedRun:
    """``hftk sweep``'s preflight: the recipe as :func:`check_run` checks it (the output directory
    is the sweep's to judge), then every value a trial can take at its edges (each choice, and each
    range's low and high) applied to the recipe as ``--set`` would be and checked the same way, every
    problem reported at the space entry's line. Values are checked one key at a time, others at the
    recipe's own values."""
    import json

    checked = check_run(recipe_path, overrides, dry_run=True)
    _, locator = read_yaml(recipe_path)
    locator_overrides(locator, overrides)
    sweep = checked.recipe.sweep
    if sweep is None:
        raise RecipeError([f"{recipe_path}: no sweep section; add one (metric, direction, trials, space: see README, "
                           "'Hyperparameter search')"], str(recipe_path))
    problems: list[Problem] = []
    for key, spec in sweep.space.items():
        edges = [("choice", v) for v in spec] if isinstance(spec, list) else [("low", spec.low), ("high", spec.high)]
        found: dict[str, list[str]] = {}  # message -> the edges that have it (a misspelt key: all of them)
        for edge, value in edges:
            try:
                check_run(recipe_path, [*overrides, f"{key}={json.dumps(value)}"], dry_run=True)
            except RecipeError as error:
                for record in error.records:
                    found.setdefault(_without_place(record, key), []).append(f"{edge} {value!r}")
        problems += [Problem(("sweep", "space", key), f"{', '.join(where)}: {message}") for message, where in found.items()]
    if problems:
        raise locator.error(problems)
    return checked


def locator_overrides(locator: Any, overrides: Sequence[str]) -> None:
    """Mark the key paths `overrides` set, so problems at them name the ``--set`` that wrote them."""
    from hf_toolkit.recipe.yamlio import apply_override

    for assignment in overrides:
        locator.overridden[apply_override({}, assignment)] = assignment


def _without_place(record: Problem, key: str) -> str:
    """A probe's problem as text without its place (the space entry is the place), and without the key when it is `key`."""
    if ".".join(record.key) == key or not record.key:
        return record.message
    return f"{'.'.join(record.key)}: {record.message}"
