"""CMRC 2018 exact match and F1: Chinese extractive QA scored as its official script scores it.

SQuAD's F1 splits answers at whitespace, and Chinese has none, so a partly right Chinese answer
("北京大学" for "北京") is one token against another and scores 0. CMRC 2018's official script
(``cmrc2018_evaluate.py`` v5, github ymcui/cmrc2018, Python 2 with nltk) scores characters
instead. Its rules, transcribed here faithfully (no maintained library ships them):

- an answer is lowercased and stripped, then segmented: every Chinese character (the script's
  ``[\\u4e00-\\u9fa5]`` only) and every character of its punctuation list is a segment of its own;
  each run of other characters in between goes through ``nltk.word_tokenize`` (so "1989年" is
  ["1989", "年"] and "NBA总决赛" is ["nba", "总", "决", "赛"]);
- F1 drops the listed punctuation before segmenting and takes the longest common *contiguous*
  run of segments (not SQuAD's bag of tokens) as the overlap; EM compares the strings with the
  listed punctuation removed (nothing else normalised). Both take the max over gold answers.
  The list holds "……" as one two-character item, which never equals a single character: a lone
  "…" is kept, as in the script.
- scores are 0-100; a question without a prediction scores 0 and counts in the total.

``nltk.word_tokenize`` first splits a run into sentences with nltk's punkt model (a data
download), then tokenizes each. Where the punkt data is installed it is used, exactly as in the
script; without it (offline installs) a run is tokenized as one sentence, which differs only for a
run that holds a sentence end followed by more Latin text ("... end. Next"). 6 of the 1,002
CMRC 2018 trial answers hold such a run, all at initials or titles ("W. Mellon", "St. John"),
where punkt's English model does not split either (unverified offline). Inputs are those of :func:`hf_toolkit.metrics.squad`: ``{id: text}``
predictions and ``{id: [gold texts]}`` references.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence

from hf_toolkit.errors import DataError
from hf_toolkit.metrics.squad_official import check_ids

# The script's sp_char, in its order; "……" is one item (see the module docstring).
PUNCTUATION = ['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=',
               '，', '。', '：', '？', '！', '“', '”', '；', '’', '《', '》', '……', '·', '、',
               '「', '」', '（', '）', '－', '～', '『', '』']
_CHINESE_RE = re.compile("[\u4e00-\u9fa5]")


@functools.cache
def _word_tokenize():
    """nltk.word_tokenize when its punkt data is installed, else its word tokenizer on the whole run."""
    import nltk
    from nltk.tokenize import NLTKWordTokenizer

    try:
        nltk.word_tokenize("a. B")
        return nltk.word_tokenize
    except LookupError:
        return NLTKWordTokenizer().tokenize


def mixed_segmentation(text: str, rm_punc: bool = False) -> list[str]:
    """The script's ``mixed_segmentation``: Chinese characters and punctuation one by one, nltk words between."""
    text = text.lower().strip()
    segments: list[str] = []
    run = ""
    for char in text:
        if rm_punc and char in PUNCTUATION:
            continue
        if _CHINESE_RE.search(char) or char in PUNCTUATION:
            if run != "":
                segments.extend(_word_tokenize()(run))
                run = ""
            segments.append(char)
        else:
            run += char
    if run != "":
        segments.extend(_word_tokenize()(run))
    return segments


def remove_punctuation(text: str) -> str:
    """The script's ``remove_punctuation``: lowercased, stripped, the listed punctuation dropped."""
    return "".join(char for char in text.lower().strip() if char not in PUNCTUATION)


def find_lcs(first: list[str], second: list[str]) -> tuple[list[str], int]:
    """Longest common contiguous run of segments, and its length (the script's ``find_lcs``)."""
    table = [[0] * (len(second) + 1) for _ in range(len(first) + 1)]
    longest = end = 0
    for i in range(len(first)):
        for j in range(len(second)):
            if first[i] == second[j]:
                table[i + 1][j + 1] = table[i][j] + 1
                if table[i + 1][j + 1] > longest:
                    longest, end = table[i + 1][j + 1], i + 1
    return first[end - longest : end], longest


def f1_score(answers: Sequence[str], prediction: str) -> float:
    """The script's ``calc_f1_score``: character-level F1 (0-1), the max over gold answers."""
    scores = []
    prediction_segments = mixed_segmentation(prediction, rm_punc=True)
    for answer in answers:
        answer_segments = mixed_segmentation(answer, rm_punc=True)
        _, overlap = find_lcs(answer_segments, prediction_segments)
        if overlap == 0:
            scores.append(0)
            continue
        precision = 1.0 * overlap / len(prediction_segments)
        recall = 1.0 * overlap / len(answer_segments)
        scores.append((2 * precision * recall) / (precision + recall))
    return max(scores)


def exact_match_score(answers: Sequence[str], prediction: str) -> int:
    """The script's ``calc_em_score``: 1 when a gold answer equals the prediction without punctuation."""
    prediction = remove_punctuation(prediction)
    return int(any(remove_punctuation(answer) == prediction for answer in answers))


def cmrc2018_items(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, list[float]]:
    """Per-question EM and F1 (0 or 1 / 0-1), in the order of ``references`` (unanswered: 0)."""
    check_ids(predictions, references)
    items: dict[str, list[float]] = {"exact_match": [], "f1": []}
    for qid, answers in references.items():
        if qid not in predictions:
            items["exact_match"].append(0)
            items["f1"].append(0)
            continue
        if not answers:  # the script's max() over no answers would crash
            raise DataError(f"question {qid!r} has no gold answers; CMRC 2018 questions all have answers")
        prediction = str(predictions[qid])
        items["exact_match"].append(exact_match_score(answers, prediction))
        items["f1"].append(f1_score(answers, prediction))
    return items


def cmrc2018(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """CMRC 2018's official ``{"exact_match", "f1", "average"}`` (the script's EM, F1, AVERAGE), 0-100."""
    items = cmrc2018_items(predictions, references)
    total = len(items["f1"])
    scores = {key: 100.0 * sum(values) / total for key, values in items.items()}
    scores["average"] = (scores["exact_match"] + scores["f1"]) * 0.5
    return scores
