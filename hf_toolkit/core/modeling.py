"""Building models and tokenizers from a recipe's ``model`` section (for training, and the
loaders inference shares): from a hub id, a local directory, or from a config (``init: scratch``);
checking a recipe's config overrides; LoRA adapters; what a model is (its size, its base under a
PEFT wrapper).

Hub ids go through :mod:`hf_toolkit.core.hub`, which fails fast and clearly without a network.
Trained models are loaded back by :mod:`hf_toolkit.core.rundir`, which uses :func:`from_pretrained`.

Also here: training a small byte-level BPE tokenizer for from-scratch runs, giving GPT-2-style
tokenizers a pad token (their EOS), which batching and sequence classification need, and
:func:`config_dims` (with :func:`context_length`), the one place that reads a model's shape (layers,
width, heads, feed-forward width, vocabulary, context size) from its config, and
:func:`unknown_token_warning`, when a vocabulary turns much of the training text into its unknown token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_toolkit.core import hub
from hf_toolkit.errors import HftkError, ModelLoadError, Problem, did_you_mean
from hf_toolkit.recipe.paths import looks_local, resolve_path
from hf_toolkit.recipe.schema import ModelPart, ModelSection, PeftSection

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SPECIAL_TOKEN = "<|endoftext|>"


# --------------------------------------------------------------------------------------------
# Loading


def locate(reference: str, what: str) -> tuple[str, bool]:
    """(path or hub id to load, whether to load from the local cache only).

    Fails fast on a missing local path, or on a hub id that the offline hub cannot serve.
    """
    if looks_local(reference):
        path = resolve_path(reference)
        if not path.exists():
            raise ModelLoadError(f"{what} '{reference}' is not a directory or file (looked at {path.absolute()})")
        return str(path.resolve()), False
    return reference, hub.require(reference, what)


# Files without which a local directory cannot give a config, or a tokenizer.
_CONFIG_FILES = ("config.json", "adapter_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")


def from_pretrained(loader: Any, reference: str, what: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` on a local path or hub id, with clear errors when offline."""
    location, cache_only = locate(reference, what)
    expected = _TOKENIZER_FILES if what.endswith("tokenizer") else _CONFIG_FILES
    if Path(location).is_dir() and not any((Path(location) / name).is_file() for name in expected):
        raise ModelLoadError(f"cannot load {what} from '{reference}': the directory has none of {', '.join(expected)}; "
                             "give a directory written by save_pretrained (or hftk finetune)")
    try:
        return loader.from_pretrained(location, local_files_only=cache_only, **kwargs)
    except OSError:
        if not cache_only:
            raise
        raise ModelLoadError(hub.unreachable_message(reference, what)) from None


@dataclass(frozen=True)
class Dims:
    """A transformer's shape as its config states it (0: the config does not say)."""

    layers: int  # transformer layers, encoder and decoder together
    hidden: int  # width (of the wider stack of an encoder-decoder pair)
    heads: int  # attention heads per layer (the larger count of a pair)
    ffn: int  # feed-forward inner width
    vocab: int  # output vocabulary (the decoder's)
    positions: int | None  # longest input in tokens (:func:`context_length`; None: the config names none)


# The feed-forward width has no name transformers maps for every model: BERT/Llama, GPT-2, T5, BART.
FFN_NAMES = ("intermediate_size", "n_inner", "d_ff", "encoder_ffn_dim")


