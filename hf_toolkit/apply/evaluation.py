"""``hftk eval``: score prediction files (files mode), or a trained run over a data file (model mode).

Files mode reads predictions and references, checks that they line up, and hands them to
:func:`hf_toolkit.metrics.compute`; every number comes from the metric's reference
implementation. Accepted inputs:

- text metrics (bleu, chrf, ter, rouge) and labels (accuracy, precision, recall, f1): plain text,
  one item a line (several references: several reference files), or JSONL (``*.jsonl`` or
  whenever ``field`` is given) with the item in ``field`` (a reference field may hold a list of
  references). Labels that are all integers are compared as integers.
- squad / squad_v2: predictions as the official ``{id: answer_text}`` JSON (or a JSON list /
  JSONL of ``{"id", "prediction_text"}``); references as the official SQuAD JSON
  (``data/paragraphs/qas``) or JSONL ``{"id", "answers": {"text": [...], "answer_start": [...]}}``.

Model mode (:func:`score_model`) runs a run directory's model over a data file with its task's
``predict`` and scores the predictions. :func:`run_eval` holds the rules that choose between the
modes and their options; the CLI only passes what the user typed.

Anything unusable raises :class:`DataError` naming the file and what to fix. Nothing heavy is
imported here; the metrics import their libraries when called.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hf_toolkit import metrics as metrics_lib
from hf_toolkit.errors import DataError, HftkError


@dataclass
class EvalResult:
    scores: dict[str, float]
    predictions_file: Path | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)


def run_eval(metrics: Sequence[str], *, predictions: Path | None = None, references: Sequence[Path] = (),
             field_name: str | None = None, reference_field: str | None = None, ci: bool = False,
             compare: Path | None = None, model: Path | None = None, data: Path | None = None,
             overrides: Sequence[str] = (), word_order: int | None = None, chrf_plus_plus: bool = False,
             flags: Mapping[str, str] | None = None, **options) -> EvalResult:
    """``hftk eval`` in files or model mode, by what is given; warnings are collected, not printed.

    ``options`` are the metric options the user set (None: not set), so an option for a metric
    that was not requested is an error rather than silently unused. ``flags`` maps an option's
    keyword to how the user spells it (``hftk eval``: its flags); errors name an option so.
    """
    if chrf_plus_plus and word_order not in (None, 2):
        raise HftkError("--chrf-plus-plus means --chrf-word-order 2; give one of them")
    options["word_order"] = 2 if chrf_plus_plus else word_order
    options = {name: value for name, value in options.items() if value is not None}
    model_mode = model is not None or data is not None or bool(overrides)
    if model_mode and (predictions is not None or references):
        raise HftkError("give either --predictions/--references (files mode) or "
                        "--model/--data (model mode), not both")
    if model_mode and (ci or compare is not None):
        raise HftkError("--ci and --compare work in files mode: score the predictions file that "
                        "model mode writes (DIR/eval/<data>.predictions.jsonl) with them")
    if not model_mode and not metrics:
        raise HftkError("give at least one --metric (e.g. -m bleu); see hftk eval --help")
    if not model_mode and (predictions is None or not references):
        raise HftkError("files mode needs --predictions FILE and --references FILE (see hftk eval --help)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if model_mode:
            scored = score_model(metrics, model, data, overrides=overrides, **options)
            result = EvalResult(scored.scores, scored.predictions_file)
        else:
            result = EvalResult(score_files(metrics, predictions, references, field=field_name,
                                            reference_field=reference_field, compare=compare, ci=ci, flags=flags,
                                            **options))
    result.warnings = [str(warning.message) for warning in caught]
    return result


# --- reading ------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from None
    if not text:
        raise DataError(f"{path}: file is empty")
    return text


NOT_COUNTED = " (blank lines at the end of a file are not counted)"


def _lines(text: str) -> list[str]:
    # Text mode already turned \r\n into \n. A final newline ends the last item, it is not one, and
    # blank lines after the last item are an editor's or a shell's trailing space, not items; a blank
    # line between items is an item (an empty prediction).
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _jsonl_rows(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(_lines(_read_text(path)), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: each JSONL line must be an object, got {type(row).__name__}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: file has no JSON rows")
    return rows


def _field_value(path: Path, number: int, row: dict, field: str):
    if field not in row:
        raise DataError(f"{path}:{number}: no field '{field}' (fields: {', '.join(row)})")
    return row[field]


def read_items(path: Path, field: str | None = None) -> list:
    """Items of a plain-text file (one a line) or of ``field`` in a JSONL file."""
    path = Path(path)
    if field is None and path.suffix != ".jsonl":
        items = _lines(_read_text(path))
        if not items:
            raise DataError(f"{path}: file has no lines")
        return items
    rows = _jsonl_rows(path)
    if field is None:
        raise DataError(f"{path}: JSONL needs --field to say which field holds the text "
                        f"(fields of the first row: {', '.join(rows[0])})")
    return [_field_value(path, n, row, field) for n, row in enumerate(rows, start=1)]


def read_squad_predictions(path: Path, field: str | None = None) -> dict[str, str]:
    """``{id: answer}`` from official JSON, a JSON list or JSONL of {id, prediction_text}."""
    path = Path(path)
    text_field = field or "prediction_text"
    if path.suffix == ".jsonl":
        rows = _jsonl_rows(path)
    else:
        data = _load_json(path)
        if isinstance(data, dict):
            bad = [key for key, value in data.items() if not isinstance(value, str)]
            if bad:
                raise DataError(f"{path}: official SQuAD predictions map id -> answer text; "
                                f"'{bad[0]}' maps to {type(data[bad[0]]).__name__}")
            return data
        if not isinstance(data, list):
            raise DataError(f"{path}: expected {{id: answer}} or a list of {{id, prediction_text}}")
        rows = data
    predictions: dict[str, str] = {}
    for number, row in enumerate(rows, start=1):
        qid = str(_field_value(path, number, row, "id"))
        if qid in predictions:
            raise DataError(f"{path}:{number}: id '{qid}' appears twice")
        predictions[qid] = _field_value(path, number, row, text_field)
    return predictions


def read_squad_references(path: Path) -> dict[str, list[str]]:
    """``{id: [gold texts]}`` from official SQuAD JSON or JSONL with HF ``answers``."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = _jsonl_rows(path)
    else:
        data = _load_json(path)
        if not (isinstance(data, dict) and "data" in data):
            raise DataError(f"{path}: expected the official SQuAD layout {{\"data\": [{{\"paragraphs\": "
                            "[{\"qas\": [...]}]}]}} or a .jsonl file with id and answers")
        # Official layout: gold texts of every question of every paragraph of every article.
        return {qa["id"]: [answer["text"] for answer in qa["answers"]]
                for article in data["data"] for paragraph in article["paragraphs"]
                for qa in paragraph["qas"]}
    references: dict[str, list[str]] = {}
    for number, row in enumerate(rows, start=1):
        answers = _field_value(path, number, row, "answers")
        if not (isinstance(answers, dict) and "text" in answers):
            raise DataError(f"{path}:{number}: 'answers' must be {{\"text\": [...], \"answer_start\": [...]}}")
        references[str(_field_value(path, number, row, "id"))] = list(answers["text"])
    return references


