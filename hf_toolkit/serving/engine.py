"""The one model a server applies: loaded once from a run, and the single worker thread that runs it.

:meth:`Engine.load` opens the run the way every hftk command does (:func:`hf_toolkit.rundir.open_run`,
:func:`~hf_toolkit.rundir.load_config`, :func:`~hf_toolkit.rundir.task_name`): a generative run
(causal LM, summarization, translation, any seq2seq model) becomes a
:class:`hf_toolkit.generation.Generator`, so prompts are encoded, lengths checked and decoding
settings merged exactly as ``hftk generate`` does; a classifier, QA or fill-mask run is loaded
with :func:`~hf_toolkit.rundir.load_model` and answers through its task's ``predict_records``, as
``hftk predict`` does. Nothing here loads another model or touches a file after start-up.

All model work runs on one daemon thread (:class:`Worker`), in arrival order: one model, one
request at a time, the rest queued (at most ``Limits.max_queue``; more get 503). The run's own
generation config is kept aside at load and put back before every request, so one request's
options never leak into the next (``Generator.configure`` sets them on the model).

Streaming uses ``Generator.generate``'s ``on_text`` callback (transformers' ``TextStreamer``);
:class:`Pieces` turns those calls into what an OpenAI client expects (no echoed prompt, no
terminal line break at the end, text held back while it may begin a stop string), and stops
generation at a stop string, when the client has gone, or when the server shuts down.
"""

from __future__ import annotations

import asyncio
import copy
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from hf_toolkit import generation, modeling, rundir
from hf_toolkit.errors import HftkError
from hf_toolkit.serving.errors import ApiError
from hf_toolkit.serving.limits import OPTION, Limits
from hf_toolkit.tasks import TASKS

# The endpoint of each task whose head predicts rather than generates.
PREDICT_ENDPOINTS = {"text-classification": "/v1/classify", "question-answering": "/v1/answer", "masked-lm": "/v1/fill-mask"}
COMPLETIONS = "/v1/completions"


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


class Worker:
    """One daemon thread running jobs in arrival order; counts the requests queued or running."""

    def __init__(self, max_queue: int):
        self.max_queue, self.waiting = max_queue, 0
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="hftk-serve-model", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, future, loop = job
            try:
                outcome, ok = fn(), True
            except BaseException as error:  # noqa: BLE001 - handed to the awaiting request
                outcome, ok = error, False
            loop.call_soon_threadsafe(_settle, future, ok, outcome)

    def start(self, fn: Callable[[], Any]) -> asyncio.Future:
        """Queue `fn` (503 when the queue is full); the future settles when it has run."""
        if self.waiting >= self.max_queue:
            raise ApiError(503, f"server busy: {self.waiting} requests are queued for the model, this server's limit "
                                f"(hftk serve {OPTION['max_queue']} sets it); retry later", kind="server_busy")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting += 1
        future.add_done_callback(self._done)
        self._jobs.put((fn, future, loop))
        return future

    def _done(self, _future) -> None:
        self.waiting -= 1

    async def run(self, fn: Callable[[], Any]) -> Any:
        return await self.start(fn)

    def stop(self) -> None:
        self._jobs.put(None)


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
        self.worker = Worker(limits.max_queue)
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

    def generate(self, prompts: list[str], options: dict[str, Any], *, seed: int | None, stops: list[str],
                 limit: Callable[[int, int], bool], on_piece: Callable[[str], None] | None = None,
                 cancelled: threading.Event | None = None) -> list[Output]:
        """On the worker thread: generate for `prompts` (streaming through `on_piece` for one sequence).

        `limit(prompt_index, tokens)` says whether a sequence stopped at its length limit.
        """
        self._generation_target().generation_config = copy.deepcopy(self.defaults)
        if on_piece is not None:
            pieces = Pieces(on_piece, stops, self.generator.continues_prompt, lambda: self.stopping.is_set() or
                            (cancelled is not None and cancelled.is_set()))
            try:
                self.generator.generate(prompts, options, seed=seed, on_text=pieces)
                pieces.finish()
            except StopString:
                pass
            except Cancelled:
                return []
            return [self._output(pieces.text, 0, pieces.stopped, limit)]
        results = self.generator.generate(prompts, options, seed=seed)
        per_prompt = max(1, len(results) // max(1, len(prompts)))
        outputs = []
        for i, result in enumerate(results):
            text, stopped = cut_at_stop(result.text, stops)
            outputs.append(self._output(text, i // per_prompt, stopped, limit))
        return outputs

    def _output(self, text: str, prompt_index: int, stopped: bool, limit: Callable[[int, int], bool]) -> Output:
        tokens = len(self.generator.writer(text, add_special_tokens=False)["input_ids"]) if text else 0
        reason = "length" if not stopped and limit(prompt_index, tokens) else "stop"
        return Output(text, reason, tokens, prompt_index)

    def _generation_target(self) -> Any:
        model = self.generator.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    # ----------------------------------------------------------------------------------------
    # Prediction (worker thread)

    def predict(self, rows: dict[str, list[str]], top_k: int) -> list[dict[str, Any]]:
        """Records exactly as ``hftk predict --json`` gives them."""
        return TASKS[self.task].predict_records(self.model, self.tokenizer, self.run.recipe, rows, top_k=top_k, batch_size=16)

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
