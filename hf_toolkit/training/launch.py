"""Multi-process launching for ``hftk finetune --nproc N``.

The command re-runs itself under ``torch.distributed.run`` (torchrun) with N processes; each
process then trains as one DDP rank through the Trainer (and Accelerate under it): NCCL on GPUs,
gloo on CPU. Multi-node runs, FSDP and DeepSpeed go through ``accelerate launch`` or ``torchrun``
directly (see the README); nothing in hftk needs to change for them.

We use torchrun rather than ``accelerate launch --cpu``, which silently starts one process on a
CPU-only machine.

The launching process holds the output directory's lock for the ranks (:mod:`hf_toolkit.training.runlock`).
torchrun runs in its own session, so a terminal's Ctrl-C reaches only the launcher; the launcher
turns SIGTERM and Ctrl-C into a stop request (a file named in ``HFTK_STOP_FILE``) that every
rank's stop guard (:mod:`hf_toolkit.training.stopping`) reads at each step: the ranks save a checkpoint at
one agreed step and end cleanly, and the launcher exits 128 + the signal, as a single process does.
(Signalling torchrun itself would make it print its own traceback.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from hf_toolkit.training import runlock, stopping


def in_distributed_launch() -> bool:
    """True inside a torchrun/accelerate-launched process."""
    return "LOCAL_RANK" in os.environ


def is_main_process() -> bool:
    """True on global rank 0, and in a plain single-process run."""
    return os.environ.get("RANK", "0") == "0"


def relaunch(nproc: int, argv: list[str], *, output_dir: str | None = None, overwrite: bool = False) -> int:
    """Run `python -m hf_toolkit ARGV` in `nproc` processes with torchrun; return the exit status.

    With `output_dir`, hold its lock (and clear it first for `overwrite`) while the ranks run.
    """
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone", f"--nproc_per_node={nproc}",
        # "--": torchrun's argparse would read hftk's options too (--nproc is an ambiguous
        # abbreviation of its --nproc-per-node); after "--" they pass through untouched
        "-m", "hf_toolkit", "--", *argv,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc))))
    if output_dir is None:
        return _run_forwarding_signals(command, env, None)
    stop_file = Path(output_dir) / STOP_FILE
    with runlock.hold(output_dir, overwrite=overwrite):
        stop_file.unlink(missing_ok=True)
        try:
            env = dict(env, **{runlock.OWNER_ENV: str(os.getpid()), stopping.STOP_FILE_ENV: str(stop_file.absolute())})
            return _run_forwarding_signals(command, env, stop_file)
        finally:
            stop_file.unlink(missing_ok=True)


STOP_FILE = ".hftk.stop"


def _run_forwarding_signals(command: list[str], env: dict[str, str], stop_file: Path | None) -> int:
    """Run `command` in its own session; the first SIGTERM / SIGINT becomes a stop request in
    `stop_file` (without one: is sent to the command). Exit status: the command's, or 128 + the
    signal when one was received."""
    process = subprocess.Popen(command, env=env, start_new_session=True)
    received: list[int] = []

    def forward(signum: int, frame) -> None:
        if received:
            return
        received.append(signum)
        if stop_file is None:
            process.send_signal(signum)
            return
        sys.stderr.write(f"hftk: {signal.Signals(signum).name} received: every process saves a checkpoint at the end "
                         "of this optimizer step, then stops\n")
        temporary = stop_file.with_name(stop_file.name + ".tmp")
        temporary.write_text(str(signum), encoding="utf-8")
        os.replace(temporary, stop_file)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        returncode = process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 + received[0] if received else returncode
