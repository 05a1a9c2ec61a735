"""The machine a benchmark ran on: CPU model and core count, the CPU flags that decide precision
(AVX-512, AVX512-BF16, AMX), and the GPU if there is one."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def describe() -> str:
    """One line: 'Intel(R) Xeon(R) Processor, 2 cores; flags: avx512f, avx512_bf16; no GPU'."""
    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    for line in info.splitlines():
        if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    present = [flag for flag in FLAGS if flag in flags] or ["none of " + ", ".join(FLAGS)]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{model}, {os.cpu_count()} cores; flags: {', '.join(present)}; {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")