def _load_json(path: Path):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None


# --- lining up ----------------------------------------------------------------------------

def _reference_streams(paths: Sequence[Path], field: str | None, n_items: int,
                       predictions_path: Path) -> list[list[str]]:
    """sacreBLEU streams: one per reference file, or several when a field holds lists."""
    streams: list[list[str]] = []
    for path in paths:
        items = read_items(path, field)
        if len(items) != n_items:
            raise DataError(f"{predictions_path} has {n_items} lines but {path} has {len(items)} "
                            f"lines; predictions and references must line up one to one{NOT_COUNTED}")
        if all(isinstance(item, str) for item in items):
            streams.append(items)
            continue
        per_item = [[item] if isinstance(item, str) else item for item in items]
        if not all(isinstance(refs, list) and all(isinstance(r, str) for r in refs) for refs in per_item):
            raise DataError(f"{path}: each reference must be a string or a list of strings")
        counts = {len(refs) for refs in per_item}
        if len(counts) > 1:
            raise DataError(f"{path}: items have different numbers of references {sorted(counts)}; "
                            "sacreBLEU needs the same number for every item")
        streams.extend(list(stream) for stream in zip(*per_item))
    return streams


def _as_labels(items: list, path: Path) -> list:
    """Integers when every label is an integer (``"1"`` == ``1``), else the labels as given."""
    def as_int(value):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return None
        try:
            return int(value)
        except ValueError:
            return None

    converted = [as_int(item) for item in items]
    if all(value is not None for value in converted):
        return converted
    if any(not isinstance(item, (str, int)) for item in items):
        raise DataError(f"{path}: labels must be strings or integers")
    return [str(item) for item in items]


