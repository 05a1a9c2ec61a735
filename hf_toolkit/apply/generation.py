"""``hftk generate``: batched text generation from a run directory, a local model or a hub id.

Decoding settings start from the model's own ``generation_config.json`` (which ``hftk finetune``
writes from the recipe's ``generation`` section) and are overridden by the options a user
passes. Decoder-only models are batched with left padding so every prompt ends right where its
continuation starts; results hold the continuation only, never the prompt.

A request is prepared once, then run (:class:`Generator`): :meth:`Generator.prepare` merges the
options into a generation config, encodes every prompt and fits it to the lengths asked for
(:func:`fit_lengths`), all before anything is generated; :meth:`Generator.generate` runs a
:class:`Prepared` request and hands streamed text on raw, as the model produces it (no echoed
prompt, no line break at the end: a terminal's formatting is the CLI's). For a decoder-only model
an empty prompt starts from the tokenizer's BOS token, and a prompt too long to leave room for the
new tokens keeps its last tokens: the request records each such cut (:class:`Cut`, with the bound
that would have kept the prompt whole) for the caller to say (``hftk generate`` on stderr,
``hftk serve`` in the response). Lengths the context cannot hold, or a ``max_length`` a prompt
already fills, are user errors naming the setting to change.

A caller that must share the model (``hftk serve``) passes :class:`Steps`: called between decoding
steps, it may let other work run and stop a prompt's sequences early.

A run whose task encodes its inputs (summarization/translation: ``data.source_prefix``,
``data.prompt_template``, source truncation) gets each prompt encoded the same way
(``Task.encode_prompts``); an encoder-decoder pair's decoder tokenizer decodes the output
(:func:`hf_toolkit.core.rundir.output_tokenizer`), Chinese joined as written
(:mod:`hf_toolkit.core.readable`). ``hftk eval --model`` and ``hftk chat``
generate through :class:`Generator` too.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from hf_toolkit.core import modeling, onnx_model, readable, rundir
from hf_toolkit.errors import HftkError
from hf_toolkit.tasks import TASKS
from hf_toolkit.tasks.base import Task

if TYPE_CHECKING:
    from hf_toolkit.core.rundir import Run

# transformers' default length (max_length 20, prompt included, whether a config writes it or leaves
# it unset) is too short to be useful; when neither the model nor the user set a length, hftk
# generates this many new tokens.
DEFAULT_MAX_NEW_TOKENS = 50
# GenerationConfig fields that only sampling reads.
SAMPLING_ONLY = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")


@dataclass(frozen=True)
class Spelling:
    """How the user sets the two lengths, for messages: hftk generate's options, or a server's field."""

    max_new_tokens: str = "--max-new-tokens"
    max_length: str | None = "--max-length"  # None: the user cannot set it (only the model's config does)


CLI = Spelling()


@dataclass(frozen=True)
class Cut:
    """A prompt that lost its first tokens to leave room for the new ones in the model's context."""

    index: int  # which prompt
    dropped: int  # tokens dropped from its start
    kept: int  # tokens kept (its last)
    message: str  # says so, with the length that would have kept it whole


@dataclass
class Prepared:
    """A generation request checked and encoded once: what :meth:`Generator.generate` runs."""

    prompts: list[str]
    ids: list[list[int]]  # each prompt's input ids, fitted to the model's context
    config: Any  # the merged GenerationConfig
    seed: int | None = None
    cuts: list[Cut] = field(default_factory=list)

    @property
    def per_prompt(self) -> int:
        return self.config.num_return_sequences or 1

    def encoded_length(self, index: int) -> int:
        """Prompt `index`'s length in tokens as encoded, before any cut to fit."""
        return len(self.ids[index]) + sum(cut.dropped for cut in self.cuts if cut.index == index)

    @property
    def streamable(self) -> bool:
        """One prompt, one sequence, no beams: its text can be handed on as it is produced."""
        return len(self.prompts) == 1 and self.per_prompt == 1 and (self.config.num_beams or 1) == 1


@dataclass
class Generated:
    prompt: str
    text: str
    continues_prompt: bool = True  # False for summaries/translations: the text stands on its own


