"""``hftk generate``: batched text generation from a run directory, a local model or a hub id.

Decoding settings start from the model's own ``generation_config.json`` (which ``hftk finetune``
writes from the recipe's ``generation`` section) and are overridden by the options a user
passes. Decoder-only models are batched with left padding so every prompt ends right where its
continuation starts; results hold the continuation only, never the prompt. A single prompt can
stream its text as it is produced (its prompt first, when the output continues it).

Every prompt is checked against the lengths asked for before anything is generated or streamed
(:func:`fit_lengths`): for a decoder-only model, an empty prompt starts from the tokenizer's BOS
token, a prompt too long for the model's context keeps its last tokens (leaving room for the new
ones, said on stderr), and lengths the context cannot hold, or a ``max_length`` a prompt already
fills, are user errors naming the option to change.

A run whose task encodes its inputs (summarization/translation: ``data.source_prefix``,
``data.prompt_template``, source truncation) gets each prompt encoded the same way
(``Task.encode_prompts``); an encoder-decoder pair's decoder tokenizer decodes the output
(:func:`hf_toolkit.core.rundir.output_tokenizer`). ``hftk eval --model`` generates through
:class:`Generator` too.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hf_toolkit.core import modeling, rundir
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


@dataclass
class Generated:
    prompt: str
    text: str
    continues_prompt: bool = True  # False for summaries/translations: the text stands on its own


def generation_config(model, tokenizer, options: dict[str, Any], *, base=None):
    """The model's generation config (or `base`) updated with the user's options (None means 'not given')."""
    import copy

    config = copy.deepcopy(base if base is not None else model.generation_config)
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
    """A loaded generative model with the encoding of its run: prompts in, texts out."""

    def __init__(self, run: Run):
        config = rundir.load_config(run)
        task = rundir.task_name(run, config)
        if task is not None and TASKS[task].predicts:
            raise HftkError(f"{run.reference} is a {task} model: it predicts rather than generates text; "
                            f"use hftk predict --model {run.reference} (see hftk predict --help)")
        self.run, self.recipe = run, run.recipe
        self.task: Task | None = TASKS[task] if run.recipe is not None else None
        self.model, self.tokenizer = rundir.load_model(run, config)
        if not self.model.config.is_encoder_decoder:
            self.tokenizer.padding_side = "left"
        self.writer = rundir.output_tokenizer(run, self.tokenizer)
        # Each call starts from the run's own decoding settings, not from the previous call's.
        self.defaults = copy.deepcopy(self._target().generation_config)

    @property
    def continues_prompt(self) -> bool:
        """Whether an output continues its prompt's text (a language model) or answers it."""
        if self.task is not None:
            return self.task.continues_prompt
        return not self.model.config.is_encoder_decoder

    def encode(self, prompts: list[str]) -> list[list[int]]:
        """Input ids of every prompt as the run's training encoded its inputs, not yet fitted to any length."""
        return (self.task.encode_prompts(self.recipe, self.tokenizer, self.model, prompts) if self.task is not None
                else self.tokenizer(prompts)["input_ids"])

    def prompt_ids(self, prompts: list[str], config, given: dict[str, Any]) -> list[list[int]]:
        """Input ids of every prompt, encoded as the run's training encoded its inputs, and checked
        against the lengths asked for before anything is generated (see :func:`fit_lengths`)."""
        ids = self.encode(prompts)
        if self.model.config.is_encoder_decoder:
            return ids  # the encoder's input: the decoder starts on its own, the task truncates sources
        ids = [row or self.start_ids() for row in ids]
        return fit_lengths(ids, config, modeling.context_length(self.model.config), given)

    def start_ids(self) -> list[int]:
        """What an empty prompt generates from: the tokenizer's BOS token."""
        if self.tokenizer.bos_token_id is None:
            raise HftkError(f"an empty prompt starts generating from a BOS token, and {self.run.reference}'s tokenizer "
                            "has none; give a prompt of at least one word")
        return [self.tokenizer.bos_token_id]

    def configure(self, options: dict[str, Any]):
        """The generation config of `options`, set on the model (see :func:`generation_config`)."""
        # The model carries the settings itself: a config passed to generate() would have its unset
        # fields (max_new_tokens=None under --max-length) filled back in from the model's.
        config = generation_config(self.model, self.tokenizer, options, base=self.defaults)
        self._target().generation_config = config
        return config

    def _target(self):
        """The model whose generation config generate() reads (a PeftModel generates with its base model's)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def generate(self, prompts: list[str], options: dict[str, Any], *, seed: int | None = None, batch_size: int = 8,
                 on_text: Callable[[str], None] | None = None) -> list[Generated]:
        """`num_return_sequences` results per prompt, in prompt order (see :func:`generate`)."""
        import torch
        from transformers import set_seed

        config = self.configure(options)
        ids = self.prompt_ids(prompts, config, {k: v for k, v in options.items() if v is not None})
        if seed is not None:
            set_seed(seed)
        per_prompt = config.num_return_sequences or 1
        continues = self.continues_prompt
        streamer = None
        if on_text is not None and len(prompts) == 1 and (config.num_beams or 1) == 1 and per_prompt == 1:
            streamer = _CallbackStreamer(self.writer, on_text)
            if continues:
                on_text(prompts[0])
        results: list[Generated] = []
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            inputs = self.tokenizer.pad({"input_ids": ids[start : start + batch_size]}, return_tensors="pt", padding=True)
            with torch.inference_mode():
                output = self.model.generate(**inputs.to(self.model.device), streamer=streamer)
            if not self.model.config.is_encoder_decoder:
                output = output[:, inputs["input_ids"].shape[1] :]
            texts = self.writer.batch_decode(output, skip_special_tokens=True)
            results += [Generated(batch[i // per_prompt], text, continues) for i, text in enumerate(texts)]
        return results


def fit_lengths(ids: list[list[int]], config, context: int | None, given: dict[str, Any]) -> list[list[int]]:
    """A decoder-only model's prompts fitted to its context (None: unknown) and the length settings.

    With max_new_tokens, a prompt too long to leave room for them keeps its last tokens (said on
    stderr); with max_length (prompt included), no prompt may reach it. Settings the context
    cannot hold at all are user errors, naming the option that sets them.
    """
    if config.max_new_tokens is None:
        check_max_length(ids, config.max_length, context, given)
        return ids
    if context is None:
        return ids
    room = context - config.max_new_tokens
    if room < 1:
        raise HftkError(f"{_setting('max_new_tokens', config.max_new_tokens, given)} leaves no room for the prompt in "
                        f"the model's context of {context} tokens; give --max-new-tokens {context - 1} or fewer")
    for number, row in enumerate(ids, 1):
        if len(row) > room:
            where = "the prompt" if len(ids) == 1 else f"prompt {number}"
            _warn(f"{where} and {config.max_new_tokens} new tokens do not fit the model's context of {context} tokens: "
                  f"dropped the first {len(row) - room} of its {len(row)} tokens, kept the last {room}")
    return [row[-room:] for row in ids]


def check_max_length(ids: list[list[int]], max_length: int, context: int | None, given: dict[str, Any]) -> None:
    """max_length (prompt included) fits the context and leaves room for new tokens after every prompt."""
    setting = _setting("max_length", max_length, given)
    if context is not None and max_length > context:
        raise HftkError(f"{setting} is longer than the model's context of {context} tokens; "
                        f"give --max-length {context} or less, or --max-new-tokens")
    longest = max(range(len(ids)), key=lambda i: len(ids[i]))
    if len(ids[longest]) >= max_length:
        where = "the prompt" if len(ids) == 1 else f"prompt {longest + 1}"
        raise HftkError(f"{where} is {len(ids[longest])} tokens, so {setting} (prompt included) leaves no room for new "
                        f"tokens; give --max-length above {len(ids[longest])}, or --max-new-tokens N for N tokens after the prompt")


def _setting(name: str, value: int, given: dict[str, Any]) -> str:
    """How the user set a length: the option, or the model's generation_config.json."""
    option = "--" + name.replace("_", "-")
    return f"{option} {value}" if name in given else f"{name} {value} (the model's generation_config.json; {option} overrides it)"


def _warn(message: str) -> None:
    """A note on stderr: the prompts were changed to fit, and generation goes on."""
    print(f"hftk: warning: {message}", file=sys.stderr)


def generate(
    reference: str,
    prompts: list[str],
    options: dict[str, Any],
    *,
    seed: int | None = None,
    batch_size: int = 8,
    on_text: Callable[[str], None] | None = None,
) -> list[Generated]:
    """Generate for every prompt; `num_return_sequences` results per prompt, in prompt order.

    `on_text` receives text as it is produced (single prompt, single sequence, no beams only).
    """
    if not prompts:
        raise HftkError("no prompts: give --prompt TEXT (repeatable) or --prompts-file FILE")
    check_options({k: v for k, v in options.items() if v is not None})
    run = rundir.open_run(reference)
    return Generator(run).generate(prompts, options, seed=seed, batch_size=batch_size, on_text=on_text)


class _CallbackStreamer:
    """Adapts transformers' TextStreamer to a callback (imported lazily with transformers)."""

    def __new__(cls, tokenizer, on_text: Callable[[str], None]):
        from transformers import TextStreamer

        class Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                on_text(text + ("\n" if stream_end else ""))

        return Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
