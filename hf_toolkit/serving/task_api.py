"""The JSON endpoints of the heads that predict: ``/v1/classify``, ``/v1/answer``, ``/v1/fill-mask``.

Each takes one input or a list (a batch) and answers ``{"object": "list", "model", "data": [...]}``
where ``data`` holds one record per input exactly as ``hftk predict --json`` prints them (the
task's ``predict_records``; see :mod:`hf_toolkit.apply.prediction` for the record of each task). A run
answers only its own task's endpoint; the others say which one it serves (404).
"""

from __future__ import annotations

from typing import Any

from hf_toolkit.serving.engine import PREDICT_ENDPOINTS, Engine
from hf_toolkit.serving.errors import ApiError
from hf_toolkit.serving.limits import Limits, check
from hf_toolkit.serving.schemas import (
    AnswerRequest,
    ClassifyRequest,
    FillMaskRequest,
    as_list,
)


def same_count(rows: dict[str, list[str]], first: str) -> None:
    counts = {role: len(values) for role, values in rows.items()}
    if not counts[first]:
        raise ApiError(400, f"{first}: give at least one", param=first)
    if len(set(counts.values())) > 1:
        shown = " but ".join(f"{count} {role}" for role, count in counts.items())
        raise ApiError(400, f"{shown}: give one of each per input", param=first)


def classify_rows(request: ClassifyRequest) -> dict[str, list[str]]:
    rows = {"text": as_list(request.text)}
    if request.text_pair is not None:
        rows["text_pair"] = as_list(request.text_pair)
    same_count(rows, "text")
    return rows


def answer_rows(request: AnswerRequest) -> dict[str, list[str]]:
    rows = {"question": as_list(request.question), "context": as_list(request.context)}
    if len(rows["context"]) == 1 and len(rows["question"]) > 1:
        rows["context"] = rows["context"] * len(rows["question"])  # one context for all questions, as hftk predict
    same_count(rows, "question")
    return rows


def fill_mask_rows(request: FillMaskRequest) -> dict[str, list[str]]:
    rows = {"text": as_list(request.text)}
    same_count(rows, "text")
    return rows


ROUTES = {
    "text-classification": (ClassifyRequest, classify_rows),
    "question-answering": (AnswerRequest, answer_rows),
    "masked-lm": (FillMaskRequest, fill_mask_rows),
}


def add_routes(app: Any, engine: Engine, limits: Limits) -> None:
    for task, (schema, rows_of) in ROUTES.items():
        _add_route(app, engine, limits, PREDICT_ENDPOINTS[task], schema, rows_of)


def _add_route(app: Any, engine: Engine, limits: Limits, path: str, schema: type, rows_of) -> None:
    async def predict(request: schema) -> dict:  # type: ignore[valid-type]
        engine.require(path)
        engine.check_model(request.model)
        rows = rows_of(request)
        first = next(iter(rows))
        check(first, len(rows[first]), limits.max_batch, "max_batch", what=f"{len(rows[first])} inputs")
        top_k = getattr(request, "top_k", 5)
        check("top_k", top_k, limits.top_k)
        records = await engine.queue_prediction(rows, top_k)
        return {"object": "list", "model": engine.name, "data": records}

    predict.__annotations__ = {"request": schema, "return": dict}  # a real class, not the string of a local name
    predict.__name__ = path.rsplit("/", 1)[-1].replace("-", "_")
    app.post(path)(predict)
