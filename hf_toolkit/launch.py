"""Multi-process launching for ``hftk finetune --nproc N``.

The command re-runs itself under ``torch.distributed.run`` (torchrun) with N processes; each
process then trains as one DDP rank through the Trainer (and Accelerate under it): NCCL on GPUs,
gloo on CPU. Multi-node runs, FSDP and DeepSpeed go through ``accelerate launch`` or ``torchrun``
directly (see the README); nothing in hftk needs to change for them.

We use torchrun rather than ``accelerate launch --cpu``, which silently starts one process on a
CPU-only machine.
"""

from __future__ import annotations

import os
import subprocess
import sys


def in_distributed_launch() -> bool:
    """True inside a torchrun/accelerate-launched process."""
    return "LOCAL_RANK" in os.environ


def is_main_process() -> bool:
    """True on global rank 0, and in a plain single-process run."""
    return os.environ.get("RANK", "0") == "0"


def relaunch(nproc: int, argv: list[str]) -> int:
    """Run `python -m hf_toolkit ARGV` in `nproc` processes with torchrun; return the exit status."""
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone", f"--nproc_per_node={nproc}",
        "-m", "hf_toolkit", *argv,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc))))
    return subprocess.run(command, env=env).returncode
