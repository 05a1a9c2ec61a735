"""``hftk predict``: apply a trained non-generative model (classifier, extractive QA, fill-mask) to inputs.

The task comes from the run directory's ``hftk_recipe.yaml``; for a plain Hugging Face model
directory (or hub id) it is inferred from ``config.architectures`` (``*ForSequenceClassification``,
``*ForQuestionAnswering``, ``*ForMaskedLM``). Inputs come from the command line or a data file;
the ML work is done by the task modules' inference functions, so ``hftk predict`` and
``hftk eval --model`` compute predictions the same way. Every input gives one plain-data record:

- text-classification: ``{"text", ["text_pair"], "label", "score", "probabilities": {label: p}}``
- question-answering: ``{"question", "context", "answer", "score", "start", "end"}``, where
  ``answer == context[start:end]`` (``""`` and -1/-1 when a SQuAD v2 model finds no answer)
- masked-lm (fill-mask): ``{"text", "fills": [[{"token", "score", "sequence"}, ...] per mask token]}``

Input mistakes (wrong options for the model's task, a file without the needed columns) raise
:class:`HftkError` before the model weights are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_toolkit import modeling
from hf_toolkit.errors import DataError, HftkError

PREDICT_TASKS = tuple(modeling.PREDICTION_HEADS.values())


@dataclass
class Inputs:
    """What the user gave on the command line (or in a file)."""

    texts: list[str] = field(default_factory=list)
    text_pairs: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)
    file: Path | None = None


def predict(model_ref: str, inputs: Inputs, *, top_k: int = 5, batch_size: int = 16) -> tuple[str, list[dict[str, Any]]]:
    """(task name, one record per input) for a run directory, local model dir or hub id."""
    from hf_toolkit.generation import read_run_recipe

    modeling.locate(model_ref, "model")
    recipe = read_run_recipe(model_ref)
    task = recipe.task if recipe is not None else infer_task(model_ref)
    if task not in PREDICT_TASKS:
        raise HftkError(
            f"{model_ref} is a {task} model; hftk predict applies {', '.join(PREDICT_TASKS)} models. "
            f"For text generation use: hftk generate --model {model_ref} --prompt '...'"
        )
    inputs = read_inputs(task, inputs, recipe)
    if task == "text-classification":
        return task, classify(model_ref, recipe, inputs, batch_size=batch_size)
    if task == "question-answering":
        return task, answer(model_ref, recipe, inputs, batch_size=batch_size)
    return task, fill_mask(model_ref, inputs, top_k=top_k, batch_size=batch_size)


def infer_task(model_ref: str) -> str:
    """The task of a plain model directory, from its config's architectures."""
    config = modeling.load_config(model_ref)
    task = modeling.prediction_head(config)
    if task is not None:
        return task
    raise HftkError(
        f"cannot tell what {model_ref} predicts: its config.json lists architectures {config.architectures} and "
        "hftk predict needs a *ForSequenceClassification, *ForQuestionAnswering or *ForMaskedLM model "
        "(for text generation use hftk generate)"
    )


# --------------------------------------------------------------------------------------------
# Inputs


def read_inputs(task: str, inputs: Inputs, recipe) -> Inputs:
    """Check that the inputs suit the task and add the rows of --file."""
    wanted = "--question and --context" if task == "question-answering" else "--text"
    if task == "question-answering" and inputs.texts:
        raise HftkError(f"this is a question-answering model: give {wanted} (or --file), not --text")
    if task != "question-answering" and (inputs.questions or inputs.contexts):
        raise HftkError(f"this is a {task} model: give --text (or --file), not --question/--context")
    if task == "masked-lm" and inputs.text_pairs:
        raise HftkError("--text-pair is for text-classification models; a fill-mask model takes --text only")
    if inputs.text_pairs and len(inputs.text_pairs) != len(inputs.texts):
        raise HftkError(f"{len(inputs.texts)} --text but {len(inputs.text_pairs)} --text-pair; give one --text-pair per --text")
    if task == "question-answering":
        if len(inputs.contexts) == 1 and len(inputs.questions) > 1:
            inputs.contexts = inputs.contexts * len(inputs.questions)
        if len(inputs.questions) != len(inputs.contexts):
            raise HftkError(
                f"{len(inputs.questions)} --question but {len(inputs.contexts)} --context; give one --context per "
                "--question, or one --context for all of them"
            )
    if inputs.file is not None:
        add_file_rows(task, inputs, recipe)
    if not (inputs.texts or inputs.questions):
        raise HftkError(f"nothing to predict: give {wanted}, or --file with one input per row")
    return inputs


