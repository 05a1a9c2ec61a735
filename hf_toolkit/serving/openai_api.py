"""The OpenAI-compatible endpoints of a generative run: ``/v1/completions``, ``/v1/chat/completions``
(when the tokenizer has a chat template), ``/v1/models`` and ``/v1/models/{id}``.

Requests are mapped onto ``hftk generate``'s options (:func:`decoding_options`): ``max_tokens`` ->
``max_new_tokens``, ``temperature`` 0 -> greedy and > 0 -> sampling at that temperature, ``top_p``
-> nucleus sampling, ``n`` -> ``num_return_sequences``, ``seed`` -> the generation seed; what a
request leaves out comes from the run's generation config, as in ``hftk generate``. ``stop``
strings end the text before the first of them (streaming stops generating there).

Each handler reads top to bottom: check the request, prepare it once (:meth:`Routes.prepare`:
options merged, prompts encoded and fitted to the model's context, limits checked), queue it, and
answer in the endpoint's shape (:class:`CompletionShape`, :class:`ChatShape`: the ``openai``
package's own types, as transformers' own server builds them). Every check that can refuse a
request runs before it is queued, so a refused request costs no model time. A prompt cut to fit
the context is said in the answer: ``truncated_prompts`` (each prompt's index, tokens dropped and
kept, and a sentence with the ``max_tokens`` that keeps it whole), in the body or in a stream's
last chunk. Streams are server-sent events ending in ``data: [DONE]``; an error after a stream has
started (time limit, server stopping) is sent as an error event before ``[DONE]``; with
``stream_options: {"include_usage": true}`` a last chunk with no choices carries the usage.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from fastapi.responses import StreamingResponse
from openai.types import Completion, CompletionChoice, CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.chat.chat_completion_message import ChatCompletionMessage

from hf_toolkit.errors import HftkError
from hf_toolkit.serving.engine import COMPLETIONS, Engine, Generation, Output
from hf_toolkit.serving.errors import ApiError, body
from hf_toolkit.serving.limits import Limits, check
from hf_toolkit.serving.schemas import (
    ChatRequest,
    CompletionRequest,
    Decoding,
    Message,
    as_list,
)

CHAT = "/v1/chat/completions"
_DONE = object()


def add_routes(app: Any, engine: Engine, limits: Limits) -> None:
    routes = Routes(engine, limits)
    app.get("/v1/models")(routes.list_models)
    app.get("/v1/models/{model_id:path}")(routes.retrieve_model)
    app.post(COMPLETIONS)(routes.completions)
    app.post(CHAT)(routes.chat_completions)


class Routes:
    """The handlers of one served run."""

    def __init__(self, engine: Engine, limits: Limits):
        self.engine, self.limits, self.created = engine, limits, int(time.time())

    def list_models(self) -> dict:
        return {"object": "list", "data": [self.model()]}

    def retrieve_model(self, model_id: str) -> dict:
        self.engine.check_model(model_id)
        return self.model()

    def model(self) -> dict:
        return Model(id=self.engine.name, created=self.created, object="model", owned_by="hftk").model_dump()

    async def completions(self, request: CompletionRequest):
        self.engine.require(COMPLETIONS)
        self.engine.check_model(request.model)
        generation = self.prepare(request, as_list(request.prompt), request.max_tokens)
        return await self.answer(generation, request, CompletionShape(self.engine.name))

    async def chat_completions(self, request: ChatRequest):
        self.engine.require(COMPLETIONS)
        if not self.engine.chat:
            raise ApiError(404, f"{CHAT} is not served here: {self.engine.name}'s tokenizer has no chat template; "
                                f"send plain prompts to POST {COMPLETIONS}", kind="not_found_error")
        self.engine.check_model(request.model)
        if request.max_tokens is not None and request.max_completion_tokens is not None:
            raise ApiError(400, "give max_tokens or max_completion_tokens, not both", param="max_completion_tokens")
        prompt = self.chat_prompt(request.messages)
        generation = self.prepare(request, [prompt], request.max_tokens or request.max_completion_tokens)
        return await self.answer(generation, request, ChatShape(self.engine.name))

    def chat_prompt(self, messages: list[Message]) -> str:
        """The messages through the tokenizer's chat template, ending where the assistant's reply begins."""
        turns = [{"role": message.role, "content": message.text()} for message in messages]
        try:
            return self.engine.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        except Exception as error:  # noqa: BLE001 - a template that rejects these messages (roles, order)
            raise ApiError(400, f"messages: the model's chat template rejects them: {error}", param="messages") from None

    def prepare(self, request: Decoding, prompts: list[str], max_tokens: int | None) -> Generation:
        """The checked request, prepared once: options merged, prompts encoded and fitted (4xx when it cannot run)."""
        check(self.limits, "prompt", len(prompts), "max_batch", what=f"{len(prompts)} prompts")
        if not prompts:
            raise ApiError(400, "prompt: give a prompt (or a list of at least one)", param="prompt")
        options = decoding_options(self.engine, self.limits, request, max_tokens)
        prepared = self.engine.prepare(prompts, options, seed=request.seed)
        for index in range(len(prompts)):
            length = prepared.encoded_length(index)
            check(self.limits, "prompt" if len(prompts) == 1 else f"prompt[{index}]", length, "max_prompt_tokens",
                  what=f"{length} tokens", param="prompt")
        return Generation(prepared, request.stops, self.engine.deadline())

    async def answer(self, generation: Generation, request: Decoding, shape: Shape) -> Any:
        """The whole answer as JSON, or a stream of it."""
        if not request.stream:
            outputs = await self.engine.complete(generation)
            return shape.whole(outputs, usage(generation, outputs), truncation(generation))
        include_usage = request.stream_options is not None and request.stream_options.include_usage
        return stream(self.engine, generation, shape, include_usage)


def decoding_options(engine: Engine, limits: Limits, request: Decoding, max_tokens: int | None) -> dict[str, Any]:
    """hftk generate's options for an OpenAI request (None: the run's generation config decides)."""
    given: dict[str, Any] = {}
    if max_tokens is not None:
        check(limits, "max_tokens", max_tokens)
        given["max_new_tokens"] = max_tokens
    check(limits, "n", request.n)
    if request.temperature == 0:
        given["do_sample"] = False
    elif request.temperature is not None:
        given.update(do_sample=True, temperature=request.temperature)
    if request.top_p is not None and request.temperature != 0:
        given.update(do_sample=True, top_p=request.top_p)
    if request.n > 1:
        sampling = given.get("do_sample", bool(engine.defaults.do_sample))
        if not sampling and (engine.defaults.num_beams or 1) < request.n:
            raise ApiError(400, f"n: {request.n} different sequences per prompt need sampling, and this request decodes "
                                "greedily (temperature 0, or the run's default); give temperature > 0", param="n")
        given["num_return_sequences"] = request.n
    return given


def usage(generation: Generation, outputs: list[Output]) -> dict[str, int]:
    prompt = sum(len(ids) for ids in generation.request.ids)
    completion = sum(output.tokens for output in outputs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def truncation(generation: Generation) -> dict[str, Any]:
    """``{"truncated_prompts": [...]}`` when a prompt lost tokens to fit the model's context, else nothing."""
    cuts = generation.request.cuts
    if not cuts:
        return {}
    return {"truncated_prompts": [{"index": cut.index, "dropped_tokens": cut.dropped, "kept_tokens": cut.kept,
                                   "message": cut.message} for cut in cuts]}


