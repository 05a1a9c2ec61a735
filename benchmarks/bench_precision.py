"""CPU training speed and loss: fp32 vs bf16 autocast, through `hftk finetune` (precision: ...).

Decides what `precision: auto` picks on a CPU: bf16 only where it is faster with a sound loss
curve. Trains the same small GPT-2 from scratch on the bundled demo corpus with each precision
and reports seconds per step (from the Trainer's train_runtime) and the final train/eval loss.

    python benchmarks/bench_precision.py [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RECIPE = """\
task: causal-lm
seed: 0
precision: {precision}
model:
  init: scratch
  train_tokenizer: {{vocab_size: 2048}}
  config: {{model_type: gpt2, n_layer: 4, n_head: 4, n_embd: 256, n_positions: 256}}
data: {{train: pkg://hf_toolkit/demo/tiny_stories.txt, validation_split: 0.1, block_size: 128}}
training: {{output_dir: run, max_steps: {steps}, per_device_train_batch_size: 16, learning_rate: 1e-3,
           save_strategy: "no", eval_strategy: "no", disable_tqdm: true, logging_steps: 10}}
"""


def run(precision: str, steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        Path(work, "r.yaml").write_text(RECIPE.format(precision=precision, steps=steps))
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        subprocess.run([sys.executable, "-m", "hf_toolkit", "finetune", "r.yaml"], cwd=work, env=env,
                       check=True, capture_output=True)
        metrics = json.loads(Path(work, "run", "metrics.json").read_text())
    return {"s_per_step": metrics["train_runtime"] / steps, "train_loss": metrics["train_loss"], "eval_loss": metrics["eval_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    from hf_toolkit.training.arguments import cpu_has_native_bf16

    print(f"native bf16 on this CPU (AVX512-BF16/AMX): {cpu_has_native_bf16()}")
    results = {p: run(p, args.steps) for p in ("fp32", "bf16")}
    for precision, r in results.items():
        print(f"{precision}: {r['s_per_step']:.3f} s/step  train_loss {r['train_loss']:.3f}  eval_loss {r['eval_loss']:.3f}")
    print(f"bf16/fp32 time ratio: {results['bf16']['s_per_step'] / results['fp32']['s_per_step']:.2f}")


if __name__ == "__main__":
    main()
