"""Extractive question answering (SQuAD v1.1 / v2.0 format; BERT and any ``AutoModelForQuestionAnswering``).

Reads top to bottom: the roles and options, how examples become windows ("features") with answer
token positions, training, evaluation over examples (not windows), and inference for
``hftk predict`` / ``hftk eval --model``.

Data: rows with ``question``, ``context``, ``answers`` and optionally ``id`` — flat JSONL as the
``datasets`` SQuAD layout (``answers: {text: [...], answer_start: [...]}``; a list of
``{text, answer_start}`` objects works too), or the official nested SQuAD JSON (read by
:func:`hf_toolkit.data.load_source`). An empty answer list is an unanswerable question, which
needs ``data.version_2: true``.

Long contexts: question + context are cut into windows of ``data.max_length`` tokens (default
384) that overlap by ``data.doc_stride`` tokens (default 128), using the tokenizer's offset
mapping. A window that does not contain the whole answer is trained to point at token 0
(``[CLS]``), as is an unanswerable question.

Evaluation (the optional ``evaluate`` hook of the task contract): the model's start/end logits for
every window are post-processed into one answer per question (:mod:`.qa_postprocess`: ``n_best``
default 20, ``max_answer_length`` default 30 tokens, v2 null answer with ``null_score_threshold``
default 0.0), and scored with the official SQuAD exact match and F1 (``squad``, or ``squad_v2``
for a v2 run) from :mod:`hf_toolkit.metrics`. Evaluations during training report the loss only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hf_toolkit import metrics, modeling
from hf_toolkit.errors import DataError
from hf_toolkit.recipe import Recipe
from hf_toolkit.tasks.encoder_common import generation_problems, raise_problems
from hf_toolkit.tasks.qa_postprocess import Answer, Feature, best_answers

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

ROLES = ("question", "context", "answers")
OPTIONAL_ROLES = ("id",)
TRAINER = "Trainer"
PEFT_TASK_TYPE = "QUESTION_ANS"
# `hftk eval --model`: squad_v2 gives exactly squad's exact match and F1 on answerable-only data
# (v1.1), and scores the unanswerable questions of v2 data correctly, so it fits both.
EVAL_METRICS = ("squad_v2",)


@dataclass(frozen=True)
class Settings:
    max_length: int = 384
    doc_stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    version_2: bool = False
    null_score_threshold: float = 0.0


def settings(recipe: Recipe | None) -> Settings:
    """The recipe's QA options, with the defaults above for the ones it leaves unset."""
    if recipe is None:
        return Settings()
    given = {name: getattr(recipe.data, name) for name in Settings.__dataclass_fields__}
    return Settings(**{name: value for name, value in given.items() if value is not None})


def auto_model():
    from transformers import AutoModelForQuestionAnswering

    return AutoModelForQuestionAnswering


def check_recipe(recipe: Recipe) -> None:
    """Option combinations that cannot work, before any data or model is loaded."""
    s, problems = settings(recipe), generation_problems(recipe)
    if s.doc_stride >= s.max_length:
        problems.append(
            f"data.doc_stride: {s.doc_stride} tokens of overlap between windows must be less than "
            f"data.max_length ({s.max_length}); e.g. doc_stride 128 with max_length 384"
        )
    if recipe.data.null_score_threshold is not None and not s.version_2:
        problems.append("data.null_score_threshold: only used for SQuAD v2 null answers; set data.version_2: true or remove it")
    for option in ("strip_html", "normalize_whitespace"):
        if getattr(recipe.data, option):
            problems.append(
                f"data.{option}: would change the contexts and move every answer away from its answer_start; "
                "clean the data (and its offsets) beforehand, or remove this option"
            )
    raise_problems(problems)


def model_config(recipe: Recipe, splits: "DatasetDict") -> dict[str, Any]:
    """Check the answers before the model loads; the QA head needs no config settings."""
    version_2 = settings(recipe).version_2
    for name, dataset in splits.items():
        check_answers(dataset, version_2=version_2, where=f"data.{name}")
    return {}


# --------------------------------------------------------------------------------------------
# Answers