def config_dims(config: Any) -> Dims:
    """The :class:`Dims` of any transformers config.

    Layers, width and heads are read by transformers' own names (``num_hidden_layers``,
    ``hidden_size``, ``num_attention_heads``), which each config's ``attribute_map`` points at its
    own fields: GPT-2's ``n_layer``/``n_embd``/``n_head``, T5's ``num_layers``/``d_model``/``num_heads``,
    BART's ``encoder_layers``/``d_model``/``encoder_attention_heads``. The feed-forward width has no
    such alias (:data:`FFN_NAMES`; GPT-2's ``n_inner`` None means 4 x width). An encoder-decoder counts
    both stacks: an ``EncoderDecoderConfig``'s two configs, or a T5/BART config's decoder layers.
    """
    parts = [config.encoder, config.decoder] if hasattr(config, "encoder") and hasattr(config, "decoder") else [config]
    layers = hidden = heads = ffn = 0
    for part in parts:
        own_layers, width = _count(part, "num_hidden_layers"), _count(part, "hidden_size")
        layers += own_layers
        if getattr(part, "is_encoder_decoder", False):
            layers += _count(part, "num_decoder_layers") or _count(part, "decoder_layers") or own_layers
        hidden, heads = max(hidden, width), max(heads, _count(part, "num_attention_heads"))
        inner = next((_count(part, name) for name in FFN_NAMES if _count(part, name)), 0)
        ffn = max(ffn, inner or (4 * width if hasattr(part, "n_inner") else 0))
    return Dims(layers, hidden, heads, ffn, _count(parts[-1], "vocab_size"), context_length(config))


def _count(config: Any, name: str) -> int:
    value = getattr(config, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def context_length(config: Any) -> int | None:
    """The longest input the model takes, in tokens, from its config (None when it names none)."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


# --------------------------------------------------------------------------------------------
# Tokenizers


def load_tokenizer(section: ModelSection, train_texts: Iterable[str] | None = None) -> "PreTrainedTokenizerBase":
    """The recipe's tokenizer: loaded, or trained on `train_texts` when ``train_tokenizer`` is set."""
    from transformers import AutoTokenizer

    if section.train_tokenizer is not None:
        if train_texts is None:
            raise ValueError("train_tokenizer needs the training texts")
        tokenizer = train_bpe_tokenizer(
            train_texts, vocab_size=section.train_tokenizer.vocab_size, min_frequency=section.train_tokenizer.min_frequency
        )
    else:
        reference = section.tokenizer or section.name_or_path
        assert reference is not None  # the recipe schema guarantees one of them
        tokenizer = from_pretrained(AutoTokenizer, reference, "tokenizer", trust_remote_code=section.trust_remote_code)
    ensure_pad_token(tokenizer)
    return tokenizer


def load_tokenizer_from(reference: str) -> "PreTrainedTokenizerBase":
    """A tokenizer from a hub id or local directory, with a pad token."""
    from transformers import AutoTokenizer

    tokenizer = from_pretrained(AutoTokenizer, reference, "tokenizer")
    ensure_pad_token(tokenizer)
    return tokenizer


def train_bpe_tokenizer(texts: Iterable[str], *, vocab_size: int, min_frequency: int) -> "PreTrainedTokenizerBase":
    """A GPT-2-style byte-level BPE tokenizer trained on `texts`, with <|endoftext|> as BOS/EOS/UNK."""
    from tokenizers import ByteLevelBPETokenizer, Tokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    # show_progress=False: off a terminal, the trainer's bars print only blank lines to stdout.
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[SPECIAL_TOKEN],
                            show_progress=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(bpe.to_str()),
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
    )


# A vocabulary that maps more of the training tokens than this to its unknown token does not fit the
# text (bert-base-uncased's on ChnSentiCorp reviews: 64.6%); bert-base-chinese on the Tang poems, with
# their rare characters, maps 2.2% (measured on the first 1,000 of each).
UNKNOWN_SHARE_WARNING = 0.05
UNKNOWN_SAMPLE = 1000  # texts tokenized to measure it


