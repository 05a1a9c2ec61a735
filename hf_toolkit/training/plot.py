"""The pictures hftk draws: a run's loss curve, and a sweep's trials.

The loss curve: training and evaluation loss by step, and the evaluation metrics by step in a
second panel when there are any, drawn from the Trainer's log history into ``loss_curve.png`` of the
run directory (:data:`hf_toolkit.core.rundir.LOSS_PLOT`), which the model card links to.

A sweep's (:func:`sweep_pictures`, from the rows of its trials.csv): ``trials.png``, the metric by
trial with the best so far, and ``params.png``, each parameter against the metric. A pruned trial is
drawn as an x at the last value it reported. All drawn with matplotlib's Agg backend (no display needed).
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


def sweep_pictures(rows: list[dict[str, Any]], params: list[str], metric: str, direction: str, folder: str | Path,
                   log_keys: list[str] = ()) -> None:
    """Write trials.png and params.png into `folder` from a sweep's trial rows (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    complete = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    pruned = [r for r in rows if r["state"] == "PRUNED" and r["last_evaluation"] is not None]
    folder = Path(folder)
    figure = Figure(figsize=(6, 4), dpi=100, layout="constrained")
    axes = figure.subplots()
    axes.plot([r["number"] for r in complete], [r["value"] for r in complete], "o", label="finished")
    if pruned:
        axes.plot([r["number"] for r in pruned], [r["last_evaluation"] for r in pruned], "x", color="grey",
                  label="pruned (last evaluation)")
    best, steps = None, []
    for r in complete:
        better = best is None or (r["value"] > best if direction == "maximize" else r["value"] < best)
        best = r["value"] if better else best
        steps.append((r["number"], best))
    if steps:
        axes.step(*zip(*steps), where="post", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} by trial ({direction})")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(folder / "trials.png", format="png")

    figure = Figure(figsize=(4 * len(params), 3.6), dpi=100, layout="constrained")
    for axes, key in zip(figure.subplots(1, len(params), squeeze=False)[0], params):
        for group, style, column in ((complete, "o", "value"), (pruned, "x", "last_evaluation")):
            points = [(r[key], r[column]) for r in group if r[key] is not None]
            if points:
                xs, ys = zip(*points)
                if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
                    xs = [str(x) for x in xs]  # choices that are not all numbers: one column each
                axes.plot(xs, ys, style, color="grey" if style == "x" else None)
        if key in log_keys:
            from matplotlib.ticker import NullFormatter

            axes.set_xscale("log")
            axes.xaxis.set_minor_formatter(NullFormatter())  # the minor labels of a short log range overlap
        axes.set_xlabel(key)
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
    figure.savefig(folder / "params.png", format="png")