# --- scoring ------------------------------------------------------------------------------

def _squad_inputs(predictions: Path, references: Sequence[Path], field: str | None):
    if len(references) != 1:
        raise HftkError(f"squad metrics take exactly one --references file, got {len(references)}")
    preds = read_squad_predictions(predictions, field)
    refs = read_squad_references(references[0])
    unknown = [qid for qid in preds if qid not in refs]
    if unknown:
        shown = ", ".join(repr(qid) for qid in unknown[:5])
        raise DataError(f"{len(unknown)} of {len(preds)} prediction ids in {predictions} are not in "
                        f"{references[0]} (first: {shown}); is that the right reference file?")
    unanswered = len(refs) - len(preds)
    if unanswered:
        warnings.warn(f"{unanswered} of {len(refs)} questions in {references[0]} have no prediction "
                      f"in {predictions}; they score 0 (as in the official SQuAD script)", stacklevel=3)
    return preds, refs


def _check_options(names: Sequence[str], options: dict, flags: Mapping[str, str]) -> None:
    """Reject an option that none of the requested metrics takes, before reading any file."""
    for option in options:
        if not any(option in metrics_lib.options_of(name) for name in names):
            users = [name for name in metrics_lib.METRICS if option in metrics_lib.options_of(name)]
            raise HftkError(f"{flags.get(option, option)} does not apply to {', '.join(names)}; it is an option of "
                            f"{', '.join(users) or 'no metric'}")


def _group(names: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"text": [], "labels": [], "squad": []}
    for name in names:
        if name == "perplexity":
            raise HftkError("perplexity scores a model, not a predictions file: run "
                            "`hftk eval --model RUN --data FILE -m perplexity` (RUN: a causal-LM "
                            "run directory written by hftk finetune; FILE: the texts to score)")
        kind = ("squad" if name in metrics_lib.SQUAD_METRICS else
                "labels" if name in metrics_lib.LABEL_METRICS else "text")
        groups[kind].append(name)
    if groups["squad"] and (groups["text"] or groups["labels"]):
        other = (groups["text"] + groups["labels"])[0]
        raise HftkError(f"'{groups['squad'][0]}' and '{other}' read different file formats (SQuAD "
                        f"answers by question id vs one {'label' if other in groups['labels'] else 'text'} "
                        "per line or JSONL row); score them in two runs")
    return {kind: names for kind, names in groups.items() if names}


