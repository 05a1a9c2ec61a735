"""Extractive-QA post-processing: start/end logits over the windows of a context -> one answer per question.

Pure functions over plain Python/numpy data (no model, no tokenizer), unit-tested on hand-made
logits. transformers 5 ships no QA pipeline; this follows the logic of its example
``examples/pytorch/question-answering/utils_qa.py``:

- a long context is cut into overlapping windows ("features"); every feature of an example is
  searched, and the best span over all of them wins;
- candidates are the ``n_best`` highest start and end logits of each feature; a span is valid when
  both ends are context tokens (their offset is not None), end >= start, and it is at most
  ``max_answer_length`` tokens long; its score is start logit + end logit;
- SQuAD v2 (``version_2``): the null answer scores start+end logit of the first token (``[CLS]``),
  taking the minimum over the example's features; the answer is "" when
  ``null score - best span score > null_score_threshold``.

The answer text is sliced from the original context with the token offsets, so it is always a
substring of the context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Answer:
    """The chosen answer for one question: text "" means "no answer" (v2)."""

    text: str
    score: float  # softmax probability of this answer among the example's candidates
    start: int  # character offsets in the context; -1/-1 for no answer
    end: int
    logit: float  # start + end logit of the chosen span (or the null score)


@dataclass
class Feature:
    """One window of one example: which example it comes from and each token's character span.

    ``offsets[i]`` is ``(start_char, end_char)`` for a context token and ``None`` for anything else
    (question tokens, special tokens, padding).
    """

    example_index: int
    offsets: Sequence[tuple[int, int] | None]


def best_answers(
    contexts: Sequence[str],
    features: Sequence[Feature],
    start_logits: Sequence[Sequence[float]],
    end_logits: Sequence[Sequence[float]],
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_score_threshold: float = 0.0,
) -> list[Answer]:
    """One :class:`Answer` per context (example), from the logits of all its features.

    ``start_logits[i]`` / ``end_logits[i]`` belong to ``features[i]``; rows may be longer than the
    feature's offsets (batches padded with -100 by the Trainer): positions past the offsets are ignored.
    """
    if not (len(features) == len(start_logits) == len(end_logits)):
        raise ValueError(f"{len(features)} features but {len(start_logits)} start / {len(end_logits)} end logit rows")
    by_example: dict[int, list[int]] = {}
    for i, feature in enumerate(features):
        by_example.setdefault(feature.example_index, []).append(i)
    answers = []
    for example_index, context in enumerate(contexts):
        indices = by_example.get(example_index, [])
        spans: list[tuple[float, int, int]] = []  # (score, start_char, end_char)
        null_score: float | None = None
        for i in indices:
            starts, ends = np.asarray(start_logits[i], dtype=float), np.asarray(end_logits[i], dtype=float)
            offsets = features[i].offsets
            feature_null = float(starts[0] + ends[0])
            null_score = feature_null if null_score is None else min(null_score, feature_null)
            spans += candidate_spans(starts, ends, offsets, n_best=n_best, max_answer_length=max_answer_length)
        answers.append(choose(context, spans, null_score, version_2=version_2, null_score_threshold=null_score_threshold, n_best=n_best))
    return answers


def candidate_spans(
    start_logits: np.ndarray, end_logits: np.ndarray, offsets: Sequence[tuple[int, int] | None], *, n_best: int, max_answer_length: int
) -> list[tuple[float, int, int]]:
    """Valid spans of one feature among its n_best starts x n_best ends: (score, start_char, end_char)."""
    length = len(offsets)
    starts = np.argsort(start_logits[:length])[::-1][:n_best]
    ends = np.argsort(end_logits[:length])[::-1][:n_best]
    spans = []
    for s in starts:
        for e in ends:
            if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            spans.append((float(start_logits[s] + end_logits[e]), offsets[s][0], offsets[e][1]))
    return spans


def choose(
    context: str,
    spans: list[tuple[float, int, int]],
    null_score: float | None,
    *,
    version_2: bool,
    null_score_threshold: float,
    n_best: int,
) -> Answer:
    """The best span, or the null answer (v2) when it beats the span by more than the threshold."""
    spans = sorted(spans, key=lambda span: span[0], reverse=True)[:n_best]
    candidates = [span[0] for span in spans] + ([null_score] if version_2 and null_score is not None else [])
    if not candidates:  # no valid span anywhere (e.g. the context was cut away): no answer
        return Answer("", 0.0, -1, -1, float("-inf"))
    probabilities = softmax(candidates)
    best_span_score = spans[0][0] if spans else float("-inf")
    if version_2 and null_score is not None and null_score - best_span_score > null_score_threshold:
        return Answer("", probabilities[-1], -1, -1, null_score)
    score, start, end = spans[0]
    return Answer(context[start:end], probabilities[0], start, end, score)


def softmax(scores: Sequence[float]) -> list[float]:
    values = np.asarray(scores, dtype=float)
    exp = np.exp(values - values.max())
    return (exp / exp.sum()).tolist()
