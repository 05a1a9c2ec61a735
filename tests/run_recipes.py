"""Train several recipes in one process, or one torchrun launch, through hftk's own ``finetune``.

Tests that compare runs (1 process vs 2 DDP ranks, DDP vs FSDP) use it as::

    python run_recipes.py PLAN.json                      # one process
    python -m torch.distributed.run --nproc_per_node 2 run_recipes.py PLAN.json

PLAN.json is a list of ``{"recipe": path, "output_dir": path, "overrides": ["training.x=y", ...],
"fixed_masking": bool, "fsdp_on_cpu": bool, "record_sharding": bool}``; every rank trains the items in order, exactly as ``hftk finetune RECIPE
--set training.output_dir=... --set ...`` does (the CLI adds only argument parsing and, for
``--nproc``, this same torchrun relaunch). Importing torch and transformers once for all runs is
what keeps such tests short. A run that fails writes ``<output_dir>/error-rank<R>.txt`` and stops
the launch (a rank left waiting in a collective would hang).

``fixed_masking``: masked-LM masks every other non-special token instead of a random choice,
so that runs with different process counts (whose random masks differ) can be compared exactly.

``fsdp_on_cpu``: lets accelerate run FSDP in CPU processes (see :func:`allow_fsdp_on_cpu`).

``record_sharding``: a TrainerCallback (added to the Trainer that ``hf_toolkit.training.train.build_trainer``
builds) writes ``<output_dir>/sharding-rank<R>.json`` after the first optimizer step: for every
parameter of the model being trained, whether it is a DTensor, its placements, and the number of
elements this rank holds against the full tensor's.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

ORIGINAL_COLLATOR_CLASS = None  # hf_toolkit.tasks.collators.WordPieceMaskingCollator, set by main


def sharding_callback():
    from transformers import TrainerCallback

    class RecordSharding(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step != 1:
                return
            from torch.distributed.tensor import DTensor

            params = {}
            for name, param in model.named_parameters():
                is_dtensor = isinstance(param, DTensor)
                params[name] = {
                    "dtensor": is_dtensor,
                    "placements": [str(p) for p in param.placements] if is_dtensor else [],
                    "local_numel": param.to_local().numel() if is_dtensor else param.numel(),
                    "numel": param.numel(),
                    "model_class": type(model).__name__,
                }
            rank = int(os.environ.get("RANK", "0"))
            Path(args.output_dir, f"sharding-rank{rank}.json").write_text(json.dumps(params, indent=1))

    return RecordSharding()


def fixed_masking_collator_class():
    """hftk's masking collator, masking every other non-special token (no random choice or replacement)."""
    import torch

    class EveryOtherToken(ORIGINAL_COLLATOR_CLASS):
        def torch_mask_tokens(self, inputs, special_tokens_mask=None, offset_mapping=None):
            labels = inputs.clone()
            if special_tokens_mask is None:
                special_tokens_mask = torch.tensor([self.tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True)
                                                    for row in labels.tolist()])
            chosen = ~special_tokens_mask.bool() & (torch.arange(inputs.shape[-1]) % 2 == 1)
            labels[~chosen] = -100
            inputs = inputs.clone()
            inputs[chosen] = self.tokenizer.mask_token_id
            return inputs, labels

    return EveryOtherToken


def allow_fsdp_on_cpu() -> None:
    """Let accelerate run FSDP in CPU (gloo) processes, which it never selects by itself.

    accelerate turns an FSDP plugin into distributed_type FSDP only for GPU-like process groups;
    CPU processes stay MULTI_CPU and train as DDP with the plugin ignored. PyTorch's FSDP2
    (``fully_shard``) itself runs on CPU with gloo, so the test machine (no GPU) switches the
    type after accelerate chose it; everything else (the Trainer, hftk) runs unchanged.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__
    if getattr(original, "allows_fsdp_on_cpu", False):
        return

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            # What accelerate does for GPU processes (AcceleratorState.__init__), shared state included.
            self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    init.allows_fsdp_on_cpu = True
    AcceleratorState.__init__ = init


def main(plan_path: str) -> None:
    global ORIGINAL_COLLATOR_CLASS
    from hf_toolkit.tasks import collators
    from hf_toolkit.training import train

    build_trainer = train.build_trainer
    ORIGINAL_COLLATOR_CLASS = collators.WordPieceMaskingCollator
    for item in json.loads(Path(plan_path).read_text()):
        def build(*args, _record=item.get("record_sharding", False), **kwargs):
            trainer = build_trainer(*args, **kwargs)
            if _record:
                trainer.add_callback(sharding_callback())
            return trainer

        train.build_trainer = build
        collators.WordPieceMaskingCollator = fixed_masking_collator_class() if item.get("fixed_masking") else ORIGINAL_COLLATOR_CLASS
        if item.get("fsdp_on_cpu"):
            allow_fsdp_on_cpu()  # stays on: it acts only on Trainers given an FSDP plugin
        try:
            train.finetune(item["recipe"], [f"training.output_dir={item['output_dir']}", *item.get("overrides", [])])
        except BaseException:
            out = Path(item["output_dir"])
            out.mkdir(parents=True, exist_ok=True)
            (out / f"error-rank{os.environ.get('RANK', '0')}.txt").write_text(traceback.format_exc())
            raise


if __name__ == "__main__":
    main(sys.argv[1])
