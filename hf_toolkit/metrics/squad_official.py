"""SQuAD v1.1 and v2.0 exact match and F1, as the official evaluation scripts define them.

The official scripts ARE the reference implementation (no maintained library ships them), so
the few lines that define the metric are transcribed faithfully from:

- v1.1: ``evaluate-v1.1.py`` from https://rajpurkar.github.io/SQuAD-explorer/ (also in
  ``huggingface/evaluate`` ``metrics/squad/compute_score.py``);
- v2.0: ``evaluate-v2.0.py`` from the same page (``metrics/squad_v2/compute_score.py``).

Both normalise answers the same way (lowercase, drop punctuation, drop the articles a/an/the,
collapse whitespace) and take the max over gold answers; scores are on a 0-100 scale. They
differ in F1 for empty answers: v1.1 gives 0 when either side has no tokens, v2.0 gives 1 when
both are empty. In v2.0 a question whose gold answers are all empty (after normalisation) is
unanswerable and only an empty prediction scores.

Inputs: ``predictions`` maps question id -> predicted text; ``references`` maps question id ->
list of gold answer texts (empty list = unanswerable, v2.0). As in the official v1.1 script,
questions without a prediction score 0 and count in the total (for v2.0 too: the v2.0 script
averages over predictions only and crashes on a missing answerable one, so with complete
predictions both agree). A prediction whose id is not in
the references is a :class:`DataError` (it usually means the wrong reference file).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

from hf_toolkit.errors import DataError

_PUNCTUATION = set(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (official script)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> int:
    """1 when the normalised strings are equal (same in v1.1 and v2.0)."""
    return int(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score_v1(prediction: str, ground_truth: str) -> float:
    """Token-level F1 of evaluate-v1.1.py (0 when nothing is shared, even for two empties)."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def f1_score_v2(prediction: str, ground_truth: str) -> float:
    """Token-level F1 of evaluate-v2.0.py (``compute_f1``): two empty answers agree."""
    gold_toks = normalize_answer(ground_truth).split()
    pred_toks = normalize_answer(prediction).split()
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        # If either is no-answer, then F1 is 1 if they agree, 0 otherwise
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def check_ids(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> None:
    unknown = [qid for qid in predictions if qid not in references]
    if unknown:
        shown = ", ".join(repr(qid) for qid in unknown[:5])
        raise DataError(f"{len(unknown)} of {len(predictions)} prediction ids are not in the "
                        f"references (first: {shown}); are these the right reference answers?")
    if not references:
        raise DataError("no reference questions to score")


def squad_items(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                *, version: int = 1) -> dict[str, list[float]]:
    """Per-question EM and F1 (0 or 1 / 0-1), in the order of ``references``."""
    check_ids(predictions, references)
    items: dict[str, list[float]] = {"exact_match": [], "f1": []}
    for qid, answers in references.items():
        if qid not in predictions:  # official v1.1: "Unanswered question will receive score 0."
            items["exact_match"].append(0)
            items["f1"].append(0)
            continue
        prediction = predictions[qid]
        if version == 1:
            golds, f1_fn = list(answers), f1_score_v1
        else:
            # v2.0: gold answers that normalise to "" do not count; none left = unanswerable.
            golds = [a for a in answers if normalize_answer(a)] or [""]
            f1_fn = f1_score_v2
        if not golds:  # v1.1 data always has answers; max() over none would crash the script
            raise DataError(f"question {qid!r} has no gold answers; use squad_v2 for unanswerable questions")
        items["exact_match"].append(max(exact_match_score(prediction, g) for g in golds))
        items["f1"].append(max(f1_fn(prediction, g) for g in golds))
    return items


def squad(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Official SQuAD v1.1 ``{"exact_match", "f1"}`` on a 0-100 scale."""
    items = squad_items(predictions, references, version=1)
    total = len(items["f1"])
    return {key: 100.0 * sum(values) / total for key, values in items.items()}


def squad_v2(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Official SQuAD v2.0 EM/F1 (0-100), plus the answerable/unanswerable breakdown.

    Keys: ``exact_match``, ``f1``, and when the subsets are non-empty ``HasAns_exact_match``,
    ``HasAns_f1``, ``NoAns_exact_match``, ``NoAns_f1`` (the script's ``HasAns_exact`` etc.).
    No no-answer probability threshold is applied (the script's default without ``--na-prob-file``).
    """
    items = squad_items(predictions, references, version=2)
    # The script's qid_to_has_ans: bool(qa["answers"]), before normalisation.
    has_answer = [bool(answers) for answers in references.values()]
    scores = {}
    for prefix, keep in (("", None), ("HasAns_", True), ("NoAns_", False)):
        chosen = [i for i, has in enumerate(has_answer) if keep is None or has == keep]
        if chosen:
            for key, values in items.items():
                scores[prefix + key] = 100.0 * sum(values[i] for i in chosen) / len(chosen)
    return scores
