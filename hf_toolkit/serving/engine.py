"""The one model a server applies, loaded once from a run, and how its requests are run on the worker.

:meth:`Engine.from_run` opens the run the way every hftk command does (:func:`hf_toolkit.core.rundir.open_run`,
:func:`~hf_toolkit.core.rundir.load_config`, :func:`~hf_toolkit.core.rundir.task_name`): a generative run
(causal LM, summarization, translation, any seq2seq model) becomes a
:class:`hf_toolkit.apply.generation.Generator`, so a request is prepared (options merged, prompts
encoded and fitted, once) and run exactly as ``hftk generate`` does; a classifier, QA or fill-mask
run is loaded with :func:`~hf_toolkit.core.rundir.load_model` and answers through its task's
``predict_records``, as ``hftk predict`` does. Nothing here loads another model or touches a file
after start-up.

Requests queue for the model on a :class:`~hf_toolkit.serving.worker.Worker`, which batches those
that may share a call and lets calls take turns step by step. A generation request's batch key
(:func:`batch_key`) is its whole merged generation config, and only requests whose output does not
depend on their batch-mates get one: greedy or unseeded sampling, one beam, a ``max_new_tokens``
length (``max_length`` counts the left padding); a seeded sampling request, beam search and a
stream run alone. With left padding a greedy request gets the text it would get alone (up to float
noise in the padded attention).

Between decoding steps (:class:`Turns`) a call hands the model to the worker, and each of its
requests may stop early: its client has gone, its time limit (``Limits.request_timeout``) has
passed, it reached a stop string (a stream), or the server is stopping (:meth:`Engine.close`). A
request stopped by its time limit or by the server fails with an error saying so; the other
requests of its call go on. A stream's pieces (:class:`Pieces`) are the generator's raw text,
held back only while it may begin a stop string.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hf_toolkit.apply import generation
from hf_toolkit.core import rundir
from hf_toolkit.errors import HftkError
from hf_toolkit.serving.errors import ApiError
from hf_toolkit.serving.limits import Limits
from hf_toolkit.serving.worker import Cancelled, Worker
from hf_toolkit.tasks import TASKS

COMPLETIONS = "/v1/completions"
# How a generation request names the lengths, for the generator's messages (a request cannot set max_length).
REQUEST_FIELDS = generation.Spelling(max_new_tokens="max_tokens", max_length=None)
# The fewest prompts (inputs) per model call: hftk generate's (hftk predict's) default batch, so that
# --max-batch-size 1 splits a request's own prompts as before; a larger --max-batch-size raises it.
ALONE_BATCH_SIZE = 8
PREDICT_BATCH_SIZE = 16


@dataclass
class Output:
    """One generated sequence as an OpenAI choice."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    tokens: int  # completion tokens (the text re-encoded by the output tokenizer)
    prompt_index: int


@dataclass
class Generation:
    """One checked generation request, as the worker runs it."""

    request: generation.Prepared  # prompts encoded and fitted, the merged config, the seed
    stops: list[str]
    deadline: float  # time.monotonic() at which it ends with a time-limit error
    on_piece: Callable[[str], None] | None = None  # a stream: gets its text piece by piece, runs alone
    cancelled: threading.Event = field(default_factory=threading.Event)  # its client has gone
    halted_by: str | None = None  # why it was stopped early: "cancelled", "timeout" or "stopping"

    @property
    def key(self) -> str | None:
        return None if self.on_piece is not None else batch_key(self.request.config, self.request.seed)

    @property
    def sequences(self) -> int:
        return len(self.request.prompts) * self.request.per_prompt

    def at_length(self, prompt_index: int, tokens: int) -> bool:
        """Whether a sequence of `tokens` new tokens after prompt `prompt_index` stopped at its length limit."""
        config = self.request.config
        if config.max_new_tokens is not None:
            return tokens >= config.max_new_tokens
        return len(self.request.ids[prompt_index]) + tokens >= config.max_length

    def halt(self, stop_by: float | None) -> bool:
        """Whether to stop generating now (once true, stays true): client gone, time limit, server stopping at `stop_by`."""
        if self.halted_by is None:
            now = time.monotonic()
            if self.cancelled.is_set():
                self.halted_by = "cancelled"
            elif stop_by is not None and now >= stop_by:
                self.halted_by = "stopping"
            elif now >= self.deadline:
                self.halted_by = "timeout"
        return self.halted_by is not None