def score_files(metrics: Sequence[str], predictions: Path, references: Sequence[Path], *,
                field: str | None = None, reference_field: str | None = None,
                compare: Path | None = None, ci: bool = False, flags: Mapping[str, str] | None = None,
                **options) -> dict[str, float]:
    """Score a predictions file against reference file(s); ONE dict metric key -> number.

    ``field`` names the JSONL field of predictions and references (``reference_field``
    overrides it for the references). ``compare`` is a second system's predictions file (same
    format) for a paired bootstrap test; ``ci`` adds bootstrap 95% intervals. ``options`` go to
    the metrics (``tokenize``, ``word_order``, ``use_stemmer``, ``split_sentences``, ``average``);
    errors name them as ``flags`` spells them (default: the keyword).
    """
    names = metrics_lib.check_names(metrics)
    _check_options(names, options, flags or {})
    if options.get("tokenize") is not None:
        # An unknown tokenizer or a missing optional package fails before any file is read.
        from hf_toolkit.metrics.sacrebleu_metrics import check_tokenizer

        check_tokenizer(options["tokenize"])
    if not references:
        raise HftkError("give at least one --references file")
    predictions = Path(predictions)
    ref_field = reference_field or field
    scores: dict[str, float] = {}
    for kind, group in _group(names).items():
        if kind == "squad":
            preds, refs = _squad_inputs(predictions, references, field)
            baseline = read_squad_predictions(compare, field) if compare else None
        else:
            preds = read_items(predictions, field)
            baseline = read_items(compare, field) if compare else None
            if baseline is not None and len(baseline) != len(preds):
                raise DataError(f"{predictions} has {len(preds)} lines but {compare} has "
                                f"{len(baseline)} lines; both systems must score the same items{NOT_COUNTED}")
            if kind == "labels":
                if len(references) != 1:
                    raise HftkError(f"label metrics take exactly one --references file, got {len(references)}")
                refs = _as_labels(read_items(references[0], ref_field), references[0])
                if len(refs) != len(preds):
                    raise DataError(f"{predictions} has {len(preds)} lines but {references[0]} has "
                                    f"{len(refs)} lines; predictions and references must line up{NOT_COUNTED}")
                preds = _as_labels(preds, predictions)
                baseline = _as_labels(baseline, compare) if baseline is not None else None
            else:
                if not all(isinstance(item, str) for item in preds):
                    raise DataError(f"{predictions}: predictions must be strings")
                refs = _reference_streams(references, ref_field, len(preds), predictions)
        group_options = {k: v for k, v in options.items()
                         if any(k in metrics_lib.options_of(name) for name in group)}
        scores.update(metrics_lib.compute(group, preds, refs, ci=ci, baseline=baseline,
                                          **group_options))
    return scores


# Model mode reads --data in the run's data.encoding, which --set changes.
SET_ENCODING = "give the file's encoding with --set data.encoding=ENCODING"


@dataclass
class ModelScores:
    scores: dict[str, float]
    predictions_file: Path | None
    scores_file: Path


