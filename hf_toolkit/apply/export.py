"""``hftk export``: turn a run directory into a deployable model.

- ``--merge`` folds a LoRA adapter into its base weights and writes a plain Hugging Face model
  directory that loads without peft and gives the adapter model's outputs.
- ``--format onnx`` writes ``model.onnx`` instead of the weights (``torch.onnx.export`` with
  ``dynamo=True``; batch and sequence axes dynamic), with the config, tokenizer, recipe and card,
  and checks it against PyTorch on inputs of other shapes than the traced one: the largest
  |logit difference| is reported and must stay under :data:`PARITY` in fp32. Text
  classification, QA (start and end logits), fill-mask and causal LMs (logits only, no KV cache:
  they score text but do not generate). The directory runs with onnxruntime in ``hftk predict``,
  ``eval --model``, ``serve`` and ``compare`` (:mod:`hf_toolkit.core.onnx_model`).
- ``--quantize int8`` (with ``--format onnx``) quantizes that graph with onnxruntime's dynamic
  int8 (int8 weights of the MatMuls, activations quantized on the fly) and reports sizes, the
  int8 graph's largest |logit difference| and latency against PyTorch fp32. Nothing hftk writes
  or reads needs unpickling (the former pickled ``model_int8.pt`` is gone).

The run's recipe and metrics are copied; its card is not copied as it is but follows a new head
that says what export did and from which run (:func:`hf_toolkit.core.rundir.exported_card`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_toolkit.core import onnx_model, rundir
from hf_toolkit.errors import HftkError

PARITY = 1e-4  # largest |logit difference| of the fp32 ONNX graph against PyTorch
ONNX_TASKS = {  # task -> the graph's outputs, named as transformers names them
    "text-classification": ["logits"],
    "question-answering": ["start_logits", "end_logits"],
    "masked-lm": ["logits"],
    "causal-lm": ["logits"],
}
PROBES = ["The quick brown fox jumps over the lazy dog.", "a gorgeous, witty, seductive movie", "Where is it?",
          "Paris is the capital of France, and the Seine runs through it."]


@dataclass
class ExportReport:
    output_dir: Path
    merged: bool
    numbers: dict[str, float] = field(default_factory=dict)


def export(run_dir: Path, output_dir: Path, *, merge: bool, quantize: str | None, format: str = "hf") -> ExportReport:
    """Merge (``--merge``) and/or convert to ONNX (``--format onnx``, optionally ``--quantize int8``)."""
    if quantize is not None and format != "onnx":
        raise HftkError("--quantize int8 writes an ONNX graph quantized by onnxruntime: add --format onnx "
                        "(the pickled model_int8.pt of earlier versions is gone)")
    if not merge and format != "onnx":
        raise HftkError("nothing to do: give --merge (fold a LoRA adapter into the weights) and/or --format onnx")
    if not Path(run_dir).is_dir():
        raise HftkError(f"run directory not found: {run_dir}")
    run = rundir.open_run(str(run_dir))
    is_adapter = run.adapter_base is not None
    if merge and not is_adapter:
        raise HftkError(f"--merge: {run_dir} has no LoRA adapter (adapter_config.json); export it with --format onnx only")
    if is_adapter and not merge:
        raise HftkError(f"{run_dir} holds a LoRA adapter: add --merge to fold it into the base weights first")
    if Path(output_dir).exists() and any(Path(output_dir).iterdir()):
        raise HftkError(f"output directory {output_dir} is not empty; choose a new one")
    config = rundir.load_config(run)
    task = rundir.task_name(run, config)
    if format == "onnx":
        if task not in ONNX_TASKS:
            raise HftkError(f"--format onnx exports {', '.join(ONNX_TASKS)} models; {run_dir} is "
                            f"{task or 'a sequence-to-sequence or unknown'} model ({', '.join(config.architectures or [])})")
        require_exporter()

    model, tokenizer = rundir.load_model(run, config)
    model.to("cpu")
    if merge:
        model = model.merge_and_unload()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if format == "onnx":
        model.config.save_pretrained(output_dir)
    else:
        model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    for name in (rundir.RECIPE_FILE, rundir.METRICS_FILE):
        if run.path(name).is_file():
            shutil.copy(run.path(name), output_dir / name)
    rundir.write_atomically(output_dir / rundir.MODEL_CARD,
                            _card(run, config, merged=merge, onnx=format == "onnx", quantized=quantize is not None))
    if run.path(rundir.DECODER_TOKENIZER_DIR).is_dir():  # an encoder-decoder pair's second tokenizer
        shutil.copytree(run.path(rundir.DECODER_TOKENIZER_DIR), output_dir / rundir.DECODER_TOKENIZER_DIR)
    report = ExportReport(output_dir, merged=merge)
    if format == "onnx":
        report.numbers = to_onnx(model.float().eval(), tokenizer, task, output_dir, quantize=quantize)
    return report


def require_exporter() -> None:
    """torch.onnx's dynamo exporter needs onnx and onnxscript; the check needs onnxruntime."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise HftkError(f"--format onnx needs the onnx and onnxscript packages: {onnx_model.INSTALL}") from None
    onnx_model.require_onnxruntime()