def add_file_rows(task: str, inputs: Inputs, recipe) -> None:
    """Rows of a json/jsonl/csv/tsv/parquet/txt file, columns named as the run's recipe maps them or by role."""
    from hf_toolkit.data import eval_rows, load_source
    from hf_toolkit.recipe import LOCAL_FILE_SUFFIXES, DataSource

    path = Path(inputs.file)
    if not path.is_file():
        raise DataError(f"--file: file not found: {path}")
    if path.suffix.lower() not in LOCAL_FILE_SUFFIXES:
        raise DataError(f"--file: '{path}' has an unsupported extension; use one of {', '.join(LOCAL_FILE_SUFFIXES)}")
    dataset = load_source(DataSource.model_construct(file=str(path), path=None, name=None, split=None, data_files=None))
    roles, optional = {"text-classification": (("text",), ("text_pair",)), "question-answering": (("question", "context"), ()), "masked-lm": (("text",), ())}[task]
    dataset = eval_rows(
        dataset, recipe.data if recipe is not None else None, roles, optional, where=f"--file {path}",
        how_to_map="Name the file's columns by role (" + ", ".join(roles + optional) + ")",
    )
    if task == "question-answering":
        inputs.questions += list(dataset["question"])
        inputs.contexts += list(dataset["context"])
        return
    if inputs.texts and bool(inputs.text_pairs) != ("text_pair" in dataset.column_names):
        raise HftkError("mix of inputs with and without a text pair: give --text-pair for every --text, or none, as in --file")
    inputs.texts += list(dataset["text"])
    if "text_pair" in dataset.column_names:
        inputs.text_pairs += list(dataset["text_pair"])


# --------------------------------------------------------------------------------------------
# Per task


def classify(model_ref: str, recipe, inputs: Inputs, *, batch_size: int) -> list[dict[str, Any]]:
    from transformers import AutoModelForSequenceClassification

    from hf_toolkit.tasks import text_classification

    model, tokenizer = modeling.load_trained(AutoModelForSequenceClassification, model_ref)
    pairs = inputs.text_pairs or None
    max_length = recipe.data.max_length if recipe is not None else None
    probabilities = text_classification.classify(model, tokenizer, inputs.texts, pairs, max_length=max_length, batch_size=batch_size)
    names = [model.config.id2label[i] for i in range(len(probabilities[0]))] if probabilities else []
    records = []
    for i, p in enumerate(probabilities):
        best = max(range(len(p)), key=p.__getitem__)
        record: dict[str, Any] = {"text": inputs.texts[i]}
        if pairs is not None:
            record["text_pair"] = pairs[i]
        record.update(label=names[best], score=p[best], probabilities=dict(zip(names, p)))
        records.append(record)
    return records


def answer(model_ref: str, recipe, inputs: Inputs, *, batch_size: int) -> list[dict[str, Any]]:
    from transformers import AutoModelForQuestionAnswering

    from hf_toolkit.tasks import question_answering

    model, tokenizer = modeling.load_trained(AutoModelForQuestionAnswering, model_ref)
    answers = question_answering.answer_questions(
        model, tokenizer, inputs.questions, inputs.contexts, question_answering.settings(recipe), batch_size=batch_size
    )
    return [
        {"question": q, "context": c, "answer": a.text, "score": a.score, "start": a.start, "end": a.end}
        for q, c, a in zip(inputs.questions, inputs.contexts, answers)
    ]


def fill_mask(model_ref: str, inputs: Inputs, *, top_k: int, batch_size: int) -> list[dict[str, Any]]:
    from transformers import AutoModelForMaskedLM

    from hf_toolkit.tasks import masked_lm

    model, tokenizer = modeling.load_trained(AutoModelForMaskedLM, model_ref)
    fills = masked_lm.fill_mask(model, tokenizer, inputs.texts, top_k=top_k, batch_size=batch_size)
    return [{"text": text, "fills": per_mask} for text, per_mask in zip(inputs.texts, fills)]


# --------------------------------------------------------------------------------------------
# Terminal output


def format_record(task: str, record: dict[str, Any]) -> str:
    """One record for a terminal (the --json output is the record itself)."""
    if task == "text-classification":
        pair = f" || {record['text_pair']}" if "text_pair" in record else ""
        return f"{record['label']}\t{record['score']:.4f}\t{record['text']}{pair}"
    if task == "question-answering":
        shown = repr(record["answer"]) if record["answer"] else "(no answer)"
        return f"Q: {record['question']}\nA: {shown}\t(score {record['score']:.4f}, chars {record['start']}-{record['end']})"
    lines = [record["text"]]
    for n, per_mask in enumerate(record["fills"], start=1):
        prefix = f"  mask {n}: " if len(record["fills"]) > 1 else "  "
        lines.append(prefix + "  ".join(f"{fill['token']} ({fill['score']:.3f})" for fill in per_mask))
    return "\n".join(lines)
