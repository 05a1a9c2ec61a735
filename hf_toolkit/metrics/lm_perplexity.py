"""Perplexity of a causal language model over texts, with the sliding-window method.

This follows the transformers guide "Perplexity of fixed-length models"
(https://huggingface.co/docs/transformers/perplexity): the texts are joined with ``"\\n\\n"``
into one token stream (as for WikiText), a window of ``max_length`` tokens slides by ``stride``
tokens, and each window's loss counts only the tokens not already scored by the previous window
(the others are context, label -100). Perplexity = exp(total NLL / number of scored tokens).
``stride == max_length`` is plain block-wise evaluation (no overlap, less context, faster);
the default ``stride = max_length // 2`` gives every scored token at least half a window of context.

The model comes loaded (``hftk eval --model`` loads it through :mod:`hf_toolkit.core.rundir`, with
the offline checks and on the GPU when there is one); the windows run on the model's device.
torch is imported inside the function (seconds to import).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hf_toolkit.errors import DataError


def perplexity(texts: Sequence[str], model, tokenizer, *, max_length: int | None = None,
               stride: int | None = None) -> dict[str, float]:
    """Return ``{"perplexity": float}`` of a loaded causal LM `model` (with its `tokenizer`) on ``texts``.

    ``max_length`` defaults to the model's context size (``config.n_positions`` or
    ``max_position_embeddings``).
    """
    import torch

    from hf_toolkit.core.modeling import context_length

    device = model.device
    model.eval()
    ids = tokenizer("\n\n".join(texts), return_tensors="pt").input_ids.to(device)
    max_length = max_length or context_length(model.config)
    if max_length is None:
        raise ValueError("cannot tell the model's context size; pass max_length")
    stride = stride or max(1, max_length // 2)
    if not 0 < stride <= max_length:
        raise ValueError(f"stride must be in 1..max_length ({max_length}), got {stride}")
    if ids.size(1) < 2:
        raise DataError("perplexity needs at least 2 tokens of text")

    total_nll, scored, previous_end = 0.0, 0, 0
    for begin in range(0, ids.size(1), stride):
        end = min(begin + max_length, ids.size(1))
        target_len = end - previous_end  # tokens new to this window
        input_ids = ids[:, begin:end]
        labels = input_ids.clone()
        labels[:, :-target_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=labels).loss
        # The model shifts labels by one, so a window scores (unmasked labels - 1 if it starts at 0).
        n_scored = int((labels[:, 1:] != -100).sum())
        total_nll += float(loss) * n_scored
        scored += n_scored
        previous_end = end
        if end == ids.size(1):
            break
    return {"perplexity": math.exp(total_nll / scored)}
