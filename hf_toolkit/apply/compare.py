"""``hftk compare RUN... --data FILE``: the trade-off between models of one task, measured in one process.

For each model (a run directory, a pruned or distilled run, or an ONNX export, fp32 or int8) it
measures, on this machine and in this order:

- the task's metric on FILE, as ``hftk eval --model MODEL --data FILE -m METRIC`` computes it (its
  files go to a temporary directory; nothing is written next to the models). The task names the
  metric, its direction and the work that is timed (:class:`hf_toolkit.tasks.base.CompareMetric`):

  ====================  =======================  ==========  ================================
  task                  metric (key)             better      timed work (throughput unit)
  ====================  =======================  ==========  ================================
  text-classification   accuracy                 higher      hftk predict (rows/s)
  question-answering    squad_v2 (f1)            higher      hftk predict (rows/s)
  summarization         rouge (rougeL)           higher      one generate call per row (rows/s)
  translation           bleu                     higher      one generate call per row (rows/s)
  causal-lm             perplexity               lower       a forward pass per text (tokens/s)
  masked-lm             masked-token accuracy    higher      a forward pass per text (tokens/s)
  ====================  =======================  ==========  ================================

  (masked-lm: ``hftk eval --model`` scores a masked LM by the accuracy of its top prediction at
  seeded masked positions; it computes no perplexity for one, so compare does not either);
- parameters (PyTorch: the model's parameters; ONNX: the elements of the graph's weights) and
  the size of the weight files on disk (safetensors, ``.bin``, ``.onnx`` with its external data);
- latency at batch 1: the median (p50) over up to :data:`LATENCY_ROWS` rows of FILE of the timed
  work on one row (tokenization included), after one warm-up call; generation runs with the run's
  own generation settings (its ``generation_config.json``), as ``hftk eval --model`` generates;
- throughput at batch :data:`BATCH`: rows (or, for scored text, non-padding tokens) per second
  over up to :data:`THROUGHPUT_ROWS` rows of FILE, in batches of 32, after one warm-up batch.
  A text is cut at the model's context.

Every model must be of the same task. ONNX exports (``hftk export --format onnx``) of the tasks that
do not generate are measured with onnxruntime; an ONNX graph has no KV cache, so seq2seq exports do
not exist and a causal LM's is timed by scoring, as its PyTorch run is. :func:`plot` draws the
metric against throughput.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hf_toolkit.core import modeling, onnx_model, rundir
from hf_toolkit.errors import HftkError

LATENCY_ROWS = 30
THROUGHPUT_ROWS = 256
BATCH = 32


@dataclass
class Measured:
    model: str
    params: int
    size_mb: float
    latency_p50_ms: float
    throughput_per_s: float
    throughput_unit: str  # "rows" or "tokens" per second
    metric: str
    value: float
    higher_is_better: bool


def supported() -> str:
    """The tasks and formats compare measures, for messages."""
    from hf_toolkit.tasks import TASKS

    runs = [name for name, task in TASKS.items() if task.compare_metric is not None]
    exports = [name for name in runs if TASKS[name].compare_metric.timing != "generate"]
    return f"runs of {', '.join(runs)}; ONNX exports of {', '.join(exports)}"


def compare(models: list[Path], data: Path, overrides: list[str] | tuple[str, ...] = ()) -> list[Measured]:
    """Measure every model on `data` (see the module docstring); `overrides` (``--set``) apply to every
    model's recipe, e.g. ``data.columns.text=text`` for a file whose columns differ from training's.
    Every check on the models comes before any of them loads."""
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
    if task.compare_metric is None:
        raise HftkError(f"hftk compare measures {supported()}; {models[0]} is a {task.name} model")
    if task.compare_metric.timing == "generate":
        for model in models:
            if onnx_model.is_exported(model):
                raise HftkError(f"{model} is an ONNX export of a {task.name} model, which hftk compare cannot time (an "
                                f"ONNX graph has no KV cache, so it does not generate); it measures {supported()}. "
                                "Compare the run directory it was exported from")
    return [measure(run, task, Path(model), data, overrides) for run, model in zip(runs, models)]


def measure(run: Any, task: Any, model_dir: Path, data: Path, overrides: list[str] | tuple[str, ...] = ()) -> Measured:
    """One model's row: metric first (it also checks the data), then size, latency and throughput."""
    from hf_toolkit.apply.evaluation import score_model
    from hf_toolkit.apply.prune import weights_mb

    spec = task.compare_metric
    with tempfile.TemporaryDirectory() as scratch:
        scores = score_model([spec.metric], model_dir, data, overrides=overrides, output_dir=Path(scratch)).scores
    inputs = input_rows(run, task, data)
    if spec.timing == "score":  # an empty text has nothing to score (the metric skips it too)
        inputs = {role: [text for text in values if text and text.strip()] for role, values in inputs.items()}
    model, work = TIMED[spec.timing](run, task)
    count = len(next(iter(inputs.values())))
    single = [{role: values[i : i + 1] for role, values in inputs.items()} for i in range(min(count, LATENCY_ROWS))]
    work(single[0], 1)  # warm-up
    latencies = []
    for row in single:
        start = time.perf_counter()
        work(row, 1)
        latencies.append(time.perf_counter() - start)
    many = {role: values[:THROUGHPUT_ROWS] for role, values in inputs.items()}
    work({role: values[:BATCH] for role, values in many.items()}, BATCH)
    start = time.perf_counter()
    done = work(many, BATCH)
    seconds = time.perf_counter() - start
    return Measured(str(model_dir), parameters(model, model_dir), weights_mb(model_dir),
                    statistics.median(latencies) * 1000, done / seconds, spec.unit, spec.key, float(scores[spec.key]),
                    spec.higher_is_better)