class Steps(Protocol):
    """What a caller sharing the model does between decoding steps (see :class:`StepCheck`)."""

    def pause(self) -> None:
        """Called after every decoding step: may run other work before the next."""

    def halted(self, prompt_index: int) -> bool:
        """Whether the sequences of prompt `prompt_index` (of the request) stop now."""


def generation_config(base, tokenizer, options: dict[str, Any]):
    """A copy of the generation config `base` updated with the user's options (None means 'not given')."""
    config = copy.deepcopy(base)
    given = {k: v for k, v in options.items() if v is not None}
    if "max_length" in given:
        config.max_new_tokens = None
    elif "max_new_tokens" not in given and config.max_new_tokens is None and config.max_length in (None, 20):
        given["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS
    if given.get("do_sample") is False:
        # --greedy over a model saved with sampling settings: those settings belong to the mode the
        # user just turned off (check_options rejects --greedy with the user's own sampling options).
        for name in SAMPLING_ONLY:
            setattr(config, name, None)
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    try:
        config.update(**given)
        config.validate(strict=True)
    except ValueError as error:
        raise HftkError(f"impossible generation settings: {error}") from None
    return config


def check_options(given: dict[str, Any]) -> None:
    """Decoding options from the command line obey the rules of a recipe's `generation` section."""
    from pydantic import ValidationError

    from hf_toolkit.recipe.schema import GenerationSection

    if "max_length" in given and "max_new_tokens" in given:
        raise HftkError("give --max-new-tokens or --max-length, not both")
    try:
        GenerationSection(**{k: v for k, v in given.items() if k in GenerationSection.model_fields})
    except ValidationError as error:
        first = error.errors()[0]
        raise HftkError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']} (got {first['input']!r})") from None
    if given.get("do_sample") is False and any(k in given for k in ("temperature", "top_k", "top_p")):
        raise HftkError("--temperature, --top-k and --top-p shape sampling; drop them or use --do-sample instead of --greedy")


class Generator:
    """A loaded generative model with the encoding of its run: prepared requests in, texts out."""

    def __init__(self, run: Run):
        config = rundir.load_config(run)
        task = rundir.task_name(run, config)
        if task is not None and TASKS[task].predicts:
            raise HftkError(f"{run.reference} is a {task} model: it predicts rather than generates text; "
                            f"use hftk predict --model {run.reference} (see hftk predict --help)")
        if run.is_local and onnx_model.is_exported(run.location):
            onnx_model.refuse_generation()
        self.run, self.recipe = run, run.recipe
        self.task: Task | None = TASKS[task] if run.recipe is not None else None
        self.model, self.tokenizer = rundir.load_model(run, config)
        if not self.model.config.is_encoder_decoder:
            self.tokenizer.padding_side = "left"
        self.writer = rundir.output_tokenizer(run, self.tokenizer)
        # Every request starts from the run's own decoding settings, never from the previous one's.
        self.defaults = copy.deepcopy(self._target().generation_config)

    @property
    def continues_prompt(self) -> bool:
        """Whether an output continues its prompt's text (a language model) or answers it."""
        if self.task is not None:
            return self.task.continues_prompt
        return not self.model.config.is_encoder_decoder

    @property
    def context(self) -> int | None:
        """The most tokens a decoder-only model's prompt and new tokens may hold (None: no bound)."""
        return None if self.model.config.is_encoder_decoder else modeling.context_length(self.model.config)

    def prepare(self, prompts: list[str], options: dict[str, Any], *, seed: int | None = None,
                spelling: Spelling = CLI) -> Prepared:
        """`prompts` with `options` merged over the run's settings, encoded and fitted once (HftkError: impossible).

        Each prompt is encoded as the run's training encoded its inputs; a decoder-only model's
        prompts are fitted to its context (see :func:`fit_lengths`); messages name the lengths as
        `spelling` says the user sets them.
        """
        given = {k: v for k, v in options.items() if v is not None}
        check_options(given)
        config = generation_config(self.defaults, self.tokenizer, given)
        ids = self.encode(prompts)
        if self.model.config.is_encoder_decoder:  # the encoder's input: the decoder starts on its own
            return Prepared(prompts, ids, config, seed)
        ids, cuts = fit_lengths([row or self.start_ids() for row in ids], config, self.context, given, spelling)
        return Prepared(prompts, ids, config, seed, cuts)

    def encode(self, prompts: list[str]) -> list[list[int]]:
        """Input ids of every prompt as the run's training encoded its inputs, not yet fitted to any length."""
        return (self.task.encode_prompts(self.recipe, self.tokenizer, self.model, prompts) if self.task is not None
                else self.tokenizer(prompts)["input_ids"])

    def start_ids(self) -> list[int]:
        """What an empty prompt generates from: the tokenizer's BOS token."""
        if self.tokenizer.bos_token_id is None:
            raise HftkError(f"an empty prompt starts generating from a BOS token, and {self.run.reference}'s tokenizer "
                            "has none; give a prompt of at least one word")
        return [self.tokenizer.bos_token_id]

    def _target(self):
        """The model whose generation config generate() reads (a PeftModel generates with its base model's)."""
        return modeling.base_model(self.model)

    def generate(self, request: Prepared, *, batch_size: int = 8, on_text: Callable[[str], None] | None = None,
                 steps: Steps | None = None) -> list[Generated]:
        """`request.per_prompt` results per prompt, in prompt order; the texts raw (continuations only).

        `on_text` receives the text as it is produced when the request is streamable (else it is
        not called); `steps` is called between decoding steps (see :class:`Steps`).
        """
        import torch
        from transformers import set_seed

        if request.seed is not None:
            set_seed(request.seed)
        streamer = text_streamer(self.writer, on_text) if on_text is not None and request.streamable else None
        results: list[Generated] = []
        for start in range(0, len(request.prompts), batch_size):
            batch = request.prompts[start : start + batch_size]
            inputs = self.tokenizer.pad({"input_ids": request.ids[start : start + batch_size]}, return_tensors="pt",
                                        padding=True)
            # The model carries the settings itself, set before every call (another request's call
            # may have run in between): a config passed to generate() would have its unset fields
            # (max_new_tokens=None under --max-length) filled back in from the model's.
            self._target().generation_config = request.config
            criteria = [StepCheck(steps, start, len(batch))] if steps is not None else None
            with torch.inference_mode():
                output = self.model.generate(**inputs.to(self.model.device), streamer=streamer, stopping_criteria=criteria)
            if not self.model.config.is_encoder_decoder:
                output = output[:, inputs["input_ids"].shape[1] :]
            texts = readable.batch_decode(self.writer, output, skip_special_tokens=True)
            results += [Generated(batch[i // request.per_prompt], text, self.continues_prompt) for i, text in enumerate(texts)]
        return results


class StepCheck:
    """A stopping criterion for ``model.generate`` that hands each step to :class:`Steps`.

    transformers calls its stopping criteria after every decoding step (greedy, sampling and beam
    search alike) with the sequences so far, one row per sequence; a row whose entry is True
    stops there. Rows map to the prompts of one ``generate`` call in order, each prompt's
    sequences (or beams) together.
    """

    def __init__(self, steps: Steps, first: int, prompts: int):
        self.steps, self.first, self.prompts = steps, first, prompts

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.steps.pause()
        rows = input_ids.shape[0]
        halted = [self.steps.halted(self.first + row * self.prompts // rows) for row in range(rows)]
        return torch.tensor(halted, dtype=torch.bool, device=input_ids.device)


def text_streamer(tokenizer, on_text: Callable[[str], None]):
    """transformers' TextStreamer (it decodes at word boundaries) handing each finished piece of text to `on_text`;
    it decodes through :class:`hf_toolkit.core.readable.Readable`, so streamed Chinese is joined as the final text is."""
    from transformers import TextStreamer

    streamer = TextStreamer(readable.Readable(tokenizer, streaming=True), skip_prompt=True, skip_special_tokens=True)
    # on_finalized_text is TextStreamer's documented hook (it prints by default); empty pieces are dropped.
    streamer.on_finalized_text = lambda text, stream_end=False: on_text(text) if text else None
    return streamer


def fit_lengths(ids: list[list[int]], config, context: int | None, given: dict[str, Any],
                spelling: Spelling = CLI) -> tuple[list[list[int]], list[Cut]]:
    """A decoder-only model's prompts fitted to its context (None: unknown) and the length settings,
    and the prompts that were cut to fit.

    With max_new_tokens, a prompt too long to leave room for them keeps its last tokens (a
    :class:`Cut` says so, and how many new tokens would keep it whole); with max_length (prompt
    included), no prompt may reach it. Settings the context cannot hold at all are user errors,
    naming the setting and the largest value that fits the prompt.
    """
    if config.max_new_tokens is None:
        check_max_length(ids, config.max_length, context, given, spelling)
        return ids, []
    if context is None:
        return ids, []
    new = config.max_new_tokens
    room = context - new
    if room < 1:
        longest = max(len(row) for row in ids)
        bound = (f"{context - longest} or fewer to keep the whole prompt ({longest} tokens)" if longest < context
                 else f"{context - 1} or fewer")
        raise HftkError(f"{_setting('max_new_tokens', new, given, spelling)} leaves no room for the prompt in the model's "
                        f"context of {context} tokens; give {spelling.max_new_tokens} {bound}")
    cuts = []
    for index, row in enumerate(ids):
        if len(row) > room:
            where = "the prompt" if len(ids) == 1 else f"prompt {index + 1}"
            whole = (f"; {spelling.max_new_tokens} {context - len(row)} or fewer keeps it whole" if len(row) < context
                     else "")
            cuts.append(Cut(index, len(row) - room, room,
                            f"{where} and {new} new tokens do not fit the model's context of {context} tokens: dropped the "
                            f"first {len(row) - room} of its {len(row)} tokens, kept the last {room}{whole}"))
    return [row[-room:] for row in ids], cuts


def check_max_length(ids: list[list[int]], max_length: int, context: int | None, given: dict[str, Any],
                     spelling: Spelling = CLI) -> None:
    """max_length (prompt included) fits the context and leaves room for new tokens after every prompt."""
    setting = _setting("max_length", max_length, given, spelling)
    new = f"{spelling.max_new_tokens} N for N tokens after the prompt"
    if context is not None and max_length > context:
        shorter = f"{spelling.max_length} {context} or less, or " if spelling.max_length else ""
        raise HftkError(f"{setting} is longer than the model's context of {context} tokens; give {shorter}{new}")
    longest = max(range(len(ids)), key=lambda i: len(ids[i]))
    if len(ids[longest]) >= max_length:
        where = "the prompt" if len(ids) == 1 else f"prompt {longest + 1}"
        longer = f"{spelling.max_length} above {len(ids[longest])}, or " if spelling.max_length else ""
        raise HftkError(f"{where} is {len(ids[longest])} tokens, so {setting} (prompt included) leaves no room for new "
                        f"tokens; give {longer}{new}")


def _setting(name: str, value: int, given: dict[str, Any], spelling: Spelling) -> str:
    """How the user set a length: the option (or field), or the model's generation_config.json."""
    option = getattr(spelling, name) or spelling.max_new_tokens
    return f"{option} {value}" if name in given else f"{name} {value} (the model's generation_config.json; {option} overrides it)"


def prepare(reference: str, prompts: list[str], options: dict[str, Any], *,
            seed: int | None = None) -> tuple[Generator, Prepared]:
    """``hftk generate``'s request: the run loaded and the prompts prepared; a prompt cut to fit is said on stderr.

    User mistakes in the options are found before the weights load.
    """
    if not prompts:
        raise HftkError("no prompts: give --prompt TEXT (repeatable) or --prompts-file FILE")
    check_options({k: v for k, v in options.items() if v is not None})
    generator = Generator(rundir.open_run(reference))
    request = generator.prepare(prompts, options, seed=seed)
    for cut in request.cuts:
        print(f"hftk: warning: {cut.message}", file=sys.stderr)
    return generator, request
