"""Models and tokenizers: from a hub id, a local directory, or built from a config (``init: scratch``).

Hub ids go through :mod:`hf_toolkit.hub`, which fails fast and clearly without a network.

Also here: training a small byte-level BPE tokenizer for from-scratch runs, and giving
GPT-2-style tokenizers a pad token (their EOS), which batching and sequence classification need.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_toolkit import hub
from hf_toolkit.errors import HftkError, ModelLoadError, RecipeError, did_you_mean
from hf_toolkit.recipe import ModelPart, ModelSection, PeftSection, looks_local, resolve_path

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


def from_pretrained(loader: Any, reference: str, what: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` on a local path or hub id, with clear errors when offline."""
    location, cache_only = locate(reference, what)
    try:
        return loader.from_pretrained(location, local_files_only=cache_only, **kwargs)
    except OSError as error:
        if cache_only:
            raise ModelLoadError(hub.unreachable_message(reference, what)) from None
        raise ModelLoadError(f"cannot load {what} from '{reference}': {error}") from None


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
        tokenizer = from_pretrained(AutoTokenizer, reference, "tokenizer")
    ensure_pad_token(tokenizer)
    return tokenizer


def train_bpe_tokenizer(texts: Iterable[str], *, vocab_size: int, min_frequency: int) -> "PreTrainedTokenizerBase":
    """A GPT-2-style byte-level BPE tokenizer trained on `texts`, with <|endoftext|> as BOS/EOS/UNK."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[SPECIAL_TOKEN])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
    )


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
    if section.init == "scratch":
        model = auto_class.from_config(config)
    else:
        model = from_pretrained(auto_class, section.name_or_path, "model", config=config)
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:  # encoder-only heads have none
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


ADAPTER_CONFIG = "adapter_config.json"
# A LoRA run saves only the adapter; the fine-tuned model's own config (label names, task head
# sizes) and generation config (the recipe's `generation` section) go here, because a
# config.json beside the adapter would make transformers look for full weights.
ADAPTER_MODEL_CONFIG_DIR = "model_config"


def adapter_base(location: str) -> str | None:
    """The base model a LoRA run directory adapts, or None when it is not an adapter directory."""
    adapter = Path(location) / ADAPTER_CONFIG
    if not adapter.is_file():
        return None
    return json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]


def load_config(reference: str) -> Any:
    """The model config of a model dir, hub id, or LoRA run dir (the fine-tuned model's config)."""
    from transformers import AutoConfig

    location, _ = locate(reference, "model")
    base = adapter_base(location)
    if base is None:
        return from_pretrained(AutoConfig, reference, "model config")
    saved = Path(location) / ADAPTER_MODEL_CONFIG_DIR
    return AutoConfig.from_pretrained(saved) if saved.is_dir() else from_pretrained(AutoConfig, base, "base model config")


# Heads that predict rather than generate (hftk predict's tasks), by architecture-name suffix.
PREDICTION_HEADS = {
    "ForSequenceClassification": "text-classification",
    "ForQuestionAnswering": "question-answering",
    "ForMaskedLM": "masked-lm",
}


def prediction_head(config: Any) -> str | None:
    """The hftk predict task a model config's architecture serves, or None (a generative model)."""
    for architecture in config.architectures or []:
        for suffix, task in PREDICTION_HEADS.items():
            if architecture.endswith(suffix):
                return task
    return None


def load_model_dir(auto_class: Any, reference: str) -> "PreTrainedModel":
    """A trained model from a model dir, hub id, or LoRA run dir (base + adapter, as a PeftModel)."""
    location, _ = locate(reference, "model")
    base = adapter_base(location)
    if base is None:
        return from_pretrained(auto_class, reference, "model")
    from peft import PeftModel
    from transformers import GenerationConfig

    base_model = from_pretrained(auto_class, base, "base model", config=load_config(reference))
    saved = Path(location) / ADAPTER_MODEL_CONFIG_DIR
    if (saved / "generation_config.json").is_file():
        base_model.generation_config = GenerationConfig.from_pretrained(saved)
    return PeftModel.from_pretrained(base_model, location)


def save_adapter_model_config(model: Any, output_dir: str | Path) -> None:
    """Beside a saved LoRA adapter: the fine-tuned model's config and generation config (see above)."""
    base = model.get_base_model()
    base.config.save_pretrained(Path(output_dir) / ADAPTER_MODEL_CONFIG_DIR)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(Path(output_dir) / ADAPTER_MODEL_CONFIG_DIR)


def set_generation_config(model: Any, config: Any) -> None:
    """Make `config` the one ``model.generate()`` uses (a PeftModel generates with its base model's)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    target.generation_config = config


def load_trained(auto_class: Any, model_dir: Any) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """(model in eval mode, tokenizer) of a run directory, local model dir or hub id, for inference."""
    from transformers import AutoTokenizer

    reference = str(model_dir)
    model = load_model_dir(auto_class, reference)
    tokenizer = from_pretrained(AutoTokenizer, reference, "tokenizer")
    ensure_pad_token(tokenizer)
    model.eval()
    return model, tokenizer


def base_config(section: ModelSection | ModelPart, key: str = "model") -> Any:
    """The checkpoint's config, or a fresh one of ``config.model_type`` (no overrides, no weights).

    ``key`` names the section in messages (``model``, ``model.encoder``, ``model.decoder``).
    """
    from transformers import CONFIG_MAPPING, AutoConfig

    if section.name_or_path is not None:
        return from_pretrained(AutoConfig, section.name_or_path, "model config")
    model_type = section.config["model_type"]
    if model_type not in CONFIG_MAPPING:
        raise RecipeError(
            [f"{key}.config.model_type: unknown model type '{model_type}'{did_you_mean(model_type, CONFIG_MAPPING.keys())}"]
        )
    return AutoConfig.for_model(model_type)


def config_problems(config: Any, overrides: dict[str, Any], key: str) -> list[str]:
    """Overrides that are not settings of `config`, or whose value has the wrong type.

    A setting's type is its default's kind: a number for numbers (ints and floats alike: many
    configs write 0 or 4 as the default of a rate or ratio that takes 0.1 or 2.5), true/false for
    flags, text for text, lists and mappings for those. ``key`` is the recipe key
    (``model.config``, ``model.encoder.config``) the problems are reported under.
    """
    known = set(config.to_dict()) | set(getattr(config, "attribute_map", {}))
    problems = []
    for name, value in overrides.items():
        if name == "model_type":
            continue
        if name not in known:
            problems.append(f"{key}.{name}: not a setting of {type(config).__name__}{did_you_mean(name, known)}")
        elif (expected := _expected_type(getattr(config, name, None), value)) is not None:
            problems.append(f"{key}.{name}: expected {expected} like {type(config).__name__}'s default "
                            f"{getattr(config, name)!r} (got {value!r})")
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


def check_configs(section: ModelSection) -> None:
    """Recipe-time check of ``model.config`` (or each side's, for a pair) against the model's config class.

    Loads only configs (a hub id that cannot be reached fails here, fast), no tokenizer or weights.
    """
    sides = [("model.encoder", section.encoder), ("model.decoder", section.decoder)] if section.is_pair else [("model", section)]
    problems = []
    for key, side in sides:
        if side is not None and side.config:
            problems += config_problems(base_config(side, key), side.config, f"{key}.config")
    if problems:
        raise RecipeError(problems)


def build_config(section: ModelSection | ModelPart, tokenizer: "PreTrainedTokenizerBase", **config_kwargs: Any) -> Any:
    """The model config: the checkpoint's (or a fresh one of config.model_type) plus overrides.

    The overrides were checked with the recipe (:func:`check_configs`).
    """
    config = base_config(section)
    overrides = {key: value for key, value in section.config.items() if key != "model_type"}
    for key, value in {**overrides, **config_kwargs}.items():
        setattr(config, key, value)
    if section.init == "scratch":
        config.vocab_size = len(tokenizer)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            token_id = getattr(tokenizer, name)
            if token_id is not None:
                setattr(config, name, token_id)
    return config


def describe(model: "PreTrainedModel") -> str:
    """'GPT2LMHeadModel: 1.2M parameters (1.2M trainable)'."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
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
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS
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
