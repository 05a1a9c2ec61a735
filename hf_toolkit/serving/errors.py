"""The server's error answers: one JSON shape (OpenAI's) for every 4xx/5xx, and no 500 for a user mistake.

Every error body is ``{"error": {"message", "type", "param", "code"}}``, the shape the ``openai``
client reads (its exceptions carry ``message``). :class:`ApiError` is raised by hftk's endpoints;
:func:`install` maps it, FastAPI's request validation errors (malformed JSON, wrong or unknown
fields: 400, naming the field), an hftk user mistake (:class:`~hf_toolkit.errors.HftkError`:
400) and unknown routes (404) onto that shape.
"""

from __future__ import annotations

from typing import Any

from hf_toolkit.errors import HftkError


class ApiError(Exception):
    """A request the server refuses: HTTP status, a message saying what and how to fix it, the field."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def body(message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def install(app: Any) -> None:
    """Register the handlers that give every error the one shape."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def _api_error(_request, error: ApiError):
        return JSONResponse(body(error.message, error.kind, error.param), status_code=error.status)

    @app.exception_handler(HftkError)
    async def _user_error(_request, error: HftkError):
        return JSONResponse(body(str(error)), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, error: RequestValidationError):
        problems = [describe(problem) for problem in error.errors()]
        first = error.errors()[0] if error.errors() else {}
        fields = [str(part) for part in first.get("loc", ())[1:]] if first.get("type") != "json_invalid" else []
        param = ".".join(fields) or None
        return JSONResponse(body("; ".join(problems), param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, error: StarletteHTTPException):
        message = error.detail if isinstance(error.detail, str) else str(error.detail)
        return JSONResponse(body(message, "not_found_error" if error.status_code == 404 else "invalid_request_error"),
                            status_code=error.status_code)


def describe(problem: dict[str, Any]) -> str:
    """One validation problem as a sentence naming the field: ``max_tokens: Input should be ...``."""
    where = [str(part) for part in problem.get("loc", ()) if part != "body"]
    if problem.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({problem.get('ctx', {}).get('error', 'parse error')})"
    if problem.get("type") == "extra_forbidden":
        return f"{'.'.join(where)}: unknown field for this endpoint; remove it"
    if problem.get("type") == "missing":
        return f"{'.'.join(where)}: required field missing"
    message = str(problem.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")  # a validator's own message names its field
    if problem.get("type", "").endswith("_type") or problem.get("type") == "finite_number":
        message += f", got {_as_json(problem.get('input'))}"  # "3" (a string) where 3 belongs; NaN
    return f"{'.'.join(where)}: {message}" if where else message


def _as_json(value: Any) -> str:
    import json

    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