@dataclass
class Prediction:
    """One request's inputs for a task head (`rows` maps input roles to lists) and its top_k."""

    rows: dict[str, list[str]]
    top_k: int


def batch_key(config: Any, seed: int | None) -> str | None:
    """What requests must share to run as one batched call: their whole decoding config (None: run alone).

    Only requests whose outputs do not depend on their batch-mates share one: greedy, or sampling
    without a seed (a seeded request's text must repeat with its seed), with one beam and a
    max_new_tokens length (a max_length would count the other prompts' left padding).
    """
    if (config.num_beams or 1) != 1 or config.max_new_tokens is None or (config.do_sample and seed is not None):
        return None
    return config.to_json_string(use_diff=False)


class Engine:
    """A loaded run: its name, task, model (a Generator for generative runs) and worker."""

    def __init__(self, run: rundir.Run, task: str | None, limits: Limits, *, generator: generation.Generator | None = None,
                 model: Any = None, tokenizer: Any = None):
        self.run, self.task, self.limits = run, task, limits
        self.generator = generator
        self.model = generator.model if generator is not None else model
        self.tokenizer = generator.tokenizer if generator is not None else tokenizer
        self.name = model_id(run.reference)
        self.worker = Worker(limits.max_queue, limits.max_batch_size, limits.max_running,
                             queue_set_by=limits.source("max_queue"))
        self.stop_by: float | None = None  # set by close(): generations still running end then

    @classmethod
    def from_run(cls, run: rundir.Run, limits: Limits) -> "Engine":
        """Load the opened run once (``hftk serve`` opens it first, so user mistakes raise HftkError
        before any weights load)."""
        reference = run.reference
        config = rundir.load_config(run)
        task = rundir.task_name(run, config)
        if task is not None and TASKS[task].predicts:
            model, tokenizer = rundir.load_model(run, config)
            return cls(run, task, limits, model=model, tokenizer=tokenizer)
        if task is None and rundir.architecture(config)[1] == "AutoModel":
            raise HftkError(f"cannot tell what {reference} serves: its config.json lists architectures {config.architectures}; "
                            f"hftk serve needs a model whose architecture ends in one of {rundir.heads()}")
        return cls(run, task, limits, generator=generation.Generator(run))

    # ----------------------------------------------------------------------------------------
    # What the run serves

    @property
    def generates(self) -> bool:
        return self.generator is not None

    @property
    def endpoint(self) -> str:
        return COMPLETIONS if self.generates else TASKS[self.task].endpoint

    @property
    def kind(self) -> str:
        """The task as a user names it: the recipe's task, or text-generation for a plain LM directory."""
        return self.task or "text-generation"

    @property
    def chat(self) -> bool:
        return self.generates and bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def defaults(self) -> Any:
        """The run's own generation config, which every request starts from."""
        return self.generator.defaults

    def require(self, endpoint: str) -> None:
        """404 naming this run's own endpoint when a request asks for another task's."""
        if endpoint != self.endpoint:
            raise ApiError(404, f"{endpoint} is not served here: {self.name} is a {self.kind} model, so this server "
                                f"answers POST {self.endpoint}" + (" (and /v1/chat/completions)" if self.chat else ""),
                           kind="not_found_error")

    def check_model(self, requested: str | None) -> None:
        if requested is not None and requested not in (self.name, self.run.reference):
            raise ApiError(404, f"model '{requested}' is not served here: this server serves '{self.name}' only "
                                "(GET /v1/models) and loads no other model", param="model", kind="not_found_error")

    # ----------------------------------------------------------------------------------------
    # Generation (request thread: checks; worker thread: generate)

    def prepare(self, prompts: list[str], options: dict[str, Any], *, seed: int | None) -> generation.Prepared:
        """`prompts` prepared as hftk generate prepares them, messages naming the request's fields (400: impossible)."""
        try:
            return self.generator.prepare(prompts, options, seed=seed, spelling=REQUEST_FIELDS)
        except HftkError as error:
            raise ApiError(400, str(error)) from None

    def queue_generation(self, request: Generation) -> asyncio.Future:
        """Queue `request` (503 when the queue is full); the future settles with its outputs, or its error.

        A stream runs alone; otherwise it may share a call with requests of its batch key.
        """
        run = self.stream if request.on_piece is not None else self.generate_batch
        return self.worker.start_batch(request, run, key=request.key, size=request.sequences, deadline=request.deadline,
                                       expired=self.timed_out)

    async def complete(self, request: Generation) -> list[Output]:
        """The outputs of a request that is not streamed, or its error (the time limit included)."""
        return await self.within_limit(self.queue_generation(request), request.deadline)

    def generate_batch(self, requests: list[Generation]) -> list[list[Output] | Exception]:
        """On a worker lane: one ``Generator.generate`` call for `requests` (one batch key), outputs split per request."""
        first = requests[0].request
        # Requests that share a call do not depend on a seed (see batch_key); one alone uses its own.
        joined = generation.Prepared([p for r in requests for p in r.request.prompts], [i for r in requests for i in r.request.ids],
                                     first.config, first.seed if len(requests) == 1 else None)
        results = self.generator.generate(joined, batch_size=max(ALONE_BATCH_SIZE, self.limits.max_batch_size // first.per_prompt),
                                          steps=Turns(self, requests))
        outcomes: list[list[Output] | Exception] = []
        for request in requests:
            mine, results = results[: request.sequences], results[request.sequences :]
            outcomes.append(self.failure(request) or [self._output(request, *cut_at_stop(result.text, request.stops),
                                                                   i // first.per_prompt) for i, result in enumerate(mine)])
        return outcomes

    def stream(self, requests: list[Generation]) -> list[list[Output] | Exception]:
        """On a worker lane: generate for one request's prompt, sending its text through its `on_piece` as it comes."""
        [request] = requests
        pieces = Pieces(request.on_piece, request.stops)
        self.generator.generate(request.request, on_text=pieces, steps=Turns(self, requests, pieces))
        failure = self.failure(request)
        if failure is not None:
            return [failure]
        pieces.finish()
        return [[self._output(request, pieces.text, pieces.stopped, 0)]]

    def _output(self, request: Generation, text: str, stopped: bool, prompt_index: int) -> Output:
        tokens = len(self.generator.writer(text, add_special_tokens=False)["input_ids"]) if text else 0
        reason = "length" if not stopped and request.at_length(prompt_index, tokens) else "stop"
        return Output(text, reason, tokens, prompt_index)

    # ----------------------------------------------------------------------------------------
    # Ending early: time limits, clients gone, the server stopping

    def failure(self, request: Generation) -> Exception | None:
        """The error of a request stopped before its end (None: it ended on its own or at a stop string)."""
        if request.halted_by == "cancelled":
            return Cancelled()
        if request.halted_by == "timeout":
            return self.timed_out()
        if request.halted_by == "stopping":
            return ApiError(503, "the server is stopping: the request was ended before its text was complete; retry "
                                 "when the server is back", kind="server_busy")
        return None

    def timed_out(self) -> ApiError:
        return ApiError(504, f"the request ran past this server's time limit of {self.limits.request_timeout:g} s "
                             f"({self.limits.source('request_timeout')} sets it); ask for fewer tokens, or retry when the "
                             "server is less busy", kind="timeout")

    def deadline(self) -> float:
        """When a request arriving now must have ended."""
        return time.monotonic() + self.limits.request_timeout

    async def within_limit(self, future: asyncio.Future, deadline: float) -> Any:
        """`future`'s result, or the time-limit error once `deadline` has passed (the job is then dropped)."""
        try:
            return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise self.timed_out() from None

    # ----------------------------------------------------------------------------------------
    # Prediction (worker thread)

    async def queue_prediction(self, rows: dict[str, list[str]], top_k: int) -> list[dict[str, Any]]:
        """One request's records (503 when the queue is full; the time-limit error past it); batched with
        requests of the same roles and top_k."""
        size, deadline = len(next(iter(rows.values()))), self.deadline()
        future = self.worker.start_batch(Prediction(rows, top_k), self.predict_batch, key=(tuple(rows), top_k), size=size,
                                         deadline=deadline, expired=self.timed_out)
        return await self.within_limit(future, deadline)

    def predict_batch(self, requests: list[Prediction]) -> list[list[dict[str, Any]]]:
        """On the worker thread: one ``predict_records`` call for the inputs of all `requests`, records split per request."""
        roles = requests[0].rows
        records = self.predict({role: [value for r in requests for value in r.rows[role]] for role in roles}, requests[0].top_k)
        split, start = [], 0
        for request in requests:
            count = len(next(iter(request.rows.values())))
            split.append(records[start : start + count])
            start += count
        return split

    def predict(self, rows: dict[str, list[str]], top_k: int) -> list[dict[str, Any]]:
        """Records exactly as ``hftk predict --json`` gives them."""
        return TASKS[self.task].predict_records(self.model, self.tokenizer, self.run.recipe, rows, top_k=top_k,
                                                batch_size=max(PREDICT_BATCH_SIZE, self.limits.max_batch_size))

    def close(self, grace: float = 0.0) -> None:
        """Take no more requests (queued ones get 503) and end the generations still running within `grace` seconds."""
        stop_by = time.monotonic() + grace
        self.stop_by = stop_by if self.stop_by is None else min(self.stop_by, stop_by)
        self.worker.stop()


def model_id(reference: str) -> str:
    """The id clients name the model by: a local directory's name, or the hub id."""
    from pathlib import Path

    path = Path(reference)
    return path.resolve().name if path.is_dir() else reference


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` up to (not including) its first stop string, and whether one was found."""
    cuts = [text.find(stop) for stop in stops if stop in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class Turns:
    """The :class:`~hf_toolkit.apply.generation.Steps` of one call: the worker's turn between decoding
    steps, and each request's own early stop (see :meth:`Generation.halt`; a stream also at a stop string)."""

    def __init__(self, engine: Engine, requests: list[Generation], pieces: Pieces | None = None):
        self.engine, self.pieces = engine, pieces
        self.owners = [request for request in requests for _ in request.request.prompts]

    def pause(self) -> None:
        self.engine.worker.turn()

    def halted(self, prompt_index: int) -> bool:
        return self.owners[prompt_index].halt(self.engine.stop_by) or (self.pieces is not None and self.pieces.stopped)


class Pieces:
    """A stream's raw text, as the generator hands it on -> the pieces its client is sent.

    Text that may begin a stop string is held until it cannot; at a stop string the text ends
    (`stopped`: :class:`Turns` then stops the generation).
    """

    def __init__(self, emit: Callable[[str], None], stops: list[str]):
        self.emit, self.stops = emit, stops
        self.held = ""
        self.text = ""
        self.stopped = False

    def __call__(self, piece: str) -> None:
        if self.stopped:
            return
        held = self.held + piece
        text, self.stopped = cut_at_stop(held, self.stops)
        if self.stopped:
            self.held = ""
            self._out(text)
            return
        keep = max((n for stop in self.stops for n in range(1, len(stop)) if held.endswith(stop[:n])), default=0)
        self._out(held[: len(held) - keep])
        self.held = held[len(held) - keep :]

    def finish(self) -> None:
        """Generation ended on its own: release what is held."""
        self._out(self.held)
        self.held = ""

    def _out(self, text: str) -> None:
        if text:
            self.text += text
            self.emit(text)
