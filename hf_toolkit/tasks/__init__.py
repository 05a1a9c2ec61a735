"""The tasks hftk can train, one module each, listed in one explicit dict.

A task module reads top to bottom and provides:

- ``ROLES`` / ``OPTIONAL_ROLES``: the data roles it needs / uses when present (see ``data.columns``);
- ``TRAINER``: ``"Trainer"`` or ``"Seq2SeqTrainer"``;
- ``auto_model()``: the transformers Auto class to build;
- ``model_config(recipe, splits)``: task settings for the model config (e.g. ``num_labels``);
- ``prepare(recipe, splits, tokenizer, model)``: tokenized splits ready for the Trainer;
- ``trainer_kwargs(recipe, tokenizer, model)``: data collator, compute_metrics, ...;
- ``finish_metrics(metrics, prefix)``: derived numbers (e.g. perplexity) added to evaluation output.
"""

from __future__ import annotations

from types import ModuleType

from hf_toolkit.errors import HftkError
from hf_toolkit.tasks import causal_lm

TASKS: dict[str, ModuleType] = {
    "causal-lm": causal_lm,
}


def get_task(name: str) -> ModuleType:
    """The module for a task named in a recipe; a clear error for one that is not built yet."""
    if name not in TASKS:
        raise HftkError(
            f"task '{name}' is not available yet in this version of hftk (available: {', '.join(TASKS)})"
        )
    return TASKS[name]