def _card(run: rundir.Run, config: Any, *, merged: bool, onnx: bool, quantized: bool) -> str:
    """The exported model's card: what export did, from which run, then that run's card."""
    card = run.path(rundir.MODEL_CARD)
    adapter = json.loads(run.path(rundir.ADAPTER_CONFIG).read_text(encoding="utf-8")) if merged else None
    return rundir.exported_card(run.location, card.read_text(encoding="utf-8") if card.is_file() else None,
                                merged_adapter=adapter, onnx=onnx, quantized=quantized,
                                auto_class_name=rundir.architecture(config)[1])


def graph_module(model: Any, task: str, inputs: list[str]) -> Any:
    """The model with positional tensor inputs and its task's outputs as a tuple: what torch.onnx traces."""
    from hf_toolkit.apply.onnx_graph import Graph

    extra = {"use_cache": False} if task == "causal-lm" else {}  # logits only: no KV cache in the graph
    return Graph(model, inputs, ONNX_TASKS[task], extra).eval()


def to_onnx(model: Any, tokenizer: Any, task: str, output_dir: Path, *, quantize: str | None) -> dict[str, float]:
    """Write model.onnx (int8 with `quantize`) and hftk_onnx.json; return the parity and size numbers."""
    import torch

    names = ONNX_TASKS[task]
    inputs = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in tokenizer.model_input_names]
    traced = tokenizer(PROBES[:2], return_tensors="pt", padding=True)
    fp32_path = output_dir / (onnx_model.ONNX_FILE if quantize is None else "model_fp32.onnx")
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with quiet_exporter():
        torch.onnx.export(graph_module(model, task, inputs), tuple(traced[name] for name in inputs), str(fp32_path),
                          dynamo=True, input_names=inputs, output_names=names, verbose=False,
                          dynamic_shapes={name: {0: batch, 1: sequence} for name in inputs})
    info = {"task": task, "inputs": inputs, "outputs": names, "quantized": quantize}
    (output_dir / onnx_model.ONNX_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    numbers = {"max_abs_logit_diff": parity(model, tokenizer, output_dir, fp32_path, inputs, names)}
    if numbers["max_abs_logit_diff"] >= PARITY:
        raise RuntimeError(f"the ONNX graph differs from the PyTorch model by {numbers['max_abs_logit_diff']:.2e} "
                           f"(limit {PARITY}): an exporter bug; {fp32_path} is kept for inspection")
    numbers["size_fp32_mb"] = _onnx_mb(fp32_path)
    if quantize is not None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # onnxruntime logs a hint about its optional pre-processing pass to the root logger
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
        quantize_dynamic(str(fp32_path), str(output_dir / onnx_model.ONNX_FILE), weight_type=QuantType.QInt8)
        for written in output_dir.glob("model_fp32.onnx*"):  # ours: the fp32 graph and its external data
            written.unlink()
        numbers["size_int8_mb"] = _onnx_mb(output_dir / onnx_model.ONNX_FILE)
        numbers["max_abs_logit_diff_int8"] = parity(model, tokenizer, output_dir, output_dir / onnx_model.ONNX_FILE, inputs, names)
    numbers.update(latencies(model, tokenizer, output_dir))
    return numbers


def parity(model: Any, tokenizer: Any, output_dir: Path, path: Path, inputs: list[str], names: list[str]) -> float:
    """Largest |output difference| of the graph at `path` against `model`, on shapes other than the traced one."""
    import numpy as np
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for texts in (PROBES[:1], PROBES, PROBES[2:]):
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        got = session.run(names, {name: batch[name].numpy() for name in inputs})
        with torch.no_grad():
            outputs = model(**{name: batch[name] for name in inputs})
        for name, value in zip(names, got):
            worst = max(worst, float(np.abs(value - getattr(outputs, name).numpy()).max()))
    return worst


def latencies(model: Any, tokenizer: Any, output_dir: Path, repeats: int = 10) -> dict[str, float]:
    """Mean CPU latency (ms) of a batch of 4 texts: PyTorch fp32 and the written ONNX graph."""
    import torch

    graph = onnx_model.OnnxModel(output_dir, model.config)
    batch = dict(tokenizer(PROBES, return_tensors="pt", padding=True))
    timings = {}
    for key, run in (("latency_torch_fp32_ms", model), ("latency_onnx_ms", graph)):
        with torch.inference_mode():
            run(**batch)  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                run(**batch)
        timings[key] = (time.perf_counter() - start) / repeats * 1000
    return timings


def _onnx_mb(path: Path) -> float:
    """A graph's size with its external data file, in MB."""
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*")) / 1e6


@contextlib.contextmanager
def quiet_exporter():
    """torch.onnx's notes that concern its own machinery, not the user's model: that torchvision's
    operators are not registered (no vision model here), pytree deprecations, and that the batch and
    sequence axes of the inputs share their names (they do, by design). Everything else passes."""
    import warnings

    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used", category=UserWarning)
            yield
    finally:
        exporter_log.setLevel(level)
