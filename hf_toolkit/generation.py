"""``hftk generate``: batched text generation from a run directory, a local model or a hub id.

Decoding settings start from the model's own ``generation_config.json`` (which ``hftk finetune``
writes from the recipe's ``generation`` section) and are overridden by the options a user
passes. Decoder-only models are batched with left padding so every prompt ends right where its
continuation starts; results hold the continuation only, never the prompt. A single prompt can
stream its text as it is produced.

A run whose task encodes its inputs (summarization/translation: ``data.source_prefix``,
``data.prompt_template``, source truncation) gets each prompt encoded the same way
(``Task.encode_prompts``); an encoder-decoder pair's decoder tokenizer decodes the output
(:func:`hf_toolkit.rundir.output_tokenizer`). ``hftk eval --model`` generates through
:class:`Generator` too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hf_toolkit import rundir
from hf_toolkit.errors import HftkError
from hf_toolkit.tasks import TASKS
from hf_toolkit.tasks.base import Task

if TYPE_CHECKING:
    from hf_toolkit.rundir import Run

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


def generation_config(model, tokenizer, options: dict[str, Any]):
    """The model's generation config updated with the user's options (None means 'not given')."""
    import copy

    config = copy.deepcopy(model.generation_config)
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

    def __init__(self, run: "Run"):
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

    @property
    def continues_prompt(self) -> bool:
        """Whether an output continues its prompt's text (a language model) or answers it."""
        if self.task is not None:
            return self.task.continues_prompt
        return not self.model.config.is_encoder_decoder

    def encode(self, prompts: list[str]):
        """Padded input tensors for `prompts`, encoded as the run's training encoded its inputs."""
        ids = (self.task.encode_prompts(self.recipe, self.tokenizer, self.model, prompts) if self.task is not None
               else self.tokenizer(prompts)["input_ids"])
        return self.tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True).to(self.model.device)

    def generate(self, prompts: list[str], options: dict[str, Any], *, seed: int | None = None, batch_size: int = 8,
                 on_text: Callable[[str], None] | None = None) -> list[Generated]:
        """`num_return_sequences` results per prompt, in prompt order (see :func:`generate`)."""
        import torch
        from transformers import set_seed

        # The model carries the settings itself: a config passed to generate() would have its unset
        # fields (max_new_tokens=None under --max-length) filled back in from the model's.
        config = generation_config(self.model, self.tokenizer, options)
        target = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        target.generation_config = config  # a PeftModel generates with its base model's config
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
            inputs = self.encode(batch)
            with torch.inference_mode():
                output = self.model.generate(**inputs, streamer=streamer)
            if not self.model.config.is_encoder_decoder:
                output = output[:, inputs["input_ids"].shape[1] :]
            texts = self.writer.batch_decode(output, skip_special_tokens=True)
            results += [Generated(batch[i // per_prompt], text, continues) for i, text in enumerate(texts)]
        return results


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