# The timed work: each loads the model and returns (model, work); work(inputs, batch_size) does the
# task's work on `inputs` (input roles -> lists) and returns how many rows (or tokens) it did.
Work = Callable[[dict[str, list], int], int]


def predicting(run: Any, task: Any) -> tuple[Any, Work]:
    """``hftk predict``'s records (tokenization and post-processing included)."""
    model, tokenizer = rundir.load_model(run)

    def work(inputs: dict[str, list], batch_size: int) -> int:
        return len(task.predict_records(model, tokenizer, run.recipe, inputs, batch_size=batch_size))

    return model, work


def generating(run: Any, task: Any) -> tuple[Any, Work]:
    """One generated text per source, with the run's generation settings, as ``hftk eval --model`` generates."""
    from hf_toolkit.apply.generation import Generator

    generator = Generator(run)
    (role,) = task.input_roles[0]

    def work(inputs: dict[str, list], batch_size: int) -> int:
        request = generator.prepare(list(inputs[role]), {"num_return_sequences": 1})
        return len(generator.generate(request, batch_size=batch_size))

    return generator.model, work


def scoring(run: Any, task: Any) -> tuple[Any, Work]:
    """A forward pass over each text (cut at the model's context), the work of perplexity and masked-token
    scoring; counts the tokens that are not padding."""
    import torch

    model, tokenizer = rundir.load_model(run)
    context = modeling.context_length(model.config)
    (role,) = task.input_roles[0]

    def work(inputs: dict[str, list], batch_size: int) -> int:
        texts, tokens = inputs[role], 0
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=context is not None,
                              max_length=context, return_tensors="pt").to(model.device)
            with torch.no_grad():
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            tokens += int(batch["attention_mask"].sum())
        return tokens

    return model, work


TIMED: dict[str, Callable[[Any, Any], tuple[Any, Work]]] = {"predict": predicting, "generate": generating, "score": scoring}


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


def direction(row: Measured) -> str:
    return "higher is better" if row.higher_is_better else "lower is better"


def format_table(rows: list[Measured]) -> str:
    """One aligned table, a row per model; the headers say the throughput unit and the metric's direction."""
    first = rows[0]
    head = ["model", "params", "size MB", "p50 ms @1", f"{first.throughput_unit}/s @{BATCH}", f"{first.metric} ({direction(first)})"]
    body = [[r.model, f"{r.params:,}", f"{r.size_mb:.1f}", f"{r.latency_p50_ms:.1f}", f"{r.throughput_per_s:.1f}",
             f"{r.value:.4f}"] for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
                     for line in [head, *body])


def to_json(rows: list[Measured]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def plot(rows: list[Measured], path: Path) -> Path:
    """The metric against throughput, one labelled point per model, as a PNG: the best trade-off is up
    and to the right (a lower-is-better metric's axis is inverted, and says so)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    middle = (min(r.throughput_per_s for r in rows) + max(r.throughput_per_s for r in rows)) / 2
    for r in rows:
        axes.scatter(r.throughput_per_s, r.value)
        right_half = len(rows) > 1 and r.throughput_per_s > middle  # its label reads leftwards, inside the axes
        axes.annotate(Path(r.model).name, (r.throughput_per_s, r.value), textcoords="offset points", fontsize=8,
                      xytext=(-4, 4) if right_half else (4, 4), ha="right" if right_half else "left")
    first = rows[0]
    axes.set_xlabel(f"throughput at batch {BATCH} ({first.throughput_unit}/s, this machine)")
    if first.higher_is_better:
        axes.set_ylabel(f"{first.metric} (higher is better)")
    else:  # better is up on every plot: the axis of a lower-is-better metric runs downwards
        axes.set_ylabel(f"{first.metric} (lower is better; axis inverted)")
        axes.invert_yaxis()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")  # a label past the axes widens the picture, not cut off
    plt.close(figure)
    return path
