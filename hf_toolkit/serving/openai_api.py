"""The OpenAI-compatible endpoints of a generative run: ``/v1/completions``, ``/v1/chat/completions``
(when the tokenizer has a chat template) and ``/v1/models``.

Requests are mapped onto ``hftk generate``'s options: ``max_tokens`` -> ``max_new_tokens``,
``temperature`` 0 -> greedy and > 0 -> sampling at that temperature, ``top_p`` -> nucleus sampling,
``n`` -> ``num_return_sequences``, ``seed`` -> the generation seed; what a request leaves out comes
from the run's generation config, as in ``hftk generate``. ``stop`` strings end the text before
the first of them (streaming stops generating there). Responses and stream chunks are the
``openai`` package's own types (``Completion``, ``ChatCompletion``, ``ChatCompletionChunk``), as
transformers' own server builds them; streams are server-sent events ending in ``data: [DONE]``.

Every check that can refuse a request (limits, impossible settings, prompt lengths) runs before it
is queued for the model, so a refused request costs no model time.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

from hf_toolkit.errors import HftkError
from hf_toolkit.serving.engine import COMPLETIONS, Engine, Generation, Output, batch_key
from hf_toolkit.serving.errors import ApiError, body
from hf_toolkit.serving.limits import Limits, check
from hf_toolkit.serving.schemas import ChatRequest, CompletionRequest, Decoding, as_list

CHAT = "/v1/chat/completions"
_DONE = object()


class Plan:
    """A checked generation request: prompts, hftk options, seed, stops and how to tell a length stop."""

    def __init__(self, engine: Engine, limits: Limits, request: Decoding, prompts: list[str], max_tokens: int | None):
        self.prompts, self.seed, self.stops, self.n = prompts, request.seed, request.stops, request.n
        check("prompt", len(prompts), limits.max_batch, "max_batch", what=f"{len(prompts)} prompts")
        if not prompts:
            raise ApiError(400, "prompt: give a prompt (or a list of at least one)", param="prompt")
        self.options = options(engine, limits, request, max_tokens)
        try:
            config = engine.decoding_config(self.options)
        except HftkError as error:
            raise ApiError(400, str(error)) from None
        raw = engine.encode(prompts)
        for i, ids in enumerate(raw):
            field = "prompt" if len(raw) == 1 else f"prompt[{i}]"
            check(field, len(ids), limits.max_prompt_tokens, "max_prompt_tokens", what=f"{len(ids)} tokens", param="prompt")
        try:
            fitted = engine.fit(prompts, config, self.options)
        except HftkError as error:
            raise ApiError(400, str(error)) from None
        self.prompt_tokens = [len(ids) for ids in fitted]
        self.max_new_tokens, self.max_length = config.max_new_tokens, config.max_length
        self.streamable = len(prompts) == 1 and self.n == 1 and (config.num_beams or 1) == 1
        self.request = Generation(prompts, self.options, self.seed, self.stops, self.at_length, batch_key(config, self.seed),
                                  len(prompts) * (config.num_return_sequences or 1))

    def at_length(self, prompt_index: int, tokens: int) -> bool:
        if self.max_new_tokens is not None:
            return tokens >= self.max_new_tokens
        return self.prompt_tokens[prompt_index] + tokens >= self.max_length

    def usage(self, outputs: list[Output]) -> dict[str, int]:
        prompt = sum(self.prompt_tokens)
        completion = sum(output.tokens for output in outputs)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def options(engine: Engine, limits: Limits, request: Decoding, max_tokens: int | None) -> dict[str, Any]:
    """hftk generate's options for an OpenAI request (None: the run's generation config decides)."""
    given: dict[str, Any] = {}
    if max_tokens is not None:
        check("max_tokens", max_tokens, limits.max_tokens)
        context = engine.context
        if context is not None and max_tokens >= context:
            raise ApiError(400, f"max_tokens: {max_tokens} leaves no room for the prompt in the model's context of "
                                f"{context} tokens; ask for {context - 1} or fewer", param="max_tokens")
        given["max_new_tokens"] = max_tokens
    check("n", request.n, limits.n)
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


def with_nulls(chunk: dict) -> dict:
    """A stream chunk as OpenAI sends it: every choice says ``finish_reason`` (null until the last) and ``logprobs``."""
    for choice in chunk["choices"]:
        choice.setdefault("finish_reason", None)
        choice.setdefault("logprobs", None)
    return chunk


def sse(data: Any) -> str:
    import json

    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def add_routes(app: Any, engine: Engine, limits: Limits) -> None:
    from fastapi.responses import StreamingResponse
    from openai.types import Completion, CompletionChoice, CompletionUsage, Model
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    from openai.types.chat.chat_completion import Choice
    from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
    from openai.types.chat.chat_completion_chunk import ChoiceDelta
    from openai.types.chat.chat_completion_message import ChatCompletionMessage

    created = int(time.time())

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [Model(id=engine.name, created=created, object="model", owned_by="hftk").model_dump()]}

    def completion_chunk(rid: str, index: int, text: str = "", finish: str | None = None, usage=None) -> str:
        chunk = Completion.model_construct(
            id=rid, object="text_completion", created=int(time.time()), model=engine.name,
            choices=[CompletionChoice.model_construct(text=text, index=index, logprobs=None, finish_reason=finish)],
            **({"usage": CompletionUsage(**usage)} if usage else {}))
        return sse(with_nulls(chunk.model_dump(exclude_none=True)))

    def chat_chunk(rid: str, index: int, delta: dict, finish: str | None = None, usage=None) -> str:
        chunk = ChatCompletionChunk.model_construct(
            id=rid, object="chat.completion.chunk", created=int(time.time()), model=engine.name,
            choices=[ChunkChoice.model_construct(index=index, delta=ChoiceDelta(**delta), finish_reason=finish, logprobs=None)],
            **({"usage": CompletionUsage(**usage)} if usage else {}))
        return sse(with_nulls(chunk.model_dump(exclude_none=True)))

    async def answer(plan: Plan, rid: str, stream: bool, chunk, whole) -> Any:
        """Queue the plan; a JSON response, or an SSE stream of `chunk(...)` events."""
        if not stream:
            outputs = await engine.queue_generation(plan.request)
            return whole(outputs)
        cancelled = threading.Event()
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        on_piece = (lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text)) if plan.streamable else None
        job = engine.queue_generation(plan.request, on_piece, cancelled)  # 503 here, before the stream starts
        job.add_done_callback(lambda _: pieces.put_nowait(_DONE))

        async def events():
            try:
                if opening := chunk(rid, 0, role=True):
                    yield opening
                while (item := await pieces.get()) is not _DONE:
                    yield chunk(rid, 0, text=item)
                outputs = job.result()
                if not plan.streamable:
                    for i, output in enumerate(outputs):
                        if i > 0 and (opening := chunk(rid, i, role=True)):
                            yield opening
                        yield chunk(rid, i, text=output.text)
                for i, output in enumerate(outputs):
                    last = i == len(outputs) - 1
                    yield chunk(rid, i, finish=output.finish_reason, usage=plan.usage(outputs) if last else None)
            except HftkError as error:
                yield sse(body(str(error)))
            except ApiError as error:  # the server is stopping
                yield sse(body(error.message, error.kind))
            except Exception as error:  # noqa: BLE001 - a stream cannot change its status any more
                yield sse(body(f"generation failed: {type(error).__name__}: {error}", "server_error"))
            finally:
                cancelled.set()  # the client left (or the stream ended): stop generating at the next piece
                job.cancel()  # and drop the request if the worker has not reached it yet
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post(COMPLETIONS)
    async def completions(request: CompletionRequest):
        engine.require(COMPLETIONS)
        engine.check_model(request.model)
        plan = Plan(engine, limits, request, as_list(request.prompt), request.max_tokens)
        rid = f"cmpl-{uuid.uuid4().hex}"

        def chunk(rid, index, text="", finish=None, usage=None, role=False):
            return None if role else completion_chunk(rid, index, text, finish, usage)

        def whole(outputs: list[Output]):
            return Completion(id=rid, object="text_completion", created=int(time.time()), model=engine.name,
                              choices=[CompletionChoice(text=o.text, index=i, logprobs=None, finish_reason=o.finish_reason)
                                       for i, o in enumerate(outputs)],
                              usage=CompletionUsage(**plan.usage(outputs))).model_dump(exclude_none=True)

        return await answer(plan, rid, request.stream, chunk, whole)

    @app.post(CHAT)
    async def chat_completions(request: ChatRequest):
        engine.require(COMPLETIONS)
        if not engine.chat:
            raise ApiError(404, f"{CHAT} is not served here: {engine.name}'s tokenizer has no chat template; "
                                f"send plain prompts to POST {COMPLETIONS}", kind="not_found_error")
        engine.check_model(request.model)
        if request.max_tokens is not None and request.max_completion_tokens is not None:
            raise ApiError(400, "give max_tokens or max_completion_tokens, not both", param="max_completion_tokens")
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        try:
            prompt = engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as error:  # noqa: BLE001 - a template that rejects these messages (roles, order)
            raise ApiError(400, f"messages: the model's chat template rejects them: {error}", param="messages") from None
        plan = Plan(engine, limits, request, [prompt], request.max_tokens or request.max_completion_tokens)
        rid = f"chatcmpl-{uuid.uuid4().hex}"

        def chunk(rid, index, text="", finish=None, usage=None, role=False):
            if role:
                return chat_chunk(rid, index, {"role": "assistant", "content": ""})
            return chat_chunk(rid, index, {"content": text} if finish is None else {}, finish, usage)

        def whole(outputs: list[Output]):
            return ChatCompletion(
                id=rid, object="chat.completion", created=int(time.time()), model=engine.name,
                choices=[Choice(index=i, message=ChatCompletionMessage(role="assistant", content=o.text),
                                finish_reason=o.finish_reason, logprobs=None) for i, o in enumerate(outputs)],
                usage=CompletionUsage(**plan.usage(outputs))).model_dump(exclude_none=True)

        return await answer(plan, rid, request.stream, chunk, whole)
