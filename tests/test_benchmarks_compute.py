"""The helper logic of benchmarks/compute.py (no training): the FLOPs formula against a hand count,
steady-state step timing, /proc status parsing and profile categories."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a folder of the repository, not installed

from benchmarks.compute import (
    GPT2_SMALL,
    Size,
    categorize,
    gemm_mix_rate,
    matmul_parameters,
    model_flops_per_token,
    model_gemm_shapes,
    status_kib,
    steady_step_seconds,
    step_floor_seconds,
)


def test_matmul_parameters_of_gpt2_small_by_hand():
    # per block: c_attn 768x2304, c_proj 768x768, c_fc 768x3072, mlp c_proj 3072x768; plus the tied LM head 50257x768
    block = 768 * 2304 + 768 * 768 + 768 * 3072 + 3072 * 768
    assert matmul_parameters(12, 768, 50257) == 12 * block + 50257 * 768 == 123_532_032


def test_model_flops_per_token_is_palm_6n_plus_12ldt():
    n = matmul_parameters(12, 768, 50257)
    # attention per layer and token: Q K^T and A V, 2*T*d FLOPs each forward, times 3 with backward
    attention = 12 * (2 * 128 * 768 + 2 * 128 * 768) * 3
    assert model_flops_per_token(12, 768, 50257, 128) == 6 * n + attention
    assert model_flops_per_token(12, 768, 50257, 128) * GPT2_SMALL.tokens == pytest.approx(0.7735e12, rel=1e-3)


def test_steady_step_skips_warmup_and_untimed_steps():
    # training began at 0; steps end at 10 (compile), 11, 12, 13.5, 15, then a profiled step (NaN)
    times = [0.0, 10.0, 11.0, 12.0, 13.5, 15.0, math.nan]
    assert steady_step_seconds(times, 1) == 1.25  # steps 2-5: 1, 1, 1.5, 1.5
    assert steady_step_seconds(times, 3) == 1.5  # steps 4-5
    with pytest.raises(ValueError):
        steady_step_seconds(times, 5)


def test_status_kib_reads_proc_status_fields():
    text = "Name:\tpython\nVmHWM:\t  123456 kB\nVmRSS:\t   7890 kB\n"
    assert status_kib(text, "VmHWM") == 123456
    assert status_kib(text, "VmRSS") == 7890
    assert status_kib(text, "VmSwap") == 0


def test_gemm_mix_rate_is_flop_weighted():
    shapes = model_gemm_shapes(GPT2_SMALL)
    assert len(shapes) == 15 and shapes[0] == (1024, 768, 2304) and shapes[-3] == (1024, 768, 50257)
    assert gemm_mix_rate(GPT2_SMALL, dict.fromkeys(shapes, 2e12)) == pytest.approx(2e12)
    # one slow shape pulls the mix down by its share of the FLOPs
    slow = dict.fromkeys(shapes, 2e12) | {(1024, 768, 50257): 1e12}
    assert 1e12 < gemm_mix_rate(GPT2_SMALL, slow) < 2e12


@pytest.mark.parametrize("op, category", [
    ("aten::mm", "matmul"), ("aten::addmm", "matmul"), ("aten::bmm", "matmul"),
    ("aten::_fused_adamw_", "optimizer"), ("aten::_log_softmax_backward_data", "loss (log-softmax, NLL over the vocabulary)"),
    ("aten::_softmax", "softmax"), ("aten::native_layer_norm_backward", "layernorm"), ("aten::copy_", "dtype casts and copies"),
    ("aten::bernoulli_", "dropout"), ("aten::tanh_backward", "GELU (tanh form, elementwise ops)"), ("aten::weird", "other"),
])
def test_categorize(op, category):
    assert categorize(op) == category


def test_step_floor_gemm_time_is_the_step_flops_at_the_measured_rates():
    tiny = Size(layers=2, heads=2, width=16, block=8, batch=2, vocab=64)
    shapes = model_gemm_shapes(tiny)
    rates = {shape: 1e9 for shape in shapes}  # every GEMM at 1 GFLOP/s
    per_layer = sum(2 * m * k * n for m, k, n in shapes[:-3])
    head = sum(2 * m * k * n for m, k, n in shapes[-3:])
    floor = step_floor_seconds(tiny, rates)
    assert floor["GEMMs"] == pytest.approx((2 * per_layer + head) / 1e9)
    assert set(floor) == {"GEMMs", "fused AdamW", "loss"}
    assert floor["fused AdamW"] > 0 and floor["loss"] > 0