def stream(engine: Engine, generation: Generation, shape: Shape, include_usage: bool) -> StreamingResponse:
    """Queue the request (503 here, before the stream starts) and stream its answer as server-sent events."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    if generation.request.streamable:
        generation.on_piece = lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text)
    job = engine.queue_generation(generation)
    job.add_done_callback(lambda _: pieces.put_nowait(_DONE))
    return StreamingResponse(events(generation, job, pieces, shape, include_usage), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def events(generation: Generation, job: asyncio.Future, pieces: asyncio.Queue, shape: Shape, include_usage: bool):
    """The stream's events: pieces as they come (or each sequence whole), the finish reasons, the usage, [DONE]."""
    try:
        if opening := shape.opening(0):
            yield opening
        while (item := await pieces.get()) is not _DONE:
            yield shape.piece(0, item)
        outputs = job.result()
        if not generation.request.streamable:
            for index, output in enumerate(outputs):
                if index > 0 and (opening := shape.opening(index)):
                    yield opening
                yield shape.piece(index, output.text)
        for index, output in enumerate(outputs):
            yield shape.finish(index, output.finish_reason, truncation(generation) if index == len(outputs) - 1 else {})
        if include_usage:
            yield shape.usage(usage(generation, outputs))
    except ApiError as error:  # the time limit, or the server stopping
        yield sse(body(error.message, error.kind))
    except HftkError as error:
        yield sse(body(str(error)))
    except Exception as error:  # noqa: BLE001 - a stream cannot change its status any more
        yield sse(body(f"generation failed: {type(error).__name__}: {error}", "server_error"))
    finally:
        generation.cancelled.set()  # the client left (or the stream ended): stop generating at the next step
        job.cancel()  # and drop the request if the worker has not reached it yet
    yield sse("[DONE]")