def unknown_token_warning(tokenizer: "PreTrainedTokenizerBase", texts: Iterable[str]) -> str | None:
    """A warning when more than 5% of the tokens of (the first 1,000 of) `texts` are the unknown token,
    with the share and the first text that became it; None when the vocabulary fits."""
    import itertools

    unknown = tokenizer.unk_token_id
    sample = [text for text in itertools.islice(texts, UNKNOWN_SAMPLE) if isinstance(text, str) and text]
    if unknown is None or not sample:
        return None
    fast = getattr(tokenizer, "is_fast", False)
    encoded = tokenizer(sample, add_special_tokens=False, return_offsets_mapping=fast, verbose=False)
    total = sum(len(ids) for ids in encoded["input_ids"])
    count = sum(ids.count(unknown) for ids in encoded["input_ids"])
    if not total or count / total <= UNKNOWN_SHARE_WARNING:
        return None
    row = next(i for i, ids in enumerate(encoded["input_ids"]) if unknown in ids)
    text = sample[row]
    if fast:
        start, end = encoded["offset_mapping"][row][encoded["input_ids"][row].index(unknown)]
        example = f"{text[start:end]!r} in {text[max(0, start - 12):end + 12]!r}"
    else:
        example = f"one in {text[:40]!r}"
    return (f"{count / total:.1%} of the training tokens ({count:,} of {total:,} in the first {len(sample):,} texts) are the "
            f"unknown token {tokenizer.unk_token}: the vocabulary of {type(tokenizer).__name__} does not cover this text "
            f"(e.g. {example} becomes {tokenizer.unk_token}); the model cannot read what it cannot see: use a tokenizer "
            "made for the language (e.g. bert-base-chinese for Chinese), or train one (model.train_tokenizer)")


def ensure_pad_token(tokenizer: "PreTrainedTokenizerBase") -> None:
    """GPT-2 has no pad token: pad with EOS (padding positions are masked out of the loss)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError("the tokenizer has neither a pad token nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token


# --------------------------------------------------------------------------------------------
# Models


def load_model(auto_class: Any, section: ModelSection, tokenizer: "PreTrainedTokenizerBase", **config_kwargs: Any) -> "PreTrainedModel":
    """A model of `auto_class` (e.g. AutoModelForCausalLM): pretrained weights, or built from a config.

    `config_kwargs` are task settings (e.g. ``num_labels``) applied on top of ``model.config``.
    """
    config = build_config(section, tokenizer, **config_kwargs)
    implementation = getattr(section, "attn_implementation", None)  # a pair's sides (ModelPart) keep the default
    attention = {"attn_implementation": implementation} if implementation else {}
    if section.init == "scratch":
        model = auto_class.from_config(config, **attention)
    else:
        # Safetensors only, unless the recipe opts in to pickle weights (which can run code when loaded).
        model = from_pretrained(auto_class, section.name_or_path, "model", config=config, trust_remote_code=section.trust_remote_code,
                                use_safetensors=None if section.allow_pickle else True, **attention)
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:  # encoder-only heads have none
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def base_config(section: ModelSection | ModelPart, key: str = "model") -> Any:
    """The checkpoint's config, or a fresh one of ``config.model_type`` (no overrides, no weights).

    ``key`` names the section in messages (``model``, ``model.encoder``, ``model.decoder``).
    """
    from transformers import CONFIG_MAPPING, AutoConfig

    if section.name_or_path is not None:
        return from_pretrained(AutoConfig, section.name_or_path, "model config", trust_remote_code=section.trust_remote_code)
    model_type = section.config["model_type"]
    if model_type not in CONFIG_MAPPING:
        raise UnknownModelType(Problem((*key.split("."), "config", "model_type"),
                                       f"unknown model type '{model_type}'{did_you_mean(model_type, CONFIG_MAPPING.keys())}"))
    return AutoConfig.for_model(model_type)


class UnknownModelType(HftkError):
    """``config.model_type`` names no transformers model; ``problem`` says where."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


# Settings a config takes that its to_dict() leaves out: num_labels builds id2label (the transformers
# docs set it so, and users copy it from there); tasks check it against their data.
DERIVED_SETTINGS = frozenset({"num_labels"})