def answer_lists(value: Any) -> tuple[list[str], list[int]]:
    """(texts, answer_starts) from the datasets layout {text, answer_start} or a list of such objects."""
    if isinstance(value, dict) and "text" in value and "answer_start" in value:
        return list(value["text"]), list(value["answer_start"])
    if isinstance(value, list) and all(isinstance(a, dict) and "text" in a and "answer_start" in a for a in value):
        return [a["text"] for a in value], [a["answer_start"] for a in value]
    raise DataError(
        f"answers must look like {{\"text\": [...], \"answer_start\": [...]}} (or a list of {{text, answer_start}}), got {value!r:.120}"
    )


def check_answers(dataset: "Dataset", *, version_2: bool, where: str) -> None:
    """Every answer is where answer_start says; unanswerable questions only with version_2."""
    ids = dataset["id"] if "id" in dataset.column_names else [str(i) for i in range(len(dataset))]
    if len(set(ids)) != len(ids):
        raise DataError(f"{where}: question ids are not unique; give each question its own id")
    for qid, context, answers in zip(ids, dataset["context"], dataset["answers"]):
        texts, starts = answer_lists(answers)
        if len(texts) != len(starts):
            raise DataError(f"{where}: question {qid}: {len(texts)} answer texts but {len(starts)} answer_start values")
        if not texts and not version_2:
            raise DataError(
                f"{where}: question {qid} has no answer (SQuAD v2 style); set data.version_2: true to train with "
                "unanswerable questions, or drop them"
            )
        for text, start in zip(texts, starts):
            if context[start : start + len(text)] != text:
                raise DataError(
                    f"{where}: question {qid}: answer {text!r} is not at answer_start {start} of the context "
                    f"(found {context[start:start + len(text)]!r}); fix answer_start (0-based character offset)"
                )


# --------------------------------------------------------------------------------------------
# Examples -> windows


