"""Extractive question answering (SQuAD v1.1 / v2.0 format; BERT and any ``AutoModelForQuestionAnswering``).

Reads top to bottom: the data options and their checks, how examples become windows ("features") with answer
token positions, training, evaluation over examples (not windows), and inference for
``hftk predict`` / ``hftk eval --model``.

Data: rows with ``question``, ``context``, ``answers`` and optionally ``id`` — flat JSONL as the
``datasets`` SQuAD layout (``answers: {text: [...], answer_start: [...]}``; a list of
``{text, answer_start}`` objects works too), or the official nested SQuAD JSON (read by
:func:`hf_toolkit.core.data.load_source`). An empty answer list is an unanswerable question, which
needs ``data.version_2: true``.

Long contexts: question + context are cut into windows of ``data.max_length`` tokens (default
384) that overlap by ``data.doc_stride`` tokens (default 128), using the tokenizer's offset
mapping. A window that does not contain the whole answer is trained to point at token 0
(``[CLS]``), as is an unanswerable question.

Evaluation (the task's ``evaluate`` hook): the model's start/end logits for
every window are post-processed into one answer per question (:mod:`.qa_postprocess`: ``n_best``
default 20, ``max_answer_length`` default 30 tokens, v2 null answer with ``null_score_threshold``
default 0.0), and scored with the official SQuAD exact match and F1 (``squad``, or ``squad_v2``
for a v2 run) from :mod:`hf_toolkit.metrics`. Evaluations during training report the loss only.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from hf_toolkit import metrics
from hf_toolkit.core import modeling
from hf_toolkit.errors import DataError, Problem
from hf_toolkit.recipe.schema import DataSection, Recipe
from hf_toolkit.tasks.base import (
    LENGTH_GROUPED,
    CompareMetric,
    Task,
    Texts,
    loss_pieces,
)
from hf_toolkit.tasks.qa_postprocess import Answer, Feature, best_answers

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict


class QuestionAnsweringData(DataSection):
    """``data`` options of question-answering."""

    max_length: int = Field(384, ge=8, description="Tokens per window (question + context).")
    doc_stride: int = Field(128, ge=1, description="Tokens of overlap between windows of a long context.")
    n_best: int = Field(20, ge=1, description="Start and end candidates per window in post-processing.")
    max_answer_length: int = Field(30, ge=1, description="Longest answer in tokens.")
    version_2: bool = Field(False, description="SQuAD v2: questions may have no answer.")
    null_score_threshold: float | None = Field(None, description="v2: predict no answer when its score beats the best span by this; null: 0.0.")


Settings = QuestionAnsweringData
"""The QA options that inference reads (the defaults for a plain model dir without a recipe)."""


def settings(recipe: Recipe | None) -> QuestionAnsweringData:
    """The run's QA options, or the defaults for a model dir without a recipe."""
    return recipe.data if recipe is not None else QuestionAnsweringData.model_construct(**{
        name: field.default for name, field in QuestionAnsweringData.model_fields.items()
    })


class AnswerRequest(BaseModel):
    """``POST /v1/answer`` (hftk serve): one question or a list, with their context(s)."""

    question: Texts = Field(..., description="Question(s) to answer from the context.")
    context: Texts = Field(..., description="One context per question, or one for all questions.")


