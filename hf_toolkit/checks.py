"""Recipe checks, in two passes, for a recipe of any task; every problem located and reported at once.

Pass one, the shape (:func:`validate_recipe`, no I/O): the ``--set`` overrides applied, the task
chosen from :data:`hf_toolkit.tasks.TASKS`, the recipe validated with that task's ``data`` options
(:func:`hf_toolkit.recipe.schema.recipe_model`) and the task's own rules across keys
(``Task.check_recipe``). A recipe saved in a run directory is read back through this pass too.

Pass two, the environment, before any data or weights load: files and local paths exist and
hub ids resolve (:func:`load_recipe`); then, for a run (:func:`check_run`), what needs configs
or transformers: the task's checks against the model config, the model config overrides (the
model is built on the meta device, so a config that breaks the model's own rules fails here),
the ``training`` keys and types, TrainingArguments themselves, the output directory, the
checkpoint to resume from, and the generation settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hf_toolkit import checkpoints, modeling, runlock
from hf_toolkit.errors import Problem, RecipeError
from hf_toolkit.recipe import environment
from hf_toolkit.recipe.problems import Locator, from_validation_error
from hf_toolkit.recipe.schema import DataSection, DataSource, ModelSection, Recipe, recipe_model
from hf_toolkit.recipe.yamlio import apply_override, parse_yaml
from hf_toolkit.tasks import TASKS, Task
from hf_toolkit.training_args import training_arguments


def read_yaml(path: str | Path) -> tuple[Any, Locator]:
    """A recipe file's data and where each key path is written in it."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError([f"{path} is a directory; give the path to one .yaml recipe in it, "
                           f"e.g. {path / 'quickstart.yaml'}"], str(path))
    if not path.is_file():
        raise RecipeError([f"recipe file not found: {path} (give the path to a .yaml recipe, e.g. recipes/quickstart.yaml)"], str(path))
    data, lines = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    return data, Locator(str(path), lines)


def validate_recipe(data: Any, locator: Locator | None = None, overrides: Sequence[str] = ()) -> Recipe:
    """Pass one: the overrides applied, then the shape checked with the recipe's task's data options."""
    locator = locator or Locator()
    recipe, problems = _shape(data, locator, overrides)
    if problems:
        raise locator.error(problems)
    return recipe


def _shape(data: Any, locator: Locator, overrides: Sequence[str]) -> tuple[Recipe | None, list[Problem]]:
    """Pass one: (the recipe, or None when its shape is wrong; every problem found)."""
    if not isinstance(data, dict):
        raise RecipeError([f"{locator.source}: a recipe is a YAML mapping with keys task, model, data, training"], locator.source)
    for assignment in overrides:
        locator.overridden[apply_override(data, assignment)] = assignment
    task = TASKS.get(data.get("task")) if isinstance(data.get("task"), str) else None
    problems: list[Problem] = []
    if task is None and "task" in data:
        names = [f"'{name}'" for name in TASKS]
        problems.append(Problem(("task",), f"Input should be {', '.join(names[:-1])} or {names[-1]} (got {data['task']!r})"))
    schema = recipe_model(task.Data if task is not None else DataSection)
    recipe = None
    try:
        recipe = schema.model_validate(data)
    except ValidationError as error:
        options = {key: [t.name for t in TASKS.values() if key in t.Data.model_fields]
                   for t in TASKS.values() for key in t.Data.model_fields}
        found = from_validation_error(error, schema, task=task.name if task else None, other_options=options)
        # Without a known task, its data options cannot be judged: the task problem says it all.
        problems += [p for p in found if task is not None or not (p.key[:1] == ("data",) and len(p.key) == 2)]
    if recipe is not None and task is not None:
        problems += task.check_recipe(recipe)
    return (recipe if task is not None else None), problems


def _recipe_problems(data: Any, locator: Locator, overrides: Sequence[str]) -> tuple[Recipe | None, list[Problem], list[Problem]]:
    """Pass one, and the parts of pass two that read only the recipe's own sections: (the recipe or
    None, problems with missing files, local paths and hub ids, every other problem). Sections are
    checked even when another is malformed, so one run reports them all."""
    recipe, problems = _shape(data, locator, overrides)
    sources, model = _valid_sections(recipe, data)
    missing = environment.file_problems(sources, model) + environment.hub_problems(model)
    problems += environment.attention_problems(model)
    if isinstance(data.get("training"), dict):
        problems += environment.training_problems(data["training"])
    return recipe, missing, problems


def _valid_sections(recipe: Recipe | None, data: dict[str, Any]) -> tuple[list[tuple[str, DataSource]], ModelSection | None]:
    """(data sources, model section) of the recipe; of the raw data, the ones that validate alone."""
    if recipe is not None:
        return recipe.data.sources(), recipe.model
    section = data.get("data") if isinstance(data.get("data"), dict) else {}
    sources = [(split, source) for split in ("train", "validation", "test") if (source := _valid(DataSource, section.get(split)))]
    return sources, _valid(ModelSection, data.get("model"))


def _valid(schema: type, value: Any) -> Any:
    try:
        return schema.model_validate(value) if value is not None else None
    except ValidationError:
        return None  # pass one has reported it


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe file: pass one, and pass two's checks of files, local paths, hub ids and training keys."""
    data, locator = read_yaml(path)
    recipe, missing, problems = _recipe_problems(data, locator, overrides)
    if missing or problems:
        raise locator.error(missing + problems)
    assert recipe is not None
    return recipe


@dataclass
class CheckedRun:
    """A recipe that passed every check that needs no data or weights, with what those checks built."""

    recipe: Recipe
    task: Task
    args: Any  # TrainingArguments or Seq2SeqTrainingArguments
    generation: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # said before training: harmless changes since the checkpoint


def check_run(recipe_path: str | Path, overrides: Sequence[str] = (), *, resume: bool = False, overwrite: bool = False,
              dry_run: bool = False) -> CheckedRun:
    """Both passes for ``hftk finetune`` (and ``--check``): every problem at once, located in the recipe.

    ``resume`` (``--resume``) is ``training.resume_from_checkpoint: true``. Unless the run resumes,
    ``overwrite``s or only plans (``dry_run``), an output directory that holds a run is a problem;
    a resume from a checkpoint made with a recipe that differs in a way that matters is one too.
    """
    data, locator = read_yaml(recipe_path)
    recipe, missing, problems = _recipe_problems(data, locator, overrides)
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
    return CheckedRun(recipe, task, args, generation, notes)


def _occupancy_problems(args: Any, *, overwrite: bool, dry_run: bool) -> list[Problem]:
    """An output directory holding a run that this one would silently overwrite."""
    if args.resume_from_checkpoint and overwrite:
        return [Problem(("training", "resume_from_checkpoint"),
                        "--overwrite deletes the checkpoints a resume continues from; use --resume or --overwrite, not both")]
    if args.resume_from_checkpoint or overwrite or dry_run:
        return []
    found = runlock.existing_run(args.output_dir)
    if found is None:
        return []
    return [Problem(("training", "output_dir"),
                    f"'{args.output_dir}' already holds {found}; continue it with --resume, replace it with --overwrite, "
                    "or choose another training.output_dir")]


def check_generation(recipe: Recipe) -> dict[str, Any]:
    """The recipe's generation settings, checked by transformers' GenerationConfig."""
    from transformers import GenerationConfig

    settings = recipe.generation.given()
    try:
        GenerationConfig(**settings).validate(strict=True)
    except ValueError as error:
        raise RecipeError([Problem(("generation",), str(error))]) from None
    return settings