def score_model(metrics: Sequence[str], model_dir: Path, data: Path, *,
                overrides: Sequence[str] = (), output_dir: Path | None = None, **options) -> ModelScores:
    """``hftk eval --model DIR --data F``: run a trained model over F and score its predictions.

    The task, column mapping and text encoding come from the run's saved recipe (``overrides`` as ``--set``);
    the task's ``predict`` makes the predictions (generation for generative tasks, labels or
    answer spans otherwise) and its ``eval_metrics`` are the default metrics. Everything that
    can be wrong with the request is found before the weights load. Predictions and scores are
    written to ``output_dir`` (default: ``DIR/eval``) as ``<F's file name>.predictions.jsonl`` and
    ``<F's file name>.scores.json``, extension kept (``test.csv.predictions.jsonl``), so files
    that differ only in their extension do not overwrite each other's; rows as the task's ``prediction_rows`` writes them.
    """
    from hf_toolkit.apply.generation import Generator
    from hf_toolkit.core import onnx_model, rundir
    from hf_toolkit.core.data import eval_rows, load_source
    from hf_toolkit.recipe.schema import LOCAL_FILE_SUFFIXES, DataSource
    from hf_toolkit.tasks import TASKS

    if model_dir is None or data is None:
        raise HftkError("model mode needs both --model RUN_DIR and --data FILE")
    if not Path(model_dir).is_dir():
        raise HftkError(f"--model: {model_dir} is not a directory (give a run directory written by hftk finetune)")
    run = rundir.open_run(model_dir, overrides)
    recipe = run.recipe
    if recipe is None:
        raise HftkError(
            f"--model: {model_dir} has no {rundir.RECIPE_FILE}, so its task and columns are unknown; "
            "give a run directory written by hftk finetune, or score a predictions file with --predictions/--references"
        )
    if not Path(data).is_file():
        raise DataError(f"--data: file not found: {data}")
    if Path(data).suffix.lower() not in LOCAL_FILE_SUFFIXES:
        raise DataError(f"--data: '{data}' has an unsupported extension; use one of {', '.join(LOCAL_FILE_SUFFIXES)}")
    task = TASKS[recipe.task]
    names = metrics_lib.check_names(list(metrics) or list(task.eval_metrics))
    fitting = [m for default in task.eval_metrics for m in metrics_lib.family_of(default)]
    unfit = [name for name in names if name not in fitting]
    if unfit:
        raise HftkError(f"--metric {unfit[0]}: does not score what a {recipe.task} run predicts; "
                        f"use {', '.join(dict.fromkeys(fitting))}")
    source = load_source(DataSource(file=str(data)), encoding=recipe.data.encoding, set_encoding=SET_ENCODING)
    dataset = eval_rows(
        source, recipe.data, task.roles, task.optional_roles, where=f"--data {data}",
        how_to_map="Map roles to the file's columns with --set, e.g. --set data.columns.{role}={column}",
        read_rows=task.read_rows, text_roles=task.text_roles,
    )
    if not metrics:
        names = list(task.default_metrics(dataset))
    # The task's metric options (e.g. macro averaging) apply where a chosen metric takes them.
    accepted = {option for name in names for option in metrics_lib.options_of(name)}
    options = {**{k: v for k, v in task.metric_options(recipe).items() if k in accepted}, **options}
    config = rundir.load_config(run)
    task.check_eval_rows(config, dataset)

    if task.generates and not onnx_model.is_exported(run.location):  # an ONNX causal LM scores text only
        generator = Generator(run)
        model, tokenizer = generator.model, generator.tokenizer

        def generate(prompts: list[str]) -> list[str]:
            return [result.text for result in generator.generate(generator.prepare(prompts, {"num_return_sequences": 1}))]
    else:
        model, tokenizer = rundir.load_model(run, config)
        generate = _no_generation
    predictions, references = task.predict(model, tokenizer, recipe, dataset, generate)
    if "perplexity" in names:
        options.update(model=model, tokenizer=tokenizer)
    scores = metrics_lib.compute(names, predictions, references, **options)

    out = Path(output_dir) if output_dir is not None else run.path(rundir.EVAL_DIR)
    out.mkdir(parents=True, exist_ok=True)
    predictions_file = None
    if references is not None:
        rows = task.prediction_rows(model, tokenizer, dataset, predictions, references)
        predictions_file = out / f"{Path(data).name}.predictions.jsonl"
        predictions_file.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    scores_file = out / f"{Path(data).name}.scores.json"
    scores_file.write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
    return ModelScores(scores, predictions_file, scores_file)


def _no_generation(prompts: list[str]) -> list[str]:
    raise AssertionError("a task that does not generate asked for generation")


# --- output -------------------------------------------------------------------------------

_DERIVED = ("_mean", "_ci95", "_baseline", "_p_value")


def format_table(scores: dict[str, float]) -> str:
    """Aligned rows, one per metric key; bootstrap CI and comparison keys become columns."""
    derived = {key for key in scores for suffix in _DERIVED
               if key.endswith(suffix) and key[: -len(suffix)] in scores}
    show_ci = any(key.endswith("_ci95") for key in derived)
    show_compare = any(key.endswith("_p_value") for key in derived)
    rows = [["metric", "value"] + (["95% CI (bootstrap)"] if show_ci else [])
            + (["baseline", "p-value"] if show_compare else [])]
    for key, value in scores.items():
        if key in derived:
            continue
        row = [key, f"{value:.4f}"]
        if show_ci:
            row.append(f"{scores[key + '_mean']:.4f} +/- {scores[key + '_ci95']:.4f}"
                       if key + "_ci95" in scores else "")
        if show_compare:
            row += ([f"{scores[key + '_baseline']:.4f}", f"{scores[key + '_p_value']:.4f}"]
                    if key + "_p_value" in scores else ["", ""])
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
