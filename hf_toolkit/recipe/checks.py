"""Recipe checks, in two passes, for a recipe of any task; every problem located and reported at once.

Pass one, the shape (:func:`validate_recipe`, no I/O): the ``--set`` overrides applied, the task
chosen from :data:`hf_toolkit.tasks.TASKS`, the recipe validated with that task's ``data`` options
(:func:`hf_toolkit.recipe.schema.recipe_model`) and the task's own rules across keys
(``Task.check_recipe``). A recipe saved in a run directory is read back through this pass too.

Pass two, the environment, before any data or weights load: files and local paths exist and
hub ids resolve (:func:`load_recipe`), and the generation settings (:func:`check_generation`).
What a training run needs beyond that (the model config, TrainingArguments, the output directory,
the checkpoint to resume from) is :func:`hf_toolkit.training.preflight.check_run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hf_toolkit.errors import Problem, RecipeError
from hf_toolkit.recipe import environment
from hf_toolkit.recipe.problems import Locator, from_validation_error
from hf_toolkit.recipe.schema import (
    SWEEP_OWNED_KEYS,
    DataSection,
    DataSource,
    ModelSection,
    Recipe,
    recipe_model,
)
from hf_toolkit.recipe.yamlio import apply_override, parse_yaml
from hf_toolkit.tasks import TASKS


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
        problems += sweep_problems(recipe)
    problems += sweep_key_problems(data)
    return (recipe if task is not None else None), problems


def sweep_problems(recipe: Recipe) -> list[Problem]:
    """The ``sweep`` section's rules that need the rest of the recipe (each space value is checked
    against the recipe itself, like ``--set``, by :func:`hf_toolkit.training.preflight.check_sweep`)."""
    sweep = recipe.sweep
    if sweep is None:
        return []
    problems = []
    if sweep.metric.startswith("eval_") and not recipe.data.has_validation:
        problems.append(Problem(("sweep", "metric"), f"{sweep.metric} is measured on validation data, which the recipe has "
                                "none of; set data.validation or data.validation_split, or optimize a test_ metric"))
    if sweep.pruner is not None and not sweep.metric.startswith("eval_"):
        problems.append(Problem(("sweep", "pruner"), f"the pruner judges the metric at each evaluation during training, "
                                f"but {sweep.metric} is not an evaluation metric (eval_...); optimize one or drop the pruner"))
    if sweep.pruner is not None and recipe.training.get("eval_strategy") == "no":
        problems.append(Problem(("sweep", "pruner"), "the pruner needs evaluations during training, but "
                                "training.eval_strategy is 'no'; set it to epoch or steps (with eval_steps)"))
    return problems


def sweep_key_problems(data: dict[str, Any]) -> list[Problem]:
    """Keys of ``sweep.space`` that no trial may set, found in the raw recipe (so they are reported
    with the section's other problems)."""
    sweep = data.get("sweep")
    space = sweep.get("space") if isinstance(sweep, dict) else None
    problems = []
    for key in space if isinstance(space, dict) else []:
        owned = next((k for k in SWEEP_OWNED_KEYS if str(key) == k or str(key).startswith(k + ".")), None)
        if owned:
            problems.append(Problem(("sweep", "space", str(key)), f"the sweep sets {owned} itself (a trial's output_dir "
                                    "is OUTPUT/trial-NNN); remove it from the space"))
        elif not all(str(key).split(".")):
            problems.append(Problem(("sweep", "space", str(key)), "not a dotted recipe key path like training.learning_rate"))
    return problems


def recipe_problems(data: Any, locator: Locator, overrides: Sequence[str]) -> tuple[Recipe | None, list[Problem], list[Problem]]:
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
    recipe, missing, problems = recipe_problems(data, locator, overrides)
    if missing or problems:
        raise locator.error(missing + problems)
    assert recipe is not None
    return recipe


def check_generation(recipe: Recipe) -> dict[str, Any]:
    """The recipe's generation settings, checked by transformers' GenerationConfig."""
    from transformers import GenerationConfig

    settings = recipe.generation.given()
    try:
        GenerationConfig(**settings).validate(strict=True)
    except ValueError as error:
        raise RecipeError([Problem(("generation",), str(error))]) from None
    return settings