def override_problems(config: Any, overrides: dict[str, Any], key: str) -> list[Problem]:
    """Overrides that are not settings of `config`, or whose value has the wrong type.

    A setting's type is its default's kind: a number for numbers (ints and floats alike: many
    configs write 0 or 4 as the default of a rate or ratio that takes 0.1 or 2.5), true/false for
    flags, text for text, lists and mappings for those. ``key`` is the recipe key
    (``model.config``, ``model.encoder.config``) the problems are reported under.
    """
    known = set(config.to_dict()) | set(getattr(config, "attribute_map", {})) | DERIVED_SETTINGS
    problems = []
    for name, value in overrides.items():
        if name == "model_type":
            continue
        if name not in known:
            problems.append(Problem((*key.split("."), name), f"not a setting of {type(config).__name__}{did_you_mean(name, known)}"))
        elif (expected := _expected_type(getattr(config, name, None), value)) is not None:
            problems.append(Problem((*key.split("."), name), f"expected {expected} like {type(config).__name__}'s default "
                                                            f"{getattr(config, name)!r} (got {value!r})"))
    return problems


def _expected_type(default: Any, value: Any) -> str | None:
    """What `value` should be, judged by the setting's `default`; None when it fits (or cannot be told)."""
    if default is None or value is None:
        return None
    kinds = (
        (bool, (bool,), "true or false"),
        ((int, float), (int, float), "a number"),
        (str, (str,), "text"),
        ((list, tuple), (list, tuple), "a list"),
        (dict, (dict,), "a mapping"),
    )
    for default_types, accepted, name in kinds:
        if isinstance(default, default_types):
            fits = isinstance(value, accepted) and (default_types is bool or not isinstance(value, bool))
            return None if fits else name
    return None


def config_problems(section: ModelSection, auto_class: Any) -> list[Problem]:
    """Recipe-time check of ``model.config`` (or each side's, for a pair) against the model's config class.

    Overrides must be settings of the config class with values of the right kind; then the model
    is built from the config on the meta device (no memory, no weights), so values that break the
    model's own rules (``hidden_size`` not a multiple of ``num_attention_heads``) are found here
    rather than after the data has loaded; and the config class's own validators run, which
    ``save_pretrained`` would otherwise run only after training (a checkpoint's ``layer_types``, one
    entry per layer, against an overridden ``num_hidden_layers``). Loads only configs: a hub id that cannot be reached
    fails fast. `auto_class` builds a single model; a pair's sides build as encoder and decoder.
    """
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoModel, AutoModelForCausalLM

    problems = []
    for key, part in section.parts():
        if not part.config:
            continue
        try:
            config = base_config(part, key)
        except UnknownModelType as error:
            problems.append(error.problem)
            continue
        found = override_problems(config, part.config, f"{key}.config")
        if not found:
            builder = auto_class if key == "model" else AutoModel if key == "model.encoder" else AutoModelForCausalLM
            try:
                configured = _with_overrides(config, part.config, part)
                if hasattr(configured, "validate"):  # transformers 5's strict dataclass configs
                    configured.validate()
            except StrictDataclassError as error:
                found = [_disagreement(error, part, f"{key}.config")]
            else:
                found = _build_problems(builder, configured, f"{key}.config")
        problems += found
    return problems


def _disagreement(error: Exception, part: ModelSection | ModelPart, key: str) -> Problem:
    """A config validator's objection to the overrides, with what to set (transformers' message is its last line)."""
    cause = str(error).strip().splitlines()[-1].strip().removeprefix("ValueError: ")
    saved = "the checkpoint's config.json sets the other one; " if part.name_or_path is not None else ""
    example = " (layer_types: one entry per layer)" if "layer_types" in cause else ""
    return Problem(tuple(key.split(".")), f"{cause}: {saved}set both in {key}{example}, "
                                          "or the run would train and then fail to save its config")


def _build_problems(auto_class: Any, config: Any, key: str) -> list[Problem]:
    """The model's own objection to `config`, from building it on the meta device."""
    import torch

    try:
        with torch.device("meta"):
            auto_class.from_config(config)
    except ValueError as error:  # transformers' models reject impossible shapes with ValueError
        return [Problem(tuple(key.split(".")), f"{error} (the model cannot be built from these settings)")]
    return []


