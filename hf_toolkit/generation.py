"""``hftk generate``: batched text generation from a run directory, a local model or a hub id.

Decoding settings start from the model's own ``generation_config.json`` (which ``hftk finetune``
writes from the recipe's ``generation`` section) and are overridden by the options a user
passes. Decoder-only models are batched with left padding so every prompt ends right where its
continuation starts; results hold the continuation only, never the prompt. A single prompt can
stream its text as it is produced.

A run directory trained by a task that encodes its inputs (summarization/translation:
``data.source_prefix``, ``data.prompt_template``, source truncation) gets each prompt encoded the
same way, read from the saved recipe; an encoder-decoder pair's decoder tokenizer
(``decoder_tokenizer/``) decodes the output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hf_toolkit import modeling
from hf_toolkit.errors import HftkError

if TYPE_CHECKING:
    from hf_toolkit.recipe import Recipe

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


def load_generator(reference: str):
    """(model, tokenizer) ready for generation; seq2seq or causal picked from the model config."""
    modeling.locate(reference, "model")  # fail fast on a missing dir or unreachable hub, before importing transformers
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    config = modeling.load_config(reference)
    task = modeling.prediction_head(config)
    if task is not None:
        raise HftkError(f"{reference} is a {task} model: it predicts rather than generates text; "
                        f"use hftk predict --model {reference} (see hftk predict --help)")
    auto_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = modeling.load_model_dir(auto_class, reference)
    tokenizer = modeling.from_pretrained(AutoTokenizer, reference, "tokenizer")
    modeling.ensure_pad_token(tokenizer)
    if not config.is_encoder_decoder:
        tokenizer.padding_side = "left"
    model.eval()
    return model, tokenizer


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

    from hf_toolkit.recipe import GenerationSection

    if "max_length" in given and "max_new_tokens" in given:
        raise HftkError("give --max-new-tokens or --max-length, not both")
    try:
        GenerationSection(**{k: v for k, v in given.items() if k in GenerationSection.model_fields})
    except ValidationError as error:
        first = error.errors()[0]
        raise HftkError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']} (got {first['input']!r})") from None
    if given.get("do_sample") is False and any(k in given for k in ("temperature", "top_k", "top_p")):
        raise HftkError("--temperature, --top-k and --top-p shape sampling; drop them or use --do-sample instead of --greedy")


def generate(
    reference: str,
    prompts: list[str],
    options: dict[str, Any],
    *,
    seed: int | None = None,
    batch_size: int = 8,
    on_text: Callable[[str], None] | None = None,
    recipe: "Recipe | None" = None,
) -> list[Generated]:
    """Generate for every prompt; `num_return_sequences` results per prompt, in prompt order.

    `on_text` receives text as it is produced (single prompt, single sequence, no beams only).
    `recipe` (default: the one saved in a run directory) says how the run encodes its prompts.
    """
    if not prompts:
        raise HftkError("no prompts: give --prompt TEXT (repeatable) or --prompts-file FILE")
    check_options({k: v for k, v in options.items() if v is not None})
    model, tokenizer = load_generator(reference)
    import torch
    from transformers import set_seed

    encode, continues = prompt_encoder(reference, model, tokenizer, recipe)
    writer = output_tokenizer(reference, tokenizer)
    # The model carries the settings itself: a config passed to generate() would have its unset
    # fields (max_new_tokens=None under --max-length) filled back in from the model's.
    config = generation_config(model, tokenizer, options)
    modeling.set_generation_config(model, config)
    if seed is not None:
        set_seed(seed)
    per_prompt = config.num_return_sequences or 1
    streamer = None
    if on_text is not None and len(prompts) == 1 and (config.num_beams or 1) == 1 and per_prompt == 1:
        streamer = _CallbackStreamer(writer, on_text)
        if continues:
            on_text(prompts[0])

    results: list[Generated] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        inputs = encode(batch)
        with torch.inference_mode():
            output = model.generate(**inputs, streamer=streamer)
        if not model.config.is_encoder_decoder:
            output = output[:, inputs["input_ids"].shape[1] :]
        texts = writer.batch_decode(output, skip_special_tokens=True)
        results += [Generated(batch[i // per_prompt], text, continues) for i, text in enumerate(texts)]
    return results


def read_run_recipe(reference, overrides: Sequence[str] = ()) -> "Recipe | None":
    """The recipe saved in a run directory (``hftk_recipe.yaml``), or None for other models.

    Read as saved, without validating it again: its data files and local model paths were
    relative to wherever training ran and need not exist here. ``overrides`` (``--set k=v``)
    are applied first; their keys are checked against the schema.
    """
    import yaml

    from hf_toolkit.recipe import DataSection, ModelSection, Recipe, apply_override, check_override_key, looks_local, resolve_path
    from hf_toolkit.train import RECIPE_FILE

    if not looks_local(str(reference)):
        return None
    path = resolve_path(str(reference)) / RECIPE_FILE
    if not path.is_file():
        return None
    saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    for assignment in overrides:
        check_override_key(apply_override(saved, assignment), assignment)
    return Recipe.model_construct(
        **{**saved, "model": ModelSection.model_construct(**saved["model"]), "data": DataSection.model_construct(**saved["data"])}
    )


def prompt_encoder(reference: str, model, tokenizer, recipe: "Recipe | None" = None) -> tuple[Callable[[list[str]], Any], bool]:
    """(prompts -> padded input tensors, whether the output continues the prompt's text).

    A run whose task encodes its inputs (prefix, prompt template, truncation) gets them encoded
    exactly as in training (the task's ``encode_prompts``); its output then answers the prompt
    rather than continuing it, as does every encoder-decoder model's.
    """
    from hf_toolkit.tasks import TASKS

    recipe = recipe if recipe is not None else read_run_recipe(reference)
    task = TASKS[recipe.task] if recipe is not None and recipe.task in TASKS else None
    if task is None or not hasattr(task, "encode_prompts"):
        encode = lambda batch: tokenizer(batch, return_tensors="pt", padding=True)  # noqa: E731
        return encode, not model.config.is_encoder_decoder
    return lambda batch: tokenizer.pad(
        {"input_ids": task.encode_prompts(recipe, tokenizer, model, batch)}, return_tensors="pt", padding=True
    ), False


def output_tokenizer(reference: str, tokenizer):
    """The tokenizer that decodes outputs: an encoder-decoder pair's own decoder tokenizer when saved."""
    from hf_toolkit.recipe import looks_local, resolve_path
    from hf_toolkit.tasks.seq2seq import DECODER_TOKENIZER_DIR

    if looks_local(str(reference)) and (resolve_path(str(reference)) / DECODER_TOKENIZER_DIR).is_dir():
        from transformers import AutoTokenizer

        writer = AutoTokenizer.from_pretrained(str(resolve_path(str(reference)) / DECODER_TOKENIZER_DIR))
        modeling.ensure_pad_token(writer)
        return writer
    return tokenizer


class _CallbackStreamer:
    """Adapts transformers' TextStreamer to a callback (imported lazily with transformers)."""

    def __new__(cls, tokenizer, on_text: Callable[[str], None]):
        from transformers import TextStreamer

        class Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                on_text(text + ("\n" if stream_end else ""))

        return Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
