"""How fast a run trained: real (non-padding) tokens per second, model FLOP/s, and on a GPU whose
peak is known, model FLOPs utilisation (MFU). Logged at the end of ``hftk finetune`` and kept in
the run's metrics (``train_tokens_per_second``, ``train_model_tflops``, ``train_mfu``).

Tokens: the prepared training split's mean real tokens per example (lengths read from Arrow, no
padding) times the Trainer's ``train_samples_per_second``. FLOPs per token, one definition for GPU
and CPU (``python -m benchmarks``' MFU rows use the same, :func:`flops_per_token`): PaLM's appendix B,
6 x N + 12 x L x d x T, with N the parameters a token meets in a matmul (every non-embedding weight,
plus the output projection when it shares the input embedding's weights, as GPT-2's LM head does),
L layers, width d and T the mean tokens per example (the attention scores and weighted sum).
With LoRA the frozen weights get no weight gradients, so 6N overstates the work (about 4N is done):
the line says so. MFU divides by the GPU's dense bf16/fp16 peak from :data:`GPU_PEAK_TFLOPS` (the
vendor's figure); on CPUs the peak depends on cores, clock and AMX, so ``python -m benchmarks``
measures it instead.
"""

from __future__ import annotations

from typing import Any

from hf_toolkit.core import modeling

# Dense bf16/fp16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name(). The H100
# SXM5 names itself "NVIDIA H100 80GB HBM3"; a bare "H100" matches none, so an unknown variant says so
# rather than take the PCIe card's peak (which overstated an SXM's MFU by 31%).
GPU_PEAK_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "GH200": 989.0,
    "B200": 2250.0, "A100": 312.0, "A800": 312.0, "A10G": 125.0, "A10": 125.0, "L40S": 362.0, "L40": 181.0,
    "L4": 121.0, "A6000": 155.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0,
}


def gpu_peak_tflops(device_name: str) -> float | None:
    """The peak for a GPU name ('NVIDIA A100-SXM4-80GB' -> 312); None when not in the table."""
    for key in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True):  # 'H100 SXM' before 'H100', 'A10G' before 'A10'
        if key in device_name:
            return GPU_PEAK_TFLOPS[key]
    return None


def mean_tokens(dataset: Any, column: str = "input_ids") -> float | None:
    """Mean length of `column` over a datasets.Dataset (from Arrow list lengths); None when it has none."""
    if dataset is None or column not in getattr(dataset, "column_names", ()) or len(dataset) == 0:
        return None
    import pyarrow.compute as pc

    lengths = pc.list_value_length(dataset.data.column(column))
    return float(pc.mean(lengths).as_py())


def flops_per_token(matmul_parameters: int, layers: int, width: int, tokens_per_example: float) -> float:
    """Training FLOPs per token, PaLM appendix B: 6 N + 12 L d T (2 FLOPs per weight forward, 4
    backward; Q K^T and A V at 2 T d each per layer forward, x3 with backward). Recomputation under
    gradient checkpointing does not count: these are model FLOPs."""
    return 6 * matmul_parameters + 12 * layers * width * tokens_per_example


def matmul_parameters(model: Any) -> int:
    """N of :func:`flops_per_token`: the non-embedding parameters, plus a tied output projection."""
    parameters = model.num_parameters(exclude_embeddings=True)
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and embeddings is not None and head.weight is embeddings.weight:
        parameters += head.weight.numel()
    return parameters


def measure(metrics: dict[str, float], tokens_per_example: float | None, parameters: int, *,
            device_name: str | None, lora: bool, layers: int = 0, width: int = 0) -> tuple[dict[str, float], str]:
    """(metrics to add, the log line) for a finished run; `parameters` is N of :func:`flops_per_token`."""
    speed = metrics.get("train_samples_per_second")
    if not speed or tokens_per_example is None:
        return {}, "throughput: not measured (no samples/s or token counts)"
    tokens = speed * tokens_per_example
    tflops = flops_per_token(parameters, layers, width, tokens_per_example) * tokens / 1e12
    added = {"train_tokens_per_second": round(tokens, 1), "train_model_tflops": round(tflops, 4)}
    attention = f" + 12 x {layers} layers x {width} x {tokens_per_example:.0f} tokens" if layers and width else ""
    line = (f"throughput: {tokens:,.0f} tokens/s (non-padding), {tflops:.3g} model TFLOP/s "
            f"(6 x {parameters / 1e6:.1f}M matmul parameters{attention}, per token{'; LoRA does about 4/6 of that' if lora else ''})")
    peak = gpu_peak_tflops(device_name) if device_name else None
    if peak:
        added["train_mfu"] = round(tflops / peak, 4)
        line += f"; MFU {tflops / peak:.1%} of the {device_name}'s {peak:g} TFLOP/s peak"
    elif device_name:
        line += f"; MFU: {device_name} is not in hf_toolkit.training.throughput.GPU_PEAK_TFLOPS"
    return added, line


def report(trainer, train_split, metrics: dict[str, float]) -> tuple[dict[str, float], str]:
    """:func:`measure` for a Trainer after ``train()``, with its model, device and training split."""
    import torch

    model = trainer.model
    base = modeling.base_model(model)
    dims = modeling.config_dims(base.config)
    on_gpu = torch.cuda.is_available() and not trainer.args.use_cpu
    name = torch.cuda.get_device_name(0) if on_gpu else None
    return measure(metrics, mean_tokens(train_split), matmul_parameters(base), device_name=name,
                   lora=modeling.is_peft(model), layers=dims.layers, width=dims.hidden)