def _with_overrides(config: Any, overrides: dict[str, Any], section: ModelSection | ModelPart) -> Any:
    """`config` with `overrides` set. A fresh config (``init: scratch`` from a model type) is built anew
    with them as arguments, so settings the class derives from others are derived from the overrides:
    ModernBERT's ``layer_types`` has one entry per layer, and setting ``num_hidden_layers`` on a built
    config leaves it at the default's 22, which ``save_pretrained`` then refuses after training."""
    settings = {name: value for name, value in overrides.items() if name != "model_type"}
    if section.name_or_path is None:
        return type(config)(**settings)
    for name, value in settings.items():
        setattr(config, name, value)
    return config


def build_config(section: ModelSection | ModelPart, tokenizer: "PreTrainedTokenizerBase", **config_kwargs: Any) -> Any:
    """The model config: the checkpoint's (or a fresh one of config.model_type) plus overrides.

    The overrides were checked with the recipe (:func:`config_problems`).
    """
    config = _with_overrides(base_config(section), {**section.config, **config_kwargs}, section)
    if section.init == "scratch":
        config.vocab_size = len(tokenizer)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            token_id = getattr(tokenizer, name)
            if token_id is not None:
                setattr(config, name, token_id)
    return config


def parameter_counts(model: Any) -> dict[str, int]:
    """{'total': parameters, 'trainable': those with requires_grad} of a model (a PEFT model counts its base)."""
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def base_model(model: Any) -> Any:
    """The model a PEFT wrapper (LoRA) wraps; any other model itself."""
    return model.get_base_model() if is_peft(model) else model


def is_peft(model: Any) -> bool:
    """True for a PEFT-wrapped model (``PeftModel``)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def describe(model: "PreTrainedModel") -> str:
    """'GPT2LMHeadModel: 1.2M parameters (1.2M trainable)'."""
    counts = parameter_counts(model)
    total, trainable = counts["total"], counts["trainable"]
    return f"{type(model).__name__}: {_millions(total)} parameters ({_millions(trainable)} trainable, {100 * trainable / max(total, 1):.2f}%)"


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


# --------------------------------------------------------------------------------------------
# LoRA

# Where peft's own per-architecture table has no entry (or a narrower one), ours applies.
LORA_TARGETS = {
    "gpt2": ["c_attn", "c_proj"],
    "marian": ["q_proj", "v_proj"],
    "distilbert": ["q_lin", "v_lin"],
}


def apply_lora(model: "PreTrainedModel", section: PeftSection, task_type: str | None) -> "PreTrainedModel":
    """Wrap `model` with LoRA adapters; task heads (classifier, qa_outputs) stay fully trainable.

    `task_type` is peft's TaskType name (CAUSAL_LM, SEQ_CLS, QUESTION_ANS, SEQ_2_SEQ_LM) or None.
    GPT-2's Conv1D layers store weights transposed, so they get ``fan_in_fan_out``.
    """
    from peft import LoraConfig, get_peft_model
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS
    from transformers.pytorch_utils import Conv1D

    model_type = model.config.model_type
    targets = section.target_modules or LORA_TARGETS.get(model_type) or PEFT_TARGETS.get(model_type)
    leaves = {name.rsplit(".", 1)[-1]: module for name, module in model.named_modules() if name}
    linear = sorted({name for name, module in leaves.items() if type(module).__name__ in ("Linear", "Conv1D")})
    if not targets:
        raise HftkError(
            f"peft.target_modules: no default LoRA targets for model type '{model_type}'; "
            f"list module names, e.g. peft.target_modules: {linear[:4]}"
        )
    missing = [t for t in targets if t not in leaves]
    if missing:
        raise HftkError(
            f"peft.target_modules: {missing} not found in {type(model).__name__}"
            f"{did_you_mean(missing[0], linear)}; its linear layers are: {', '.join(linear)}"
        )
    config = LoraConfig(
        r=section.r,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        target_modules=list(targets),
        fan_in_fan_out=any(isinstance(leaves[t], Conv1D) for t in targets),
        task_type=task_type,
    )
    return get_peft_model(model, config)