def sse(data: Any) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class Shape:
    """How one endpoint answers: the whole response, or its stream's chunks (one id for all of them)."""

    prefix = ""

    def __init__(self, model: str):
        self.model, self.id = model, f"{self.prefix}-{uuid.uuid4().hex}"

    def opening(self, index: int) -> str | None:
        """The chunk that opens sequence `index`, if the endpoint has one."""
        return None

    def chunk(self, choice: Any = None, usage: dict[str, int] | None = None, extra: dict[str, Any] | None = None) -> str:
        raise NotImplementedError

    def piece(self, index: int, text: str) -> str:
        raise NotImplementedError

    def finish(self, index: int, reason: str, extra: dict[str, Any]) -> str:
        raise NotImplementedError

    def usage(self, counts: dict[str, int]) -> str:
        """OpenAI's usage chunk (``stream_options.include_usage``): no choices, the whole request's usage."""
        return self.chunk(usage=counts)

    def whole(self, outputs: list[Output], counts: dict[str, int], extra: dict[str, Any]) -> dict:
        raise NotImplementedError


def with_nulls(chunk: dict) -> dict:
    """A stream chunk as OpenAI sends it: every choice says ``finish_reason`` (null until the last) and ``logprobs``."""
    for choice in chunk["choices"]:
        choice.setdefault("finish_reason", None)
        choice.setdefault("logprobs", None)
    return chunk


class CompletionShape(Shape):
    """``/v1/completions``: ``Completion`` objects (a stream's chunks are ``Completion`` objects too)."""

    prefix = "cmpl"

    def chunk(self, choice: Any = None, usage: dict[str, int] | None = None, extra: dict[str, Any] | None = None) -> str:
        data = Completion.model_construct(id=self.id, object="text_completion", created=int(time.time()), model=self.model,
                                          choices=[choice] if choice is not None else [],
                                          **({"usage": CompletionUsage(**usage)} if usage else {}))
        return sse({**with_nulls(data.model_dump(exclude_none=True)), **(extra or {})})

    def piece(self, index: int, text: str) -> str:
        return self.chunk(CompletionChoice.model_construct(text=text, index=index, logprobs=None, finish_reason=None))

    def finish(self, index: int, reason: str, extra: dict[str, Any]) -> str:
        return self.chunk(CompletionChoice.model_construct(text="", index=index, logprobs=None, finish_reason=reason),
                          extra=extra)

    def whole(self, outputs: list[Output], counts: dict[str, int], extra: dict[str, Any]) -> dict:
        choices = [CompletionChoice(text=o.text, index=i, logprobs=None, finish_reason=o.finish_reason)
                   for i, o in enumerate(outputs)]
        answer = Completion(id=self.id, object="text_completion", created=int(time.time()), model=self.model,
                            choices=choices, usage=CompletionUsage(**counts))
        return {**answer.model_dump(exclude_none=True), **extra}


class ChatShape(Shape):
    """``/v1/chat/completions``: a ``ChatCompletion``, or ``ChatCompletionChunk`` objects opening with the role."""

    prefix = "chatcmpl"

    def chunk(self, choice: Any = None, usage: dict[str, int] | None = None, extra: dict[str, Any] | None = None) -> str:
        data = ChatCompletionChunk.model_construct(id=self.id, object="chat.completion.chunk", created=int(time.time()),
                                                   model=self.model, choices=[choice] if choice is not None else [],
                                                   **({"usage": CompletionUsage(**usage)} if usage else {}))
        return sse({**with_nulls(data.model_dump(exclude_none=True)), **(extra or {})})

    def _choice(self, index: int, delta: dict[str, Any], reason: str | None = None) -> Any:
        return ChunkChoice.model_construct(index=index, delta=ChoiceDelta(**delta), finish_reason=reason, logprobs=None)

    def opening(self, index: int) -> str:
        return self.chunk(self._choice(index, {"role": "assistant", "content": ""}))

    def piece(self, index: int, text: str) -> str:
        return self.chunk(self._choice(index, {"content": text}))

    def finish(self, index: int, reason: str, extra: dict[str, Any]) -> str:
        return self.chunk(self._choice(index, {}, reason), extra=extra)

    def whole(self, outputs: list[Output], counts: dict[str, int], extra: dict[str, Any]) -> dict:
        choices = [Choice(index=i, message=ChatCompletionMessage(role="assistant", content=o.text),
                          finish_reason=o.finish_reason, logprobs=None) for i, o in enumerate(outputs)]
        answer = ChatCompletion(id=self.id, object="chat.completion", created=int(time.time()), model=self.model,
                                choices=choices, usage=CompletionUsage(**counts))
        return {**answer.model_dump(exclude_none=True), **extra}
