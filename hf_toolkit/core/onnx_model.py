"""An exported ONNX model (``hftk export RUN OUT --format onnx``) run with onnxruntime, called like
a transformers model, so ``hftk predict``, ``hftk eval --model``, ``hftk serve`` and ``hftk compare``
apply an exported directory exactly as they apply a run directory.

An exported directory holds :data:`ONNX_FILE` (fp32, or int8 after ``--quantize int8``), the run's
``config.json`` (architecture, label names), tokenizer and recipe, and :data:`ONNX_INFO` (the
graph's input and output names, the task). :class:`OnnxModel` feeds the inputs the graph takes
(numpy, on the CPU) and returns its outputs as torch tensors under the transformers names
(``logits``, or ``start_logits`` / ``end_logits``). A causal LM is exported without a KV cache:
it scores text (perplexity) but does not generate (``generate`` says so).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hf_toolkit.errors import HftkError

ONNX_FILE = "model.onnx"
ONNX_INFO = "hftk_onnx.json"
INSTALL = 'pip install "hf_toolkit[onnx]"'


def is_exported(directory: str | Path) -> bool:
    """True for a directory ``hftk export --format onnx`` wrote."""
    return (Path(directory) / ONNX_FILE).is_file() and (Path(directory) / ONNX_INFO).is_file()


def require_onnxruntime() -> Any:
    """The onnxruntime module, or a user error saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise HftkError(f"ONNX models run with onnxruntime, which is not installed: {INSTALL}") from None
    return onnxruntime


class OnnxModel:
    """The part of a transformers model's interface hftk's inference uses, over an onnxruntime session."""

    def __init__(self, directory: str | Path, config: Any):
        ort = require_onnxruntime()
        import torch

        info = json.loads((Path(directory) / ONNX_INFO).read_text(encoding="utf-8"))
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings about unused initializers are noise here
        self.session = ort.InferenceSession(str(Path(directory) / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        self.inputs, self.outputs = info["inputs"], info["outputs"]
        self.quantized, self.task = info["quantized"], info["task"]
        self.config = config
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.training = False

    def __call__(self, input_ids: Any = None, labels: Any = None, **inputs: Any) -> SimpleNamespace:
        """The graph's outputs; with `labels` (a causal LM scoring text) also ``loss``, the mean
        next-token cross-entropy over the labels that are not -100, as transformers computes it."""
        import torch

        inputs["input_ids"] = input_ids
        defaults = {"attention_mask": input_ids.new_ones(input_ids.shape), "token_type_ids": input_ids.new_zeros(input_ids.shape)}
        feed = {name: (inputs[name] if name in inputs else defaults[name]).detach().cpu().numpy() for name in self.inputs}
        results = self.session.run(self.outputs, feed)
        outputs = SimpleNamespace(**{name: torch.from_numpy(value) for name, value in zip(self.outputs, results)})
        if labels is not None and self.task == "causal-lm":
            logits = outputs.logits[:, :-1].float()
            outputs.loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                             labels[:, 1:].reshape(-1).cpu(), ignore_index=-100)
        return outputs

    def eval(self) -> "OnnxModel":
        return self

    def to(self, *args: Any, **kwargs: Any) -> "OnnxModel":
        return self  # onnxruntime's CPU provider

    def parameters(self):
        return iter(())

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        refuse_generation()


def refuse_generation() -> None:
    raise HftkError("an exported ONNX causal LM has no KV cache, so hftk does not generate with it (it scores text: "
                    "hftk eval --model EXPORTED -m perplexity); generate with the run directory it was exported from")
