"""Which bootstrap each metric uses for ``--ci`` and ``--compare`` (see :mod:`.significance`).

BLEU/chrF/TER go through sacreBLEU's own bootstrap and paired test; the other metrics get an
item-level statistic (per-item scores whose mean is the metric, or labels re-scored by
scikit-learn) that :func:`significance.bootstrap_ci` and :func:`significance.paired_bootstrap`
resample. Kept apart from ``metrics/__init__`` so numpy is only imported when asked for.
"""

from __future__ import annotations

import numpy as np

from hf_toolkit.errors import HftkError
from hf_toolkit.metrics import classification, sacrebleu_metrics, significance
from hf_toolkit.metrics.cmrc2018 import cmrc2018_items
from hf_toolkit.metrics.rouge_metrics import per_item_references, rouge_items
from hf_toolkit.metrics.squad_official import squad_items

_SACREBLEU_BUILDERS = {
    "bleu": sacrebleu_metrics.bleu_metric,
    "chrf": sacrebleu_metrics.chrf_metric,
    "ter": sacrebleu_metrics.ter_metric,
}


def _statistic(name: str, predictions, references, options: dict) -> significance.Statistic:
    """stat(indices) -> scores of the items at ``indices``, for one system."""
    if name == "rouge":
        return significance.mean_statistic(
            rouge_items(predictions, per_item_references(references), **options))
    if name in ("squad", "squad_v2"):
        items = squad_items(predictions, references, version=1 if name == "squad" else 2)
        return significance.mean_statistic(items, scale=100.0)
    if name == "cmrc2018":
        return significance.mean_statistic(cmrc2018_items(predictions, references), scale=100.0)
    if name == "accuracy":
        classification.accuracy(predictions, references)  # same checks as the real score
        hits = [float(p == r) for p, r in zip(predictions, references)]
        return significance.mean_statistic({"accuracy": hits})
    if name in ("precision", "recall", "f1"):
        return _label_statistic(name, predictions, references, **options)
    raise HftkError(f"--ci/--compare are not available for metric '{name}'")


def _label_statistic(name: str, predictions, references, *, average: str = "binary",
                     pos_label=1) -> significance.Statistic:
    """Precision/recall/F1 of a resample from per-class counts.

    Calling scikit-learn 1,000 times per system costs seconds (input validation dominates), so
    resamples are scored from per-class true-positive / predicted / true counts with
    scikit-learn's formulas (zero_division=0; macro/weighted over the classes present in the
    resample, as scikit-learn would see them). The point estimate itself still comes from
    scikit-learn, and a test checks these counts reproduce it on the full data.
    """
    getattr(classification, name)(predictions, references, average=average, pos_label=pos_label)
    labels, codes = np.unique(np.asarray(list(references) + list(predictions)), return_inverse=True)
    refs, preds = codes[: len(references)], codes[len(references):]
    hits = (refs == preds).astype(float)
    positive = [i for i, label in enumerate(labels.tolist()) if label == pos_label]

    def stat(idx: np.ndarray) -> dict[str, float]:
        k = len(labels)
        tp = np.bincount(refs[idx], weights=hits[idx], minlength=k)
        n_true = np.bincount(refs[idx], minlength=k).astype(float)
        n_pred = np.bincount(preds[idx], minlength=k).astype(float)
        if average == "micro":
            tp, n_true, n_pred = tp.sum(keepdims=True), n_true.sum(keepdims=True), n_pred.sum(keepdims=True)
        elif average == "binary":
            tp, n_true, n_pred = tp[positive], n_true[positive], n_pred[positive]
        else:  # macro / weighted: classes that occur in this resample
            present = (n_true + n_pred) > 0
            tp, n_true, n_pred = tp[present], n_true[present], n_pred[present]
        denominator = {"precision": n_pred, "recall": n_true, "f1": n_true + n_pred}[name]
        numerator = 2 * tp if name == "f1" else tp
        per_class = np.divide(numerator, denominator, out=np.zeros_like(tp), where=denominator > 0)
        if average == "weighted":
            return {name: float(np.average(per_class, weights=n_true)) if n_true.sum() else 0.0}
        return {name: float(per_class.mean()) if per_class.size else 0.0}

    return stat


def significance_keys(name: str, predictions, references, options: dict, *, ci: bool,
                      baseline=None) -> dict[str, float]:
    """``k_mean``/``k_ci95`` (when ``ci``) and ``k_baseline``/``k_p_value`` (when ``baseline``)."""
    keys: dict[str, float] = {}
    if name in _SACREBLEU_BUILDERS:
        metric = _SACREBLEU_BUILDERS[name](**options)
        streams = sacrebleu_metrics.as_streams(predictions, references)
        if ci:
            keys.update(significance.sacrebleu_ci(metric, name, list(predictions), streams))
        if baseline is not None:
            streams_base = sacrebleu_metrics.as_streams(baseline, references)
            keys.update(significance.sacrebleu_paired(
                metric, name, list(predictions), list(baseline), streams_base))
        return keys
    stat = _statistic(name, predictions, references, options)
    # SQuAD/CMRC items are the reference questions; otherwise one item per prediction.
    n_items = len(references) if name in ("squad", "squad_v2", "cmrc2018") else len(predictions)
    if ci:
        keys.update(significance.bootstrap_ci(stat, n_items))
    if baseline is not None:
        stat_base = _statistic(name, baseline, references, options)
        keys.update(significance.paired_bootstrap(stat, stat_base, n_items))
    return keys
