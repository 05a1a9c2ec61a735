"""The JSON endpoints of the tasks that predict (``/v1/classify``, ``/v1/answer``, ``/v1/fill-mask``, ...).

One route per task in :data:`hf_toolkit.tasks.TASKS` that predicts, at its ``endpoint``, taking its
``request`` body (fields named by input role, each one input or a list: a batch) plus the served
``model``'s id. Each answers ``{"object": "list", "model", "data": [...]}`` where ``data`` holds one
record per input exactly as ``hftk predict --json`` prints them (the task's ``predict_records``).
Inputs are cleaned and checked as ``hftk predict`` cleans and checks them (text cleaned as the run's
recipe cleaned its training text; one value of each role per input, or one
``shared_input`` for all; no empty ``nonempty_inputs``) before they queue for the model. A run
answers only its own task's endpoint; the others say which one it serves (404).

:func:`form` describes a task's body for ``GET /info`` (its input roles, then its options), from
which the playground page builds its form, so a new task needs no page edit.
"""

from __future__ import annotations

from typing import Any

from pydantic import create_model

from hf_toolkit.core.data import clean_inputs
from hf_toolkit.recipe.schema import DataSection
from hf_toolkit.serving.engine import Engine
from hf_toolkit.serving.errors import ApiError
from hf_toolkit.serving.limits import Limits, check
from hf_toolkit.serving.schemas import Request, as_list
from hf_toolkit.tasks import TASKS
from hf_toolkit.tasks.base import Task


def same_count(rows: dict[str, list[str]], first: str) -> None:
    counts = {role: len(values) for role, values in rows.items()}
    if not counts[first]:
        raise ApiError(400, f"{first}: give at least one", param=first)
    if len(set(counts.values())) > 1:
        shown = " but ".join(f"{count} {role}" for role, count in counts.items())
        raise ApiError(400, f"{shown}: give one of each per input", param=first)


def request_rows(task: Task, request: Any, data: DataSection | None = None) -> dict[str, list[str]]:
    """The request's inputs as rows of the task's input roles, cleaned as the run's recipe (`data`) cleaned
    its training text and checked, as hftk predict cleans and checks them."""
    required, optional = task.input_roles
    rows = {role: as_list(getattr(request, role)) for role in required + optional
            if getattr(request, role, None) is not None}
    rows = clean_inputs(task.share_inputs(rows), data, task.input_text_roles)
    same_count(rows, required[0])
    task.check_inputs(rows, lambda role, i: f"{role}[{i}]" if isinstance(getattr(request, role), list) else role)
    return rows


SCHEMA_KEYS = ("type", "default", "minimum", "maximum", "description")
"""What ``GET /info`` tells of an option of a task's body (from its JSON schema)."""


def form(task: Task) -> dict[str, list[dict[str, Any]]]:
    """`task`'s request body as a form: ``inputs``, its input roles in order, each with ``role``,
    ``required`` and ``description`` (the request field's); and ``options``, its other fields
    (``top_k``), each with ``name`` and its JSON schema's type, default, bounds and description."""
    properties = task.request.model_json_schema()["properties"]
    required, optional = task.input_roles
    inputs = [{"role": role, "required": role in required, "description": properties[role].get("description", "")}
              for role in required + optional]
    options = [{"name": name, **{key: value for key, value in field.items() if key in SCHEMA_KEYS}}
               for name, field in properties.items() if name not in required + optional]
    return {"inputs": inputs, "options": options}


def add_routes(app: Any, engine: Engine, limits: Limits) -> None:
    for task in TASKS.values():
        if task.predicts:
            _add_route(app, engine, limits, task)


def _add_route(app: Any, engine: Engine, limits: Limits, task: Task) -> None:
    path = task.endpoint
    # The task's body plus what every request takes (the served model's id; unknown fields refused).
    schema = create_model(task.request.__name__, __base__=(Request, task.request), __module__=task.request.__module__)

    async def predict(request: schema) -> dict:  # type: ignore[valid-type]
        engine.require(path)
        engine.check_model(request.model)
        rows = request_rows(task, request, engine.run.recipe.data if engine.run.recipe is not None else None)
        first = next(iter(rows))
        check(limits, first, len(rows[first]), "max_batch", what=f"{len(rows[first])} inputs")
        top_k = getattr(request, "top_k", 5)
        check(limits, "top_k", top_k)
        records = await engine.queue_prediction(rows, top_k)
        return {"object": "list", "model": engine.name, "data": records}

    predict.__annotations__ = {"request": schema, "return": dict}  # a real class, not the string of a local name
    predict.__name__ = path.rsplit("/", 1)[-1].replace("-", "_")
    app.post(path)(predict)
