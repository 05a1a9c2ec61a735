"""What one request may ask of the server, and the checks that refuse more with a 4xx naming the limit.

:class:`Limits` holds the bounds (each one an ``hftk serve`` option); :func:`check` compares a
number with its bound and raises :class:`~hf_toolkit.serving.errors.ApiError` (400) whose message
names the field, the limit and what sets it: ``hftk serve`` fills :attr:`Limits.set_by` with its
options (the CLI owns their names), so a served request that asks too much is told the flag. :class:`BodyChecks` is the ASGI
middleware that refuses a request body before it is parsed: over ``max_body_bytes`` (413, whether
or not the client sent a Content-Length), sent as another Content-Type than JSON (415), or not
UTF-8 text (400), each with a message saying so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hf_toolkit.serving.errors import ApiError, body


@dataclass(frozen=True)
class Limits:
    """Bounds on one request (and on the queue and the batches in front of the model)."""

    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int = 2048  # and never more than the model's context
    max_tokens: int = 512  # new tokens per sequence (OpenAI max_tokens)
    n: int = 8  # sequences per prompt (OpenAI n)
    max_batch: int = 64  # prompts or inputs per request
    top_k: int = 50  # fill-mask candidates per mask
    max_queue: int = 256  # requests waiting for the model; more get 503
    max_batch_size: int = 16  # sequences (inputs) of waiting requests run as one batch; 1: one request at a time
    max_running: int = 4  # calls (batches or streams) taking turns on the model, token by token
    request_timeout: float = 120.0  # seconds from arrival to the end of a request's answer; then it ends with an error
    set_by: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    """Bound -> what sets it, for the messages that refuse a request (``hftk serve``: its option, e.g.
    ``{"n": "hftk serve --max-n"}``); a bound missing here is named as ``Limits.<bound>``."""

    @classmethod
    def bounds(cls) -> list[str]:
        """The names of the bounds (every field but :attr:`set_by`)."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "set_by"]

    def source(self, bound: str) -> str:
        """What sets `bound`, as its refusals name it."""
        return self.set_by.get(bound, f"Limits.{bound}")

    def public(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.bounds()}


def check(limits: Limits, field: str, value: int, bound: str | None = None, what: str | None = None,
          param: str | None = None) -> None:
    """Refuse `value` over the limit `bound` (default: `field`) with a message naming the field, the limit
    and what sets it."""
    bound = bound or field
    limit = getattr(limits, bound)
    if value > limit:
        raise ApiError(400, f"{field}: {what or value} is over this server's limit of {limit} "
                            f"({limits.source(bound)} sets it)", param=param or field)


class BodyChecks:
    """ASGI middleware: a request body over `limit` bytes (413), not JSON (415) or not UTF-8 (400) is refused
    before any endpoint reads it; `set_by` names what sets the limit."""

    def __init__(self, app: Any, limit: int, set_by: str = "Limits.max_body_bytes"):
        self.app, self.limit, self.set_by = app, limit, set_by

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send)
            if not message.get("more_body", False):
                break
        data, sent = b"".join(chunks), False
        problem = body_problem(data, headers.get(b"content-type", b"").decode("latin-1"))
        if problem is not None:
            return await _answer(send, *problem)

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()  # http.disconnect, for streaming endpoints that watch for it

        return await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        await _answer(send, 413, f"request body is over this server's limit of {self.limit} bytes "
                                 f"({self.set_by} sets it); send less text per request")


def body_problem(data: bytes, content_type: str) -> tuple[int, str] | None:
    """What is wrong with a request body every endpoint reads as JSON (None: nothing it can tell yet)."""
    if not data:
        return None  # no body: the endpoint says which fields are missing
    media = content_type.split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        return 415, (f"the request body is sent as Content-Type {media}; hftk serve reads JSON: send it with "
                     "Content-Type: application/json")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return 400, (f"the request body is not UTF-8 text (byte 0x{data[error.start]:02x} at position {error.start}); "
                     "send JSON encoded as UTF-8")
    return None


async def _answer(send, status: int, message: str) -> None:
    """An OpenAI-shaped error answer sent straight from the middleware."""
    import json

    payload = json.dumps(body(message, param="body")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
