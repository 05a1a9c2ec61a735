"""``hftk compare RUN... --data FILE``: the trade-off between models of one task, measured in one process.

For each model (a run directory, a pruned or distilled run, or an ONNX export, fp32 or int8) it
measures, on this machine and in this order:

- parameters (PyTorch: the model's parameters; ONNX: the elements of the graph's weights) and
  the size of the weight files on disk (safetensors, ``.bin``, ``.onnx`` with its external data);
- latency at batch 1: the median (p50) over up to :data:`LATENCY_ROWS` rows of FILE of one
  ``hftk predict`` call each (tokenization included), after one warm-up call;
- throughput at batch 32: rows per second over up to :data:`THROUGHPUT_ROWS` rows of FILE,
  predicted in batches of 32, after one warm-up batch;
- the task's metric on FILE, as ``hftk eval --model MODEL --data FILE`` computes it (its files
  go to a temporary directory; nothing is written next to the models).

Text classification (accuracy) and question answering (SQuAD F1) runs; every model must be of
the same task. :func:`plot` draws the metric against throughput.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hf_toolkit.core import modeling, onnx_model, rundir
from hf_toolkit.errors import HftkError

LATENCY_ROWS = 30
THROUGHPUT_ROWS = 256
BATCH = 32
METRICS = {"text-classification": ("accuracy", "accuracy"), "question-answering": ("squad_v2", "f1")}


@dataclass
class Measured:
    model: str
    params: int
    size_mb: float
    latency_p50_ms: float
    throughput_per_s: float
    metric: str
    value: float


def compare(models: list[Path], data: Path, overrides: list[str] | tuple[str, ...] = ()) -> list[Measured]:
    """Measure every model on `data` (see the module docstring); `overrides` (``--set``) apply to every
    model's recipe, e.g. ``data.columns.text=text`` for a file whose columns differ from training's."""
    from hf_toolkit.tasks import TASKS

    if len(models) < 1:
        raise HftkError("give at least one run directory or export to compare")
    runs = []
    for model in models:
        if not Path(model).is_dir():
            raise HftkError(f"{model} is not a directory (give run directories or hftk export outputs)")
        run = rundir.open_run(str(model), overrides)
        if run.recipe is None:
            raise HftkError(f"{model} has no {rundir.RECIPE_FILE}: compare reads the task and columns of runs written "
                            "by hftk finetune (prune and export keep the recipe)")
        runs.append(run)
    tasks = {run.recipe.task for run in runs}
    if len(tasks) > 1:
        raise HftkError(f"the models are of different tasks ({', '.join(sorted(tasks))}); compare models of one task")
    task = TASKS[tasks.pop()]
    if task.name not in METRICS:
        raise HftkError(f"hftk compare measures {', '.join(METRICS)} models; these are {task.name}")
    return [measure(run, task, Path(model), data, overrides) for run, model in zip(runs, models)]


def measure(run: Any, task: Any, model_dir: Path, data: Path, overrides: list[str] | tuple[str, ...] = ()) -> Measured:
    """One model's row: metric first (it also checks the data), then size, latency and throughput."""
    from hf_toolkit.apply.evaluation import score_model
    from hf_toolkit.apply.prune import weights_mb

    metric_name, key = METRICS[task.name]
    with tempfile.TemporaryDirectory() as scratch:
        scores = score_model([metric_name], model_dir, data, overrides=overrides, output_dir=Path(scratch)).scores
    model, tokenizer = rundir.load_model(run)
    inputs = input_rows(run, task, data)
    count = len(next(iter(inputs.values())))
    single = [{role: values[i : i + 1] for role, values in inputs.items()} for i in range(min(count, LATENCY_ROWS))]
    task.predict_records(model, tokenizer, run.recipe, single[0], batch_size=1)  # warm-up
    latencies = []
    for row in single:
        start = time.perf_counter()
        task.predict_records(model, tokenizer, run.recipe, row, batch_size=1)
        latencies.append(time.perf_counter() - start)
    many = {role: values[:THROUGHPUT_ROWS] for role, values in inputs.items()}
    task.predict_records(model, tokenizer, run.recipe, {r: v[:BATCH] for r, v in many.items()}, batch_size=BATCH)
    start = time.perf_counter()
    task.predict_records(model, tokenizer, run.recipe, many, batch_size=BATCH)
    seconds = time.perf_counter() - start
    return Measured(str(model_dir), parameters(model, model_dir), weights_mb(model_dir),
                    statistics.median(latencies) * 1000, len(next(iter(many.values()))) / seconds, key, float(scores[key]))


def input_rows(run: Any, task: Any, data: Path) -> dict[str, list]:
    """The input roles of `data`'s rows, read with the run's column mapping (as hftk eval reads them)."""
    from hf_toolkit.apply.evaluation import SET_ENCODING
    from hf_toolkit.core.data import eval_rows, load_source
    from hf_toolkit.recipe.schema import DataSource

    recipe = run.recipe
    source = load_source(DataSource(file=str(data)), encoding=recipe.data.encoding, set_encoding=SET_ENCODING)
    dataset = eval_rows(source, recipe.data, task.roles, task.optional_roles, where=f"--data {data}",
                        how_to_map="Map roles to the file's columns with --set, e.g. --set data.columns.{role}={column}", read_rows=task.read_rows,
                        text_roles=task.text_roles)
    required, optional = task.input_roles
    return {role: list(dataset[role]) for role in (*required, *optional) if role in dataset.column_names}


def parameters(model: Any, model_dir: Path) -> int:
    """Parameters of a PyTorch model, or the weight elements of an ONNX graph."""
    if isinstance(model, onnx_model.OnnxModel):
        import math

        import onnx

        graph = onnx.load(str(model_dir / onnx_model.ONNX_FILE), load_external_data=False).graph
        return sum(math.prod(tensor.dims) for tensor in graph.initializer)
    return modeling.parameter_counts(model)["total"]


def format_table(rows: list[Measured]) -> str:
    """One aligned table, a row per model."""
    head = ["model", "params", "size MB", "p50 ms @1", "rows/s @32", rows[0].metric]
    body = [[r.model, f"{r.params:,}", f"{r.size_mb:.1f}", f"{r.latency_p50_ms:.1f}", f"{r.throughput_per_s:.1f}",
             f"{r.value:.4f}"] for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
                     for line in [head, *body])


def to_json(rows: list[Measured]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def plot(rows: list[Measured], path: Path) -> Path:
    """The metric against throughput, one labelled point per model, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for r in rows:
        axes.scatter(r.throughput_per_s, r.value)
        axes.annotate(Path(r.model).name, (r.throughput_per_s, r.value), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel(f"throughput at batch {BATCH} (rows/s, this machine)")
    axes.set_ylabel(rows[0].metric)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
