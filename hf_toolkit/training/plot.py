"""The loss-curve picture of a run: training and evaluation loss by step, and the evaluation
metrics by step in a second panel when there are any, drawn from the Trainer's log history.

Drawn with matplotlib's Agg backend (no display needed) into ``loss_curve.png`` of the run
directory (:data:`hf_toolkit.core.rundir.LOSS_PLOT`), which the model card links to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Logged keys that are bookkeeping, not a quality of the model.
NOT_METRICS = ("_runtime", "_samples_per_second", "_steps_per_second", "_loss", "_epoch", "_gen_len")


def eval_metric_keys(log_history: list[dict[str, Any]]) -> list[str]:
    """``eval_*`` keys of the log history that are metrics (accuracy, rouge1, ...), in first-seen order."""
    keys: list[str] = []
    for entry in log_history:
        for key, value in entry.items():
            if (key.startswith("eval_") and not key.endswith(NOT_METRICS) and isinstance(value, (int, float))
                    and key not in keys):
                keys.append(key)
    return keys


def loss_curve(log_history: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Write the picture to `path`; None (and no file) when the history holds no loss at all."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evaluation = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    if not train and not evaluation:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    metric_keys = eval_metric_keys(log_history)
    figure = Figure(figsize=(10 if metric_keys else 6, 4), dpi=100, layout="constrained")
    axes = figure.subplots(1, 2 if metric_keys else 1, squeeze=False)[0]
    loss_axes = axes[0]
    for points, label, style in ((train, "train loss", "-"), (evaluation, "eval loss", "o-")):
        if points:
            steps, values = zip(*points)
            loss_axes.plot(steps, values, style, label=label, markersize=4)
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("loss")
    loss_axes.grid(alpha=0.3)
    loss_axes.legend()
    if metric_keys:
        metric_axes = axes[1]
        for key in metric_keys:
            points = [(e["step"], e[key]) for e in log_history if key in e and "step" in e]
            if points:
                steps, values = zip(*points)
                metric_axes.plot(steps, values, "o-", label=key.removeprefix("eval_"), markersize=4)
        metric_axes.set_xlabel("step")
        metric_axes.set_title("evaluation metrics")
        metric_axes.grid(alpha=0.3)
        metric_axes.legend()
    if title:
        figure.suptitle(title)
    path = Path(path)
    figure.savefig(path, format="png")
    return path
