"""QA post-processing on hand-made logits: offsets, spans across windows, max length, null answers."""

from __future__ import annotations

import math

from hf_toolkit.tasks.qa_postprocess import Feature, best_answers, candidate_spans

CONTEXT = "The cat sat on the mat."
# Token layout of one window: [CLS] q q [SEP] The cat sat on the mat . [SEP]
OFFSETS = [None, None, None, None, (0, 3), (4, 7), (8, 11), (12, 14), (15, 18), (19, 22), (22, 23), None]


def logits(length: int, peaks: dict[int, float], base: float = 0.0) -> list[float]:
    row = [base] * length
    for index, value in peaks.items():
        row[index] = value
    return row


def test_best_span_is_sliced_from_the_context_with_offsets():
    start = logits(12, {5: 5.0})
    end = logits(12, {6: 5.0})
    [answer] = best_answers([CONTEXT], [Feature(0, OFFSETS)], [start], [end])
    assert answer.text == "cat sat"
    assert (answer.start, answer.end) == (4, 11)
    assert CONTEXT[answer.start : answer.end] == answer.text


def test_spans_outside_the_context_are_never_chosen():
    # The highest logits point at question tokens (offset None): the best *context* span wins.
    start = logits(12, {1: 9.0, 9: 2.0})
    end = logits(12, {2: 9.0, 9: 2.0})
    [answer] = best_answers([CONTEXT], [Feature(0, OFFSETS)], [start], [end])
    assert answer.text == "mat"


def test_end_before_start_is_invalid():
    start = logits(12, {8: 5.0, 4: 1.0})
    end = logits(12, {5: 5.0, 9: 0.5})
    [answer] = best_answers([CONTEXT], [Feature(0, OFFSETS)], [start], [end])
    # (8, 5) is backwards; the best valid pairs are (8, 9) = 5.5 and (4, 5) = 6.0.
    assert answer.text == "The cat"


def test_max_answer_length_limits_span_length_in_tokens():
    start = logits(12, {4: 5.0, 8: 1.0})
    end = logits(12, {9: 5.0})
    long = best_answers([CONTEXT], [Feature(0, OFFSETS)], [start], [end], max_answer_length=30)[0]
    short = best_answers([CONTEXT], [Feature(0, OFFSETS)], [start], [end], max_answer_length=2)[0]
    assert long.text == "The cat sat on the mat"
    assert short.text == "the mat"


def test_best_span_over_all_windows_of_an_example():
    context = "alpha beta gamma delta epsilon zeta"
    # Two overlapping windows over the context; the answer "epsilon" is only in the second.
    first = [None, None, (0, 5), (6, 10), (11, 16), (17, 22), None]
    second = [None, None, (11, 16), (17, 22), (23, 30), (31, 35), None]
    features = [Feature(0, first), Feature(0, second)]
    starts = [logits(7, {2: 1.0}), logits(7, {4: 6.0})]
    ends = [logits(7, {2: 1.0}), logits(7, {4: 6.0})]
    [answer] = best_answers([context], features, starts, ends)
    assert answer.text == "epsilon"
    assert (answer.start, answer.end) == (23, 30)


def test_features_are_grouped_by_example_and_padding_is_ignored():
    contexts = ["red green blue", "one two three"]
    features = [Feature(1, [None, (0, 3), (4, 7), (8, 13), None]), Feature(0, [None, (0, 3), (4, 9), (10, 14), None])]
    # Rows are padded to 7 with -100 (as the Trainer pads batches); positions 5-6 have no offsets.
    starts = [logits(5, {3: 4.0}) + [-100.0, -100.0], logits(5, {2: 4.0}) + [-100.0, -100.0]]
    ends = [logits(5, {3: 4.0}) + [-100.0, -100.0], logits(5, {2: 4.0}) + [-100.0, -100.0]]
    answers = best_answers(contexts, features, starts, ends)
    assert [a.text for a in answers] == ["green", "three"]


def test_null_answer_wins_when_its_score_beats_the_span_by_more_than_the_threshold():
    start = logits(12, {0: 6.0, 5: 2.0})
    end = logits(12, {0: 6.0, 5: 2.0})
    # null = 12, best span = 4: the difference 8 exceeds threshold 0 -> no answer.
    v2 = best_answers([CONTEXT], [Feature(0, OFFSETS)], [start], [end], version_2=True)[0]
    assert v2.text == "" and (v2.start, v2.end) == (-1, -1)
    # A threshold above the difference keeps the span.
    lenient = best_answers([CONTEXT], [Feature(0, OFFSETS)], [start], [end], version_2=True, null_score_threshold=9.0)[0]
    assert lenient.text == "cat"
    # SQuAD v1.1 never answers "" when a valid span exists.
    v1 = best_answers([CONTEXT], [Feature(0, OFFSETS)], [start], [end], version_2=False)[0]
    assert v1.text == "cat"


def test_null_score_is_the_minimum_over_windows():
    context = "alpha beta gamma delta"
    first = [None, (0, 5), (6, 10), None]
    second = [None, (11, 16), (17, 22), None]
    # Window 1 is confident there is no answer (null 10); window 2 finds "gamma" (span 8, null 2).
    starts = [logits(4, {0: 5.0}), logits(4, {0: 1.0, 1: 4.0})]
    ends = [logits(4, {0: 5.0}), logits(4, {0: 1.0, 1: 4.0})]
    [answer] = best_answers([context], [Feature(0, first), Feature(0, second)], starts, ends, version_2=True)
    assert answer.text == "gamma"  # min null (2) - span (8) < 0


def test_score_is_a_probability_over_candidates():
    start = logits(12, {5: 3.0})
    end = logits(12, {5: 3.0})
    [answer] = best_answers([CONTEXT], [Feature(0, OFFSETS)], [start], [end])
    assert 0.0 < answer.score <= 1.0
    assert math.isclose(answer.logit, 6.0)


def test_candidate_spans_respects_n_best():
    start = [0.0, 5.0, 4.0, 3.0]
    end = [0.0, 5.0, 4.0, 3.0]
    offsets = [None, (0, 1), (2, 3), (4, 5)]
    assert len(candidate_spans(start, end, offsets, n_best=1, max_answer_length=10)) == 1
    assert len(candidate_spans(start, end, offsets, n_best=3, max_answer_length=10)) == 6  # upper triangle of 3x3


def test_an_example_without_features_gets_no_answer():
    answers = best_answers(["some context", "another"], [Feature(0, [None, (0, 4)])], [[0.0, 1.0]], [[0.0, 1.0]])
    assert answers[0].text == "some"
    assert answers[1].text == ""
