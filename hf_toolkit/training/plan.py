"""``hftk finetune --dry-run``: what a run would do, measured on everything built up to its first
training step (checked recipe, loaded splits, tokenizer and model, prepared features, the Trainer).

:func:`make_plan` returns a :class:`Plan` (plain data; ``--json`` prints it as is,
:func:`format_plan` for a terminal): the resolved recipe, rows per split and the examples prepare
made of them, the first three training examples decoded back to text with the tokens that carry no
loss marked (how each task shows its loss is ``Task.loss_view``), token-length percentiles of the
training inputs and the share the task's truncation cuts (``Task.truncation_limit``), the
optimizer and warmup steps the Trainer will take, trainable / total parameters (LoRA included)
and a rough memory estimate whose method the plan states.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hf_toolkit import compat
from hf_toolkit.core import modeling
from hf_toolkit.training import distillation

SHOWN_EXAMPLES = 3
LENGTH_SAMPLE = 5000  # training rows whose input lengths are measured
PIECE_CHARS = 400  # a longer piece of a shown example keeps its start and end
NO_LOSS = ("⟦", "⟧")  # marks tokens that carry no loss


@dataclass
class Plan:
    recipe_path: str
    recipe: dict[str, Any]
    rows: dict[str, int]
    examples_per_split: dict[str, int]
    examples: list[dict[str, list[dict[str, Any]]]]
    lengths: dict[str, Any]
    steps: dict[str, Any]
    parameters: dict[str, int]
    memory: dict[str, Any]
    setup_seconds: float
    notes: list[str] = field(default_factory=list)
    distillation: list[str] = field(default_factory=list)  # the teacher and the loss, when the recipe distils

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def make_plan(checked, splits, tokenizer, model, prepared, trainer, *, recipe_path: str | Path, started: float,
              created_output_dir: bool) -> Plan:
    """The plan of a run whose Trainer is built; removes the output directory the Trainer created."""
    recipe, task, args = checked.recipe, checked.task, checked.args
    if created_output_dir and Path(args.output_dir).is_dir():
        shutil.rmtree(args.output_dir)  # the Trainer makes it on construction: a dry run writes nothing
    setup = time.perf_counter() - started
    train = prepared["train"]
    examples = []
    for index in range(min(SHOWN_EXAMPLES, len(train))):
        row = collated_row(trainer.data_collator, train[index])
        parts = task.loss_view(recipe, tokenizer, model, row)
        examples.append({name: [{"text": text, "loss": loss} for text, loss in pieces] for name, pieces in parts.items()})
    return Plan(
        recipe_path=str(recipe_path),
        recipe=recipe.dump(),
        rows={name: split.num_rows for name, split in splits.items()},
        examples_per_split={name: len(split) for name, split in prepared.items()},
        examples=examples,
        lengths=input_lengths(task, recipe, tokenizer, model, splits["train"], train),
        steps=step_counts(trainer),
        parameters=parameter_counts(model),
        memory=memory_estimate(model, trainer.args, train),
        setup_seconds=round(setup, 2),
        notes=["nothing was trained and no run directory was written"],
        distillation=distillation.describe(recipe, trainer.teacher_model) if recipe.distillation is not None else [],
    )


def collated_row(collator, feature: dict[str, Any]) -> dict[str, list]:
    """One feature through the Trainer's collator (masked-LM masks here), as plain lists."""
    batch = collator([feature]) if collator is not None else {k: [v] for k, v in feature.items()}
    row = {}
    for key, value in batch.items():
        value = value.tolist() if hasattr(value, "tolist") else value
        row[key] = value[0] if isinstance(value, list) and value else value
    return row


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of sorted values."""
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))]


def input_lengths(task, recipe, tokenizer, model, examples, features) -> dict[str, Any]:
    """Token lengths of the training inputs (the task's input roles, special tokens included), before any
    truncation, and the share longer than what the task keeps; plus the prepared features' lengths."""
    required, optional = task.input_roles
    roles = [r for r in (*required, *optional) if r in examples.column_names][:2]
    sample = examples.select(range(min(LENGTH_SAMPLE, len(examples))))
    columns = [[v if isinstance(v, str) else "" for v in sample[role]] for role in roles]
    encoded = tokenizer(*columns, verbose=False)["input_ids"] if columns and len(sample) else []
    values = sorted(len(ids) for ids in encoded)
    limit = task.truncation_limit(recipe, tokenizer, model)
    report: dict[str, Any] = {
        "of": " + ".join(roles), "rows_measured": len(values),
        **{f"p{q}": percentile(values, q) for q in (50, 90, 99)}, "max": values[-1] if values else 0,
        "limit": limit,
        "cut_share": (sum(v > limit for v in values) / len(values)) if limit and values else 0.0,
    }
    feature_lengths = sorted(len(ids) for ids in features["input_ids"])
    report["features"] = {"p50": percentile(feature_lengths, 50), "max": feature_lengths[-1] if feature_lengths else 0}
    return report


def step_counts(trainer) -> dict[str, Any]:
    """Optimizer and warmup steps as the Trainer will count them (its own computation)."""
    args = trainer.args
    dataloader = trainer.get_train_dataloader()
    values = compat.initial_training_values(trainer, dataloader)
    max_steps = values["max_steps"]
    return {"optimizer_steps": max_steps, "epochs": values["epochs"], "steps_per_epoch": values["steps_per_epoch"],
            "batches_per_epoch": len(dataloader), "total_batch_size": values["total_batch_size"],
            "warmup_steps": args.get_warmup_steps(max_steps),
            "gradient_accumulation_steps": args.gradient_accumulation_steps}


def parameter_counts(model) -> dict[str, int]:
    return modeling.parameter_counts(model)


MEMORY_METHOD = (
    "weights: every parameter at its dtype; gradients: trainable parameters at their dtype; AdamW: two moment "
    "tensors per trainable parameter (other optimizers: not counted); activations: per layer s*b*h*(34 + 5*a*s/h) "
    "bytes at 16 bits (Korthikanti et al. 2022; doubled for fp32), with b the per-device batch, s the longest "
    "prepared training example, h/a/layers from the model config, plus the vocabulary logits and their gradient "
    "(b*s*V*8 bytes); gradient checkpointing keeps only each layer's input (s*b*h per layer). A lower bound: "
    "framework overhead, autocast's bf16 weight copies, the CUDA context and allocator fragmentation come on top "
    "(measured on CPU, GPT-2 12x768: peak RSS above the imports 1.3x this estimate with gradient checkpointing, "
    "1.5x full fine-tuning, 2.5-2.8x with LoRA; python -m benchmarks --only memory)"
)


def memory_estimate(model, args, features) -> dict[str, Any]:
    """A rough training-memory estimate per device, in bytes, with the method stated."""
    parameters = list(model.parameters())
    element = parameters[0].element_size() if parameters else 4
    counts = parameter_counts(model)
    weights = counts["total"] * element
    gradients = counts["trainable"] * element
    optimizer = 2 * counts["trainable"] * element if "adamw" in str(args.optim).lower() else 0
    act_bytes = 2 if (args.bf16 or args.fp16) else 4
    batch = args.per_device_train_batch_size
    seq = max((len(ids) for ids in features["input_ids"]), default=0)
    dims = modeling.config_dims(model.config)
    hidden, layers, heads, vocab = dims.hidden, dims.layers, dims.heads, dims.vocab
    if args.gradient_checkpointing:
        activations = layers * seq * batch * hidden * act_bytes
    else:
        activations = int(layers * seq * batch * hidden * (34 + 5 * heads * seq / max(hidden, 1)) * act_bytes / 2)
    logits = batch * seq * vocab * 8 if model.get_output_embeddings() is not None and vocab else 0
    total = weights + gradients + optimizer + activations + logits
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer, "activations": activations + logits,
            "total": total, "per_device_batch": batch, "sequence_length": seq, "method": MEMORY_METHOD}


