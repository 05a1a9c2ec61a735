"""What ``hftk export --format onnx`` hands torch.onnx to trace: :class:`Graph`, a model called with
positional tensor inputs that returns its task's outputs as a tuple.

Imports torch at module level: only :func:`hf_toolkit.apply.export.graph_module` imports this
module, once the export's checks have passed and the model is loaded.
"""

from __future__ import annotations

from typing import Any

import torch


class Graph(torch.nn.Module):
    """`model` taking ``input_ids, attention_mask, token_type_ids`` by position and returning the
    outputs named `output_names`, in that order, as a tuple.

    Only the inputs in `input_names` (those the tokenizer gives) reach the model; `extra` is
    passed to every call (``use_cache=False`` for a causal LM: logits only, no KV cache in the graph).
    """

    def __init__(self, model: Any, input_names: list[str], output_names: list[str], extra: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.extra = dict(extra or {})

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        outputs = self.model(**{name: given[name] for name in self.input_names}, **self.extra)
        return tuple(getattr(outputs, name) for name in self.output_names)
