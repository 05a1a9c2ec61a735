"""Accuracy, precision, recall and F1 for classification: thin wrappers over scikit-learn.

Scores are on scikit-learn's 0-1 scale. ``average`` is scikit-learn's: ``binary`` (its default;
scores the positive class ``pos_label``, default 1), ``macro`` (unweighted mean over classes),
``micro`` (global counts; equals accuracy for single-label data) or ``weighted``. Binary
averaging on labels that are not binary is a user error that names the other choices.

The key is the metric name (``accuracy``, ``precision``, ``recall``, ``f1``) whatever the
averaging; see :mod:`hf_toolkit.metrics` for how ``f1`` stays unambiguous next to SQuAD's F1.
"""

from __future__ import annotations

from collections.abc import Sequence

from hf_toolkit.errors import DataError, HftkError, did_you_mean

AVERAGES = ("binary", "macro", "micro", "weighted")


def _check(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise DataError(f"{len(predictions)} predictions but {len(references)} reference labels")
    if not predictions:
        raise DataError("no predictions to score")


def accuracy(predictions: Sequence, references: Sequence) -> dict[str, float]:
    """Fraction of predictions equal to the reference label (``sklearn.metrics.accuracy_score``)."""
    from sklearn.metrics import accuracy_score

    _check(predictions, references)
    return {"accuracy": float(accuracy_score(list(references), list(predictions)))}


def _prf(name: str, predictions: Sequence, references: Sequence, average: str, pos_label) -> float:
    if average not in AVERAGES:
        raise HftkError(f"unknown average '{average}'{did_you_mean(average, AVERAGES)}; "
                        f"choose one of: {', '.join(AVERAGES)}")
    _check(predictions, references)
    import sklearn.metrics

    score_fn = getattr(sklearn.metrics, f"{name}_score")
    try:
        # zero_division=0: a class never predicted scores 0, silently (sklearn warns otherwise).
        return float(score_fn(list(references), list(predictions), average=average,
                              pos_label=pos_label, zero_division=0))
    except ValueError as error:  # e.g. binary averaging on 3 classes, or pos_label not a label
        raise DataError(f"{name}: {error} (try average='macro' or 'micro')") from None


def precision(predictions: Sequence, references: Sequence, *, average: str = "binary",
              pos_label=1) -> dict[str, float]:
    """``sklearn.metrics.precision_score``."""
    return {"precision": _prf("precision", predictions, references, average, pos_label)}


def recall(predictions: Sequence, references: Sequence, *, average: str = "binary",
           pos_label=1) -> dict[str, float]:
    """``sklearn.metrics.recall_score``."""
    return {"recall": _prf("recall", predictions, references, average, pos_label)}


def f1(predictions: Sequence, references: Sequence, *, average: str = "binary",
       pos_label=1) -> dict[str, float]:
    """``sklearn.metrics.f1_score``."""
    return {"f1": _prf("f1", predictions, references, average, pos_label)}
