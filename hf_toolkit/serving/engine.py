"""The one model a server applies: loaded once from a run, and the single worker thread that runs it.

:meth:`Engine.load` opens the run the way every hftk command does (:func:`hf_toolkit.core.rundir.open_run`,
:func:`~hf_toolkit.core.rundir.load_config`, :func:`~hf_toolkit.core.rundir.task_name`): a generative run
(causal LM, summarization, translation, any seq2seq model) becomes a
:class:`hf_toolkit.apply.generation.Generator`, so prompts are encoded, lengths checked and decoding
settings merged exactly as ``hftk generate`` does; a classifier, QA or fill-mask run is loaded
with :func:`~hf_toolkit.core.rundir.load_model` and answers through its task's ``predict_records``, as
``hftk predict`` does. Nothing here loads another model or touches a file after start-up.

All model work runs on one daemon thread (:class:`Worker`); requests wait in a queue in front of
it (at most ``Limits.max_queue``, queued or running; more get 503). When the worker is free it
takes the oldest waiting request and, if that request may share a batch, every later waiting
request with the same batch key, up to ``Limits.max_batch_size`` sequences (or inputs) in all,
and runs them as one batched ``Generator.generate`` (or ``predict_records``) call; the results are
split back per request. A generation request's key (:func:`batch_key`) is its whole merged
generation config, and only requests whose output does not depend on their batch-mates get one:
greedy or unseeded sampling, one beam, a ``max_new_tokens`` length (``max_length`` counts the
left padding); a seeded sampling request, beam search and a request streamed piece by piece run
alone. With left padding a greedy request gets the text it would get alone (up to float noise in
the padded attention). If a batch fails, each of its requests is run again alone, so one bad
request fails only itself. ``Worker.batches`` counts the model calls by requests per call.

The run's own generation config is kept aside at load and put back before every call, so one
request's options never leak into the next (``Generator.configure`` sets them on the model).

Streaming uses ``Generator.generate``'s ``on_text`` callback (transformers' ``TextStreamer``);
:class:`Pieces` turns those calls into what an OpenAI client expects (no echoed prompt, no
terminal line break at the end, text held back while it may begin a stop string), and stops
generation at a stop string, when the client has gone, or when the server shuts down. A request
whose client has gone (its future cancelled) before the worker reaches it is dropped unrun.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from hf_toolkit.apply import generation
from hf_toolkit.core import modeling, rundir
from hf_toolkit.errors import HftkError
from hf_toolkit.serving.errors import ApiError
from hf_toolkit.serving.limits import OPTION, Limits
from hf_toolkit.tasks import TASKS

# The endpoint of each task whose head predicts rather than generates.
PREDICT_ENDPOINTS = {"text-classification": "/v1/classify", "question-answering": "/v1/answer", "masked-lm": "/v1/fill-mask"}
COMPLETIONS = "/v1/completions"
# The fewest prompts (inputs) per model call: hftk generate's (hftk predict's) default batch, so that
# --max-batch-size 1 splits a request's own prompts as before; a larger --max-batch-size raises it.
ALONE_BATCH_SIZE = 8
PREDICT_BATCH_SIZE = 16


class Cancelled(Exception):
    """The client went away (or the server is stopping): stop generating."""


class StopString(Exception):
    """The text reached a stop string: stop generating."""


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

    prompts: list[str]
    options: dict[str, Any]  # hftk generate's options
    seed: int | None
    stops: list[str]
    limit: Callable[[int, int], bool]  # (prompt index, tokens): did a sequence stop at its length limit
    key: str | None  # batch_key of its decoding config
    sequences: int  # prompts x sequences per prompt


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


@dataclass
class Job:
    """Work queued for the model: `item`, run through `run` alone or with later jobs of the same `key`."""

    item: Any
    run: Callable[[list[Any]], list[Any]]  # items -> one result per item, in order
    key: Hashable | None  # jobs with equal keys may run as one batch; None: always alone
    size: int  # sequences (or inputs) it adds to a batch
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Worker:
    """One daemon thread running queued jobs, oldest first, batching those that may share a call.

    Counts the requests queued or running (`waiting`) and the model calls by how many requests
    each ran (`batches`).
    """

    def __init__(self, max_queue: int, max_batch_size: int = 1):
        self.max_queue, self.max_batch_size, self.waiting = max_queue, max_batch_size, 0
        self._batches: Counter[int] = Counter()
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="hftk-serve-model", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._stopped:
                    self._ready.wait()
                if self._stopped:
                    left, self._jobs = list(self._jobs), deque()
                    for job in left:
                        _hand(job, _settle, job.future, False, ApiError(503, "the server is stopping; retry when it "
                                                                             "is back", kind="server_busy"))
                    return
                batch = self._take()
            if batch:
                self._run(batch)

    def _take(self) -> list[Job]:
        """The oldest live job and the later live jobs of its key, up to max_batch_size in size (lock held)."""
        head = self._jobs.popleft()
        if head.future.done():  # its client has gone
            return []
        batch, total = [head], head.size
        if head.key is not None:
            for job in list(self._jobs):
                if total >= self.max_batch_size:
                    break
                if job.future.done():
                    self._jobs.remove(job)
                elif job.key == head.key and total + job.size <= self.max_batch_size:
                    self._jobs.remove(job)
                    batch.append(job)
                    total += job.size
        return batch

    @property
    def batches(self) -> Counter[int]:
        """The model calls so far by requests per call (a copy)."""
        with self._ready:
            return self._batches.copy()

    def _count(self, requests: int) -> None:
        with self._ready:
            self._batches[requests] += 1

    def _run(self, batch: list[Job]) -> None:
        self._count(len(batch))
        try:
            results = batch[0].run([job.item for job in batch])
            outcomes = [(True, result) for result in results]
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting requests
            if len(batch) == 1:
                outcomes = [(False, error)]
            else:  # one request may have failed the batch: run each alone, so only it fails
                outcomes = [self._alone(job) for job in batch]
        for job, (ok, outcome) in zip(batch, outcomes):
            _hand(job, _settle, job.future, ok, outcome)

    def _alone(self, job: Job) -> tuple[bool, Any]:
        if job.future.done():
            return False, Cancelled()
        self._count(1)
        try:
            return True, job.run([job.item])[0]
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting request
            return False, error

    def start(self, fn: Callable[[], Any]) -> asyncio.Future:
        """Queue `fn` to run alone (503 when the queue is full); the future settles when it has run."""
        return self.start_batch(fn, _call, key=None, size=1)

    def start_batch(self, item: Any, run: Callable[[list[Any]], list[Any]], *, key: Hashable | None,
                    size: int) -> asyncio.Future:
        """Queue `item` for ``run([item, ...])`` (503 when the queue is full); the future settles with its result.

        Cancelling the future (its client has gone) drops the job if it has not started.
        """
        if self.waiting >= self.max_queue:
            raise ApiError(503, f"server busy: {self.waiting} requests are queued for the model, this server's limit "
                                f"(hftk serve {OPTION['max_queue']} sets it); retry later", kind="server_busy")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting += 1
        future.add_done_callback(self._done)
        with self._ready:
            self._jobs.append(Job(item, run, key, size, future, loop))
            self._ready.notify()
        return future

    def _done(self, _future) -> None:
        self.waiting -= 1

    def stop(self) -> None:
        """Stop after the call in progress; jobs still queued get 503."""
        with self._ready:
            self._stopped = True
            self._ready.notify()


def _call(fns: list[Callable[[], Any]]) -> list[Any]:
    return [fns[0]()]


def _hand(job: Job, callback: Callable[..., Any], *args: Any) -> None:
    """Run `callback(*args)` on the job's event loop (unless that loop has closed: the server stopped)."""
    try:
        job.loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


