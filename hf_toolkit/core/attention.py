"""Which attention a training step runs, and why: the model config's attention dropout, the kernel
torch's ``scaled_dot_product_attention`` picks for it (asked of torch itself), and hftk's log line
saying so (with the recipe key that keeps the fused kernel when dropout leaves it).
"""

from __future__ import annotations

from typing import Any

from hf_toolkit import compat
from hf_toolkit.core import modeling

# Config keys of the dropout on attention probabilities, by architecture family (BERT-like,
# DistilBERT/BART/Llama-like, GPT-2).
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def attention_dropout(config: Any) -> tuple[str, float] | None:
    """(config key, value) of the model's dropout on attention probabilities; None when the config names none.

    An encoder-decoder pair's config holds it in its sides' configs: the larger is reported, as
    ``encoder.attention_probs_dropout_prob``.
    """
    for key in ATTENTION_DROPOUT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return key, float(value)
    sides = [(f"{side}.{found[0]}", found[1]) for side in ("encoder", "decoder")
             if getattr(config, side, None) is not None and (found := attention_dropout(getattr(config, side)))]
    return max(sides, key=lambda found: found[1]) if sides else None


def sdpa_kernel(dropout: float, dtype: Any, device: str = "cpu", head_dim: int = 64) -> str | None:
    """The kernel torch's scaled_dot_product_attention picks for a padded batch with this dropout,
    dtype and device: 'flash', 'memory-efficient', 'cuDNN' (fused kernels) or 'math' (the unfused
    fallback that builds the whole attention matrix); None when this torch cannot say.

    Asks torch itself (:func:`hf_toolkit.compat.sdpa_backend`, the dispatcher's own choice) with a tiny batch.
    On CPU, the fused (flash) kernel takes no dropout: any attention dropout while training falls
    back to math.
    """
    import torch

    try:
        query = torch.zeros(1, 2, 8, head_dim, dtype=dtype, device=device)
        mask = torch.ones(1, 1, 8, 8, dtype=torch.bool, device=device)  # padding: the batches are padded
        choice = compat.sdpa_backend(query, mask, dropout)
    except (AttributeError, ImportError, RuntimeError, TypeError, ValueError):
        return None
    names = {"FLASH_ATTENTION": "flash", "EFFICIENT_ATTENTION": "memory-efficient", "CUDNN_ATTENTION": "cuDNN", "MATH": "math"}
    return names.get(choice.name)


def describe_attention(model: Any, *, dtype: Any, device: str = "cpu") -> str:
    """hftk's log line on the attention a training step runs, and why, from the model config and torch:

    'attention: sdpa, fused flash kernel (attention_probs_dropout_prob 0)', or 'attention: sdpa, math fallback
    while training (attention_probs_dropout_prob 0.1 > 0 leaves the fused CPU kernel; set
    model.config.attention_probs_dropout_prob: 0 to keep it; faster on long sequences, not on short ones)'.
    `dtype` is the dtype attention computes in (bf16 under bf16 autocast).
    """
    config = model.config
    implementation = compat.attn_implementation(config) or "eager"
    if implementation != "sdpa":
        hint = " (no fused kernel: builds the whole attention matrix)" if implementation == "eager" else ""
        return f"attention: {implementation}{hint}"
    key, dropout = attention_dropout(config) or (None, 0.0)
    dims = modeling.config_dims(config)
    head_dim = getattr(config, "head_dim", None) or (dims.hidden // dims.heads if dims.hidden and dims.heads else 64)
    kernel = sdpa_kernel(dropout, dtype, device, head_dim)
    at = f"{key} {dropout:g}" if key is not None else "the config names no attention dropout"
    if kernel is None:
        return f"attention: sdpa ({at}; this torch does not say which kernel)"
    if kernel != "math":
        return f"attention: sdpa, fused {kernel} kernel ({at})"
    if dropout > 0 and sdpa_kernel(0.0, dtype, device, head_dim) not in (None, "math"):
        side, _, name = str(key).rpartition(".")
        recipe_key = f"model.{side}.config.{name}" if side else f"model.config.{name}"
        return (f"attention: sdpa, math fallback while training ({key} {dropout:g} > 0 leaves the fused {device.upper()} "
                f"kernel; set {recipe_key}: 0 to keep it; faster on long sequences, not on short ones)")
    return f"attention: sdpa, math fallback (torch has no fused kernel for {str(dtype).removeprefix('torch.')} on {device}; {at})"