# --------------------------------------------------------------------------------------------
# For a terminal


def format_plan(plan: Plan) -> str:
    lines = [f"Dry run of {plan.recipe_path}: {plan.notes[0]}.", "", "Recipe (resolved):"]
    lines += ["  " + line for line in yaml.safe_dump(plan.recipe, sort_keys=False, allow_unicode=True).splitlines()]
    lines += ["", "Data:"]
    for name, rows in plan.rows.items():
        lines.append(f"  {name}: {rows:,} rows -> {plan.examples_per_split.get(name, 0):,} examples")
    n = plan.lengths
    cut = (f"{100 * n['cut_share']:.1f}% longer than the task's limit of {n['limit']} tokens (cut there, or QA: split into windows)"
           if n["limit"] else "the task packs text into blocks: nothing is truncated")
    lines += ["", f"Token lengths of train inputs ({n['of']}, {n['rows_measured']:,} rows): p50 {n['p50']}  p90 {n['p90']}  "
              f"p99 {n['p99']}  max {n['max']}; {cut}",
              f"  prepared examples: p50 {n['features']['p50']}  max {n['features']['max']} tokens"]
    lines += ["", f"First {len(plan.examples)} training examples ({NO_LOSS[0]}…{NO_LOSS[1]}: tokens that carry no loss):"]
    for number, example in enumerate(plan.examples, 1):
        for name, pieces in example.items():
            lines.append(f"  [{number}] {name}: {render(pieces)}")
    s = plan.steps
    lines += ["", f"Steps: {s['optimizer_steps']:,} optimizer steps ({s['epochs']} epoch(s) of {s['steps_per_epoch']:,}; "
                  f"batch {s['total_batch_size']} x {s['gradient_accumulation_steps']} accumulation), warmup {s['warmup_steps']:,}"]
    p = plan.parameters
    lines += [f"{line[0].upper()}{line[1:]}" for line in plan.distillation]
    lines.append(f"Parameters: {p['total']:,} total, {p['trainable']:,} trainable ({100 * p['trainable'] / max(p['total'], 1):.2f}%)")
    m = plan.memory
    lines.append(f"Memory estimate per device (a lower bound): {_size(m['total'])} = weights {_size(m['weights'])} + gradients "
                 f"{_size(m['gradients'])} + AdamW states {_size(m['optimizer'])} + activations {_size(m['activations'])} "
                 f"(batch {m['per_device_batch']} x {m['sequence_length']} tokens)")
    lines.append(f"  how: {m['method']}")
    lines.append(f"Setup up to the first step took {plan.setup_seconds:.1f} s.")
    return "\n".join(lines)


def render(pieces: list[dict[str, Any]]) -> str:
    """Pieces of text joined, the ones without loss wrapped in ⟦ ⟧, long ones shortened in the middle."""
    out = []
    for piece in pieces:
        text = piece["text"]
        if len(text) > PIECE_CHARS:
            half = PIECE_CHARS // 2
            text = f"{text[:half]} … ({len(text) - 2 * half} chars) … {text[-half:]}"
        out.append(text if piece["loss"] else f"{NO_LOSS[0]}{text}{NO_LOSS[1]}")
    return "".join(out).replace("\n", "⏎")


def _size(n: int) -> str:
    """Bytes in binary units, named as such (1 MiB = 1024**2 bytes; "MB" would mean 1000**2)."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"