def _settle(future: asyncio.Future, ok: bool, outcome: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(outcome)
    else:
        future.set_exception(outcome)


class Engine:
    """A loaded run: its name, task, model (a Generator for generative runs) and worker."""

    def __init__(self, run: rundir.Run, task: str | None, limits: Limits, *, generator: generation.Generator | None = None,
                 model: Any = None, tokenizer: Any = None):
        self.run, self.task, self.limits = run, task, limits
        self.generator = generator
        self.model = generator.model if generator is not None else model
        self.tokenizer = generator.tokenizer if generator is not None else tokenizer
        self.name = model_id(run.reference)
        self.worker = Worker(limits.max_queue, limits.max_batch_size)
        self.stopping = threading.Event()
        if generator is not None:
            self.defaults = copy.deepcopy(self._generation_target().generation_config)

    @classmethod
    def load(cls, reference: str, limits: Limits) -> "Engine":
        """Open and load the run once (user mistakes raise HftkError before any weights load)."""
        return cls.from_run(rundir.open_run(reference), limits)

    @classmethod
    def from_run(cls, run: rundir.Run, limits: Limits) -> "Engine":
        reference = run.reference
        config = rundir.load_config(run)
        task = rundir.task_name(run, config)
        if task is not None and TASKS[task].predicts:
            model, tokenizer = rundir.load_model(run, config)
            return cls(run, task, limits, model=model, tokenizer=tokenizer)
        if task is None and rundir.architecture(config)[1] == "AutoModel":
            raise HftkError(f"cannot tell what {reference} serves: its config.json lists architectures {config.architectures}; "
                            "hftk serve needs a causal or seq2seq LM, or a *ForSequenceClassification, "
                            "*ForQuestionAnswering or *ForMaskedLM model")
        return cls(run, task, limits, generator=generation.Generator(run))

    # ----------------------------------------------------------------------------------------
    # What the run serves

    @property
    def generates(self) -> bool:
        return self.generator is not None

    @property
    def endpoint(self) -> str:
        return COMPLETIONS if self.generates else PREDICT_ENDPOINTS[self.task]

    @property
    def kind(self) -> str:
        """The task as a user names it: the recipe's task, or text-generation for a plain LM directory."""
        return self.task or "text-generation"

    @property
    def chat(self) -> bool:
        return self.generates and bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def context(self) -> int | None:
        return modeling.context_length(self.model.config) if self.generates and not self.model.config.is_encoder_decoder else None

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

    def decoding_config(self, options: dict[str, Any]):
        """The run's generation config with `options` merged, as hftk generate merges them (HftkError: impossible)."""
        generation.check_options({k: v for k, v in options.items() if v is not None})
        return generation.generation_config(SimpleNamespace(generation_config=self.defaults), self.tokenizer, options)

    def encode(self, prompts: list[str]) -> list[list[int]]:
        return self.generator.encode(prompts)

    def fit(self, prompts: list[str], config: Any, options: dict[str, Any]) -> list[list[int]]:
        """Prompt ids fitted to the lengths asked for, as hftk generate fits them (HftkError when they cannot be)."""
        return self.generator.prompt_ids(prompts, config, {k: v for k, v in options.items() if v is not None})

    def queue_generation(self, request: Generation, on_piece: Callable[[str], None] | None = None,
                         cancelled: threading.Event | None = None) -> asyncio.Future:
        """Queue `request` for the worker (503 when the queue is full); the future settles with its outputs.

        Streamed piece by piece (`on_piece`), it runs alone; otherwise it may share a batch (its key).
        """
        if on_piece is not None:
            return self.worker.start(lambda: self.stream(request, on_piece, cancelled))
        return self.worker.start_batch(request, self.generate_batch, key=request.key, size=request.sequences)

    def generate_batch(self, requests: list[Generation]) -> list[list[Output]]:
        """On the worker thread: one ``Generator.generate`` call for `requests` (one batch key), outputs split per request."""
        self._generation_target().generation_config = copy.deepcopy(self.defaults)
        first = requests[0]
        prompts = [prompt for request in requests for prompt in request.prompts]
        # Requests that share a call do not depend on a seed (see batch_key); one alone uses its own.
        seed = first.seed if len(requests) == 1 else None
        per_prompt = max(1, first.sequences // len(first.prompts))
        results = self.generator.generate(prompts, first.options, seed=seed,
                                          batch_size=max(ALONE_BATCH_SIZE, self.limits.max_batch_size // per_prompt))
        outputs, start = [], 0
        for request in requests:
            count = len(request.prompts) * per_prompt
            outputs.append([self._output(*cut_at_stop(result.text, request.stops), i // per_prompt, request.limit)
                            for i, result in enumerate(results[start : start + count])])
            start += count
        return outputs

    def stream(self, request: Generation, on_piece: Callable[[str], None],
               cancelled: threading.Event | None = None) -> list[Output]:
        """On the worker thread: generate for one prompt, alone, sending its text through `on_piece` as it comes."""
        self._generation_target().generation_config = copy.deepcopy(self.defaults)
        pieces = Pieces(on_piece, request.stops, self.generator.continues_prompt, lambda: self.stopping.is_set() or
                        (cancelled is not None and cancelled.is_set()))
        try:
            self.generator.generate(request.prompts, request.options, seed=request.seed, on_text=pieces)
            pieces.finish()
        except StopString:
            pass
        except Cancelled:
            return []
        return [self._output(pieces.text, pieces.stopped, 0, request.limit)]

    def _output(self, text: str, stopped: bool, prompt_index: int, limit: Callable[[int, int], bool]) -> Output:
        tokens = len(self.generator.writer(text, add_special_tokens=False)["input_ids"]) if text else 0
        reason = "length" if not stopped and limit(prompt_index, tokens) else "stop"
        return Output(text, reason, tokens, prompt_index)

    def _generation_target(self) -> Any:
        model = self.generator.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    # ----------------------------------------------------------------------------------------
    # Prediction (worker thread)

    def queue_prediction(self, rows: dict[str, list[str]], top_k: int) -> asyncio.Future:
        """Queue one request's inputs (503 when the queue is full); batched with requests of the same roles and top_k."""
        size = len(next(iter(rows.values())))
        return self.worker.start_batch(Prediction(rows, top_k), self.predict_batch, key=(tuple(rows), top_k), size=size)

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

    def close(self) -> None:
        """Stop any generation in progress (at its next piece) and the worker."""
        self.stopping.set()
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


class Pieces:
    """``Generator.generate``'s ``on_text`` calls -> the pieces of the completion a client is sent.

    For a terminal, the Generator first echoes a prompt its output continues and ends the stream
    with a line break; neither is part of a completion. The last piece is held until the next
    arrives (the line break is stripped from the final one), and text that may begin a stop string
    is held until it cannot; at a stop string, or when `cancelled()` turns true, generation stops.
    """

    def __init__(self, emit: Callable[[str], None], stops: list[str], echoes_prompt: bool, cancelled: Callable[[], bool]):
        self.emit, self.stops, self.cancelled = emit, stops, cancelled
        self.skip_echo = echoes_prompt
        self.pending: str | None = None
        self.held = ""
        self.text = ""
        self.stopped = False

    def __call__(self, piece: str) -> None:
        if self.cancelled():
            raise Cancelled()
        if self.skip_echo:
            self.skip_echo = False
            return
        if self.pending is not None:
            self._release(self.pending)
        self.pending = piece

    def finish(self) -> None:
        """Generation ended on its own: release what is held (less the terminal line break)."""
        if self.pending is not None:
            last, self.pending = self.pending, None
            self._release(last[:-1] if last.endswith("\n") else last)
        self._out(self.held)
        self.held = ""

    def _release(self, piece: str) -> None:
        held = self.held + piece
        text, stopped = cut_at_stop(held, self.stops)
        if stopped:
            self._out(text)
            self.held, self.stopped = "", True
            raise StopString()
        keep = max((n for stop in self.stops for n in range(1, len(stop)) if held.endswith(stop[:n])), default=0)
        self._out(held[: len(held) - keep])
        self.held = held[len(held) - keep :]

    def _out(self, text: str) -> None:
        if text:
            self.text += text
            self.emit(text)
