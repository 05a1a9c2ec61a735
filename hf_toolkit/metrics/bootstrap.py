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
from hf_toolkit.metrics.rouge_metrics import rouge_items
from hf_toolkit.metrics.squad_official import squad_items

_SACREBLEU_BUILDERS = {
    "bleu": sacrebleu_metrics.bleu_metric,
    "chrf": sacrebleu_metrics.chrf_metric,
    "ter": sacrebleu_metrics.ter_metric,
}


def _statistic(name: str, predictions, references, options: dict) -> significance.Statistic:
    """stat(indices) -> scores of the items at ``indices``, for one system."""
    if name == "rouge":
        from hf_toolkit.metrics import per_item_references

        return significance.mean_statistic(
            rouge_items(predictions, per_item_references(references), **options))
    if name in ("squad", "squad_v2"):
        items = squad_items(predictions, references, version=1 if name == "squad" else 2)
        return significance.mean_statistic(items, scale=100.0)
    if name == "accuracy":
        classification.accuracy(predictions, references)  # same checks as the real score
        hits = [float(p == r) for p, r in zip(predictions, references)]
        return significance.mean_statistic({"accuracy": hits})
    if name in ("precision", "recall", "f1"):
        function = getattr(classification, name)
        preds, refs = np.asarray(predictions), np.asarray(references)
        return lambda idx: function(list(preds[idx]), list(refs[idx]), **options)
    raise HftkError(f"--ci/--compare are not available for metric '{name}'")


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
    # SQuAD items are the reference questions; otherwise one item per prediction.
    n_items = len(references) if name in ("squad", "squad_v2") else len(predictions)
    if ci:
        keys.update(significance.bootstrap_ci(stat, n_items))
    if baseline is not None:
        stat_base = _statistic(name, baseline, references, options)
        keys.update(significance.paired_bootstrap(stat, stat_base, n_items))
    return keys