def encode(tokenizer, questions: list[str], contexts: list[str], s: Settings):
    """Question + context windows with offsets; overflow_to_sample_mapping says which example each is from."""
    if tokenizer.padding_side != "right":
        # Start/end positions index tokens counted from the left: padding must come after them.
        tokenizer.padding_side = "right"
    try:
        return tokenizer(
            [q.lstrip() for q in questions],
            contexts,
            truncation="only_second",
            max_length=s.max_length,
            stride=s.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
    except Exception as error:  # the Rust tokenizer raises a bare Exception for impossible windows
        raise DataError(
            f"cannot cut question + context into windows of data.max_length={s.max_length} tokens with "
            f"data.doc_stride={s.doc_stride}: {error}. A question may be too long: raise data.max_length or lower data.doc_stride"
        ) from None


def context_offsets(encoding, i: int) -> list[tuple[int, int] | None]:
    """Offsets of window i with None for every token that is not context."""
    sequence_ids = encoding.sequence_ids(i)
    return [tuple(o) if sequence_ids[t] == 1 else None for t, o in enumerate(encoding["offset_mapping"][i])]


def answer_positions(offsets: list[tuple[int, int] | None], start_char: int, end_char: int) -> tuple[int, int]:
    """(start token, end token) of the answer in one window, or (0, 0) when the window does not hold all of it."""
    context_tokens = [t for t, o in enumerate(offsets) if o is not None]
    if not context_tokens or offsets[context_tokens[0]][0] > start_char or offsets[context_tokens[-1]][1] < end_char:
        return 0, 0
    start = next(t for t in context_tokens if offsets[t][1] > start_char)
    end = next(t for t in reversed(context_tokens) if offsets[t][0] < end_char)
    return start, end


def prepare(recipe: Recipe, splits: "DatasetDict", tokenizer, model) -> "DatasetDict":
    """Every split -> windows with start/end token positions (labels for the loss)."""
    s = settings(recipe)
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and s.max_length > context:
        raise DataError(f"data.max_length={s.max_length} is longer than the model's context ({context} tokens); lower it")

    def windows(batch: dict[str, list]) -> dict[str, list]:
        encoding = encode(tokenizer, batch["question"], batch["context"], s)
        starts, ends = [], []
        for i, example in enumerate(encoding["overflow_to_sample_mapping"]):
            texts, answer_starts = answer_lists(batch["answers"][example])
            position = (0, 0)
            if texts:
                position = answer_positions(context_offsets(encoding, i), answer_starts[0], answer_starts[0] + len(texts[0]))
            starts.append(position[0])
            ends.append(position[1])
        out = {k: v for k, v in encoding.items() if k not in ("offset_mapping", "overflow_to_sample_mapping")}
        return {**out, "start_positions": starts, "end_positions": ends}

    return type(splits)(
        {
            name: dataset.map(windows, batched=True, remove_columns=dataset.column_names, desc=f"Cutting {name} into windows")
            for name, dataset in splits.items()
        }
    )


def trainer_kwargs(recipe: Recipe, tokenizer, model) -> dict[str, Any]:
    """Dynamic padding; metrics come from `evaluate` (over examples), not from the Trainer."""
    from transformers import DataCollatorWithPadding

    return {"data_collator": DataCollatorWithPadding(tokenizer)}


def finish_metrics(metrics_: dict[str, float], prefix: str) -> dict[str, float]:
    return metrics_


# --------------------------------------------------------------------------------------------
# Evaluation over examples


def evaluate(trainer, recipe: Recipe, examples: "Dataset", features: "Dataset", prefix: str) -> dict[str, float]:
    """Loss over the windows, then SQuAD exact match / F1 over the questions (post-processed answers)."""
    s = settings(recipe)
    contexts = list(examples["context"])
    encoding = encode(trainer.processing_class, list(examples["question"]), contexts, s)
    windows = [Feature(example, context_offsets(encoding, i)) for i, example in enumerate(encoding["overflow_to_sample_mapping"])]
    if len(windows) != len(features):
        raise AssertionError(f"{len(windows)} windows re-encoded but {len(features)} prepared")
    output = trainer.predict(features, metric_key_prefix=prefix)
    start_logits, end_logits = output.predictions[:2]
    answers = best_answers(
        contexts, windows, start_logits, end_logits,
        n_best=s.n_best, max_answer_length=s.max_answer_length, version_2=s.version_2, null_score_threshold=s.null_score_threshold,
    )
    predictions, references = as_squad(examples, answers)
    scores = metrics.compute(["squad_v2" if s.version_2 else "squad"], predictions, references)
    result = {**output.metrics, **{f"{prefix}_{key}": value for key, value in scores.items()}}
    trainer.log(result)
    return result


def as_squad(examples: "Dataset", answers: list[Answer]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """({id: predicted text}, {id: gold texts}) as the squad metrics take them."""
    ids = [str(i) for i in examples["id"]] if "id" in examples.column_names else [str(i) for i in range(len(examples))]
    predictions = {qid: answer.text for qid, answer in zip(ids, answers)}
    references = {qid: answer_lists(value)[0] for qid, value in zip(ids, examples["answers"])}
    return predictions, references


# --------------------------------------------------------------------------------------------
# Inference (hftk predict, hftk eval --model)


def answer_questions(model, tokenizer, questions: list[str], contexts: list[str], s: Settings, *, batch_size: int = 16) -> list[Answer]:
    """One answer per (question, context), over all windows of each context."""
    import torch

    encoding = encode(tokenizer, questions, contexts, s)
    windows = [Feature(example, context_offsets(encoding, i)) for i, example in enumerate(encoding["overflow_to_sample_mapping"])]
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoding]
    start_logits, end_logits = [], []
    for start in range(0, len(windows), batch_size):
        batch = tokenizer.pad({k: encoding[k][start : start + batch_size] for k in names}, return_tensors="pt")
        with torch.no_grad():
            output = model(**batch)
        for row in range(len(batch["input_ids"])):
            length = len(windows[start + row].offsets)
            start_logits.append(output.start_logits[row, :length].tolist())
            end_logits.append(output.end_logits[row, :length].tolist())
    return best_answers(
        contexts, windows, start_logits, end_logits,
        n_best=s.n_best, max_answer_length=s.max_answer_length, version_2=s.version_2, null_score_threshold=s.null_score_threshold,
    )


def predict(run_dir, recipe: Recipe | None, dataset: "Dataset") -> tuple[dict[str, str], dict[str, list[str]]]:
    """({id: predicted answer}, {id: gold answers}) for `dataset`, the layout of the squad/squad_v2 metrics."""
    from transformers import AutoModelForQuestionAnswering

    for value in dataset["answers"]:
        answer_lists(value)
    model, tokenizer = modeling.load_trained(AutoModelForQuestionAnswering, run_dir)
    answers = answer_questions(model, tokenizer, list(dataset["question"]), list(dataset["context"]), settings(recipe))
    return as_squad(dataset, answers)