class QuestionAnswering(Task):
    name = "question-answering"
    auto_class = "AutoModelForQuestionAnswering"
    Data = QuestionAnsweringData
    roles = ("question", "context", "answers")
    optional_roles = ("id",)
    target_roles = ("answers",)
    peft_task_type = "QUESTION_ANS"
    training_defaults = LENGTH_GROUPED  # evaluation stays in window order (trainer_class)
    # `hftk eval --model`: squad_v2 gives exactly squad's exact match and F1 on answerable-only data
    # (v1.1), and scores the unanswerable questions of v2 data correctly, so it fits both.
    eval_metrics = ("squad_v2",)
    compare_metric = CompareMetric("squad_v2", "f1", higher_is_better=True, timing="predict")
    architectures = ("ForQuestionAnswering",)
    predicts = True
    endpoint = "/v1/answer"
    request = AnswerRequest
    shared_input = "context"  # several questions about one text
    distills = True

    def check_recipe(self, recipe: Recipe) -> list[Problem]:
        """Option combinations that cannot work, before any data or model is loaded."""
        s, problems = recipe.data, super().check_recipe(recipe)
        if s.doc_stride >= s.max_length:
            problems.append(Problem(("data", "doc_stride"),
                                    f"{s.doc_stride} tokens of overlap between windows must be less than "
                                    f"data.max_length ({s.max_length}); e.g. doc_stride 128 with max_length 384"))
        if s.null_score_threshold is not None and not s.version_2:
            problems.append(Problem(("data", "null_score_threshold"),
                                    "only used for SQuAD v2 null answers; set data.version_2: true or remove it"))
        if "num_labels" in recipe.model.config and recipe.model.config["num_labels"] != 2:
            problems.append(Problem(("model", "config", "num_labels"), "the QA head scores two things per token, an "
                                    "answer's start and its end: num_labels is 2; remove it"))
        for option in ("strip_html", "normalize_whitespace"):
            if getattr(s, option):
                problems.append(Problem(("data", option),
                                        "would change the contexts and move every answer away from its answer_start; "
                                        "clean the data (and its offsets) beforehand, or remove this option"))
        return problems

    def model_config(self, recipe: Recipe, splits: "DatasetDict") -> dict[str, Any]:
        """Check the answers before the model loads; the QA head needs no config settings."""
        for name, dataset in splits.items():
            check_answers(dataset, version_2=recipe.data.version_2, where=f"data.{name}")
        return {}

    def prepare(self, recipe: Recipe, splits: "DatasetDict", tokenizer, model) -> "DatasetDict":
        """Every split -> windows with start/end token positions (labels for the loss)."""
        s = recipe.data
        context = modeling.context_length(model.config)
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

        return type(splits)({
            name: dataset.map(windows, batched=True, remove_columns=dataset.column_names, desc=f"Cutting {name} into windows")
            for name, dataset in splits.items()
        })

    def trainer_kwargs(self, recipe: Recipe, tokenizer, model) -> dict[str, Any]:
        """Dynamic padding on the right (start/end positions count tokens from the left); metrics come
        from `evaluate` (over examples), not from the Trainer."""
        from transformers import DataCollatorWithPadding

        if tokenizer.padding_side != "right":
            tokenizer = copy.copy(tokenizer)  # the caller's tokenizer keeps its own padding side
            tokenizer.padding_side = "right"
        return {"data_collator": DataCollatorWithPadding(tokenizer)}

    def distillation_logits(self, outputs, inputs: dict[str, Any]) -> list[tuple[Any, Any]]:
        """Start and end logits over each window's positions (every window carries a start and an
        end, the null answer's [CLS] included); averaged, as the task's loss averages the two."""
        import torch

        every = torch.ones(outputs.start_logits.shape[0], dtype=torch.bool, device=outputs.start_logits.device)
        return [(outputs.start_logits, every), (outputs.end_logits, every)]

    def loss_view(self, recipe: Recipe, tokenizer, model, example: dict[str, Any]) -> dict[str, list[tuple[str, bool]]]:
        """The window with the answer span (start to end position, the loss's targets) unmarked; a window
        without the answer points at token 0 ([CLS])."""
        start, end = int(example["start_positions"]), int(example["end_positions"])
        ids = example["input_ids"]
        return {"window": loss_pieces(tokenizer, ids, [start <= i <= end for i in range(len(ids))])}

    def truncation_limit(self, recipe: Recipe, tokenizer, model) -> int | None:
        """Question + context past data.max_length tokens: the context is cut into overlapping windows."""
        return recipe.data.max_length

    def trainer_class(self):
        """A Trainer that evaluates in dataset order (:class:`hf_toolkit.tasks.trainers.WindowOrderTrainer`):
        post-processing pairs each window's logits with the window at the same position."""
        from hf_toolkit.tasks.trainers import WindowOrderTrainer

        return WindowOrderTrainer

    def evaluate(self, trainer, recipe: Recipe, examples: "Dataset", features: "Dataset", prefix: str) -> dict[str, float]:
        """Loss over the windows, then SQuAD exact match / F1 over the questions (post-processed answers)."""
        s = recipe.data
        contexts = list(examples["context"])
        encoding = encode(trainer.processing_class, list(examples["question"]), contexts, s)
        windows = [Feature(example, context_offsets(encoding, i)) for i, example in enumerate(encoding["overflow_to_sample_mapping"])]
        if len(windows) != len(features):
            raise AssertionError(f"{len(windows)} windows re-encoded but {len(features)} prepared")
        output = trainer.predict(features, metric_key_prefix=prefix)
        start_logits, end_logits = output.predictions[:2]
        answers = best_answers(
            contexts, windows, start_logits, end_logits,
            n_best=s.n_best, max_answer_length=s.max_answer_length, version_2=s.version_2,
            null_score_threshold=s.null_score_threshold or 0.0,
        )
        predictions, references = as_squad(examples, answers)
        scores = metrics.compute([metrics.qa_metric(references, version_2=s.version_2)], predictions, references)
        result = {**output.metrics, **{f"{prefix}_{key}": value for key, value in scores.items()}}
        trainer.log(result)
        return result

    # ----------------------------------------------------------------------------------------
    # Inference (hftk predict, hftk eval --model)

    def default_metrics(self, dataset: "Dataset") -> tuple[str, ...]:
        """squad_v2 (see eval_metrics); cmrc2018 for Chinese answers when every question has one."""
        references = {str(i): answer_lists(value)[0] for i, value in enumerate(dataset["answers"])}
        return (metrics.qa_metric(references, version_2=not all(references.values())),)

    def check_eval_rows(self, config, dataset: "Dataset") -> None:
        for value in dataset["answers"]:
            answer_lists(value)

    def predict(self, model, tokenizer, recipe: Recipe | None, dataset: "Dataset", generate) -> tuple[dict[str, str], dict[str, list[str]]]:
        """({id: predicted answer}, {id: gold answers}) for `dataset`, the layout of the squad/squad_v2 metrics."""
        answers = answer_questions(model, tokenizer, list(dataset["question"]), list(dataset["context"]), settings(recipe))
        return as_squad(dataset, answers)

    def prediction_rows(self, model, tokenizer, dataset: "Dataset", predictions, references) -> list[dict[str, Any]]:
        """``{"id", "question", "context", "prediction_text", "answers"}`` with answers in the SQuAD layout,
        so the file is a files-mode predictions file and references file at once."""
        ids = dataset["id"] if "id" in dataset.column_names else range(len(dataset))
        rows = []
        for qid, question, context, answers in zip(ids, dataset["question"], dataset["context"], dataset["answers"]):
            texts, starts = answer_lists(answers)
            rows.append({"id": str(qid), "question": question, "context": context, "prediction_text": predictions[str(qid)],
                         "answers": {"text": texts, "answer_start": starts}})
        return rows

    def predict_records(self, model, tokenizer, recipe: Recipe | None, inputs: dict[str, list], *, batch_size: int = 16,
                        **options: Any) -> list[dict[str, Any]]:
        """``{"question", "context", "answer", "score", "start", "end"}`` per question.

        An empty (or blank) context has nothing to search: the model does not see it, and its record
        says so with ``"no_answer_reason": "empty context"``, ``answer`` ``""`` and no score or span (null).
        """
        questions, contexts = inputs["question"], inputs["context"]
        searched = [i for i, context in enumerate(contexts) if context.strip()]
        answers = answer_questions(model, tokenizer, [questions[i] for i in searched], [contexts[i] for i in searched],
                                   settings(recipe), batch_size=batch_size) if searched else []
        found = dict(zip(searched, answers))
        records = []
        for i, (question, context) in enumerate(zip(questions, contexts)):
            if i in found:
                a = found[i]
                records.append({"question": question, "context": context, "answer": a.text, "score": a.score,
                                "start": a.start, "end": a.end})
            else:
                records.append({"question": question, "context": context, "answer": "", "score": None, "start": None, "end": None,
                                "no_answer_reason": "empty context"})
        return records

    def format_record(self, record: dict[str, Any]) -> str:
        asked = f"Q: {record['question']}\nA: "
        if record.get("no_answer_reason"):
            return f"{asked}(no answer: {record['no_answer_reason']})"
        if not record["answer"]:  # a SQuAD v2 model's "no answer": a score, but no span
            return f"{asked}(no answer)\t(score {record['score']:.4f})"
        return f"{asked}{record['answer']!r}\t(score {record['score']:.4f}, chars {record['start']}-{record['end']})"


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
    """Question + context windows with offsets; overflow_to_sample_mapping says which example each is from.

    A question so long that no window has room for context beyond the stride is a DataError,
    found here rather than inside the tokenizer (whose error names no question).
    """
    questions = [q.lstrip() for q in questions]
    room = s.max_length - tokenizer.num_special_tokens_to_add(pair=True)
    for question, ids in zip(questions, tokenizer(questions, add_special_tokens=False)["input_ids"]):
        if room - len(ids) <= s.doc_stride:
            raise DataError(
                f"question {question[:80]!r} takes {len(ids)} tokens, which leaves no room for context in windows of "
                f"data.max_length={s.max_length} tokens overlapping by data.doc_stride={s.doc_stride}; "
                "raise data.max_length or lower data.doc_stride"
            )
    return tokenizer(
        questions,
        contexts,
        truncation="only_second",
        max_length=s.max_length,
        stride=s.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


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


def as_squad(examples: "Dataset", answers: list[Answer]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """({id: predicted text}, {id: gold texts}) as the squad metrics take them."""
    ids = [str(i) for i in examples["id"]] if "id" in examples.column_names else [str(i) for i in range(len(examples))]
    predictions = {qid: answer.text for qid, answer in zip(ids, answers)}
    references = {qid: answer_lists(value)[0] for qid, value in zip(ids, examples["answers"])}
    return predictions, references


def answer_questions(model, tokenizer, questions: list[str], contexts: list[str], s: Settings, *, batch_size: int = 16) -> list[Answer]:
    """One answer per (question, context), over all windows of each context."""
    import torch

    encoding = encode(tokenizer, questions, contexts, s)
    windows = [Feature(example, context_offsets(encoding, i)) for i, example in enumerate(encoding["overflow_to_sample_mapping"])]
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoding]
    start_logits, end_logits = [], []
    for start in range(0, len(windows), batch_size):
        batch = tokenizer.pad({k: encoding[k][start : start + batch_size] for k in names}, padding_side="right", return_tensors="pt").to(model.device)
        with torch.no_grad():
            output = model(**batch)
        for row in range(len(batch["input_ids"])):
            length = len(windows[start + row].offsets)
            start_logits.append(output.start_logits[row, :length].tolist())
            end_logits.append(output.end_logits[row, :length].tolist())
    return best_answers(
        contexts, windows, start_logits, end_logits,
        n_best=s.n_best, max_answer_length=s.max_answer_length, version_2=s.version_2,
        null_score_threshold=s.null_score_threshold or 0.0,
    )
