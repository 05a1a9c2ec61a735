"""Bootstrap 95% confidence intervals and paired bootstrap significance tests.

For BLEU, chrF and TER this is sacreBLEU's own machinery (``corpus_score(n_bootstrap=...)`` and
``sacrebleu.significance.PairedTest`` with ``test_type="bs"``), resampling sentence-level
sufficient statistics. The other metrics are corpus means (ROUGE, SQuAD, accuracy) or
recomputed from labels (precision/recall/F1), so a seeded bootstrap over items does the same
thing: the same ``estimate_ci`` rule (mean +/- half the width of the central 95% of resampled
scores) and the same p-value as sacreBLEU's paired bootstrap (Koehn 2004, as in Moses'
``bootstrap-hypothesis-difference-significance.pl``).

Output keys, for each score key ``k``: ``k_mean`` and ``k_ci95`` (``--ci``: bootstrap mean and
the half-width, "mean +/- ci95"); ``k_baseline`` and ``k_p_value`` (``--compare``: the other
system's score and the p-value that the difference is due to chance; 1.0 when the two
scores are equal, where the raw formula would give its minimum, see ``_no_difference_p``).

Seed: 12345 (sacreBLEU's default, and the ``SACREBLEU_SEED`` environment variable it reads).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hf_toolkit import compat

SEED = 12345
N_SAMPLES = 1000

# stat(indices) -> {key: score} for the items at those (resampled) indices.
Statistic = Callable[[np.ndarray], dict[str, float]]


def estimate_ci(scores: np.ndarray) -> tuple[float, float]:
    """sacreBLEU's rule: (mean, half-width of the central 95% of the bootstrap scores)."""
    from sacrebleu.significance import estimate_ci as sacrebleu_estimate_ci

    mean, ci = sacrebleu_estimate_ci(np.asarray(scores))
    return float(mean), float(ci)


def _resample_indices(n_items: int, n_samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(n_items, size=(n_samples, n_items), replace=True)


def bootstrap_ci(stat: Statistic, n_items: int, *, n_samples: int = N_SAMPLES,
                 seed: int = SEED) -> dict[str, float]:
    """``{k_mean, k_ci95}`` for every key ``k`` that ``stat`` returns."""
    samples = [stat(idx) for idx in _resample_indices(n_items, n_samples, seed)]
    result = {}
    for key in samples[0]:
        mean, ci = estimate_ci(np.array([sample[key] for sample in samples]))
        result[f"{key}_mean"], result[f"{key}_ci95"] = mean, ci
    return result


def paired_bootstrap(stat_system: Statistic, stat_baseline: Statistic, n_items: int, *,
                     n_samples: int = N_SAMPLES, seed: int = SEED) -> dict[str, float]:
    """``{k_baseline, k_p_value}``: sacreBLEU's ``_paired_bs_test`` on item-level statistics."""
    everything = np.arange(n_items)
    system, baseline = stat_system(everything), stat_baseline(everything)
    idxs = _resample_indices(n_items, n_samples, seed)  # the same resamples for both systems
    sys_samples = [stat_system(idx) for idx in idxs]
    base_samples = [stat_baseline(idx) for idx in idxs]
    result = {}
    for key in system:
        real_difference = abs(baseline[key] - system[key])
        sample_diffs = np.abs(np.array([s[key] for s in sys_samples]) -
                              np.array([b[key] for b in base_samples]))
        # Centre the differences (null hypothesis: no difference), then count how often chance
        # alone gives a larger difference; +1 smoothing as in sacreBLEU/multeval.
        centred = sample_diffs - sample_diffs.mean()
        p_value = float((np.sum(centred > real_difference) + 1) / (n_samples + 1))
        result[f"{key}_baseline"] = baseline[key]
        result[f"{key}_p_value"] = _no_difference_p(real_difference, p_value)
    return result


def _no_difference_p(real_difference: float, p_value: float) -> float:
    """1.0 when both systems score the same.

    The test counts resampled differences strictly greater than the real one; with a real
    difference of 0 and identical per-item statistics nothing exceeds it and the formula gives
    its minimum 1/(n+1), which would call two identical systems "significantly different".
    """
    return 1.0 if real_difference == 0 else p_value


def mean_statistic(items: dict[str, list[float]], scale: float = 1.0) -> Statistic:
    """Statistic for metrics that are a mean over items (ROUGE, SQuAD, accuracy)."""
    arrays = {key: np.asarray(values, dtype=float) for key, values in items.items()}
    return lambda idx: {key: scale * float(values[idx].mean()) for key, values in arrays.items()}


def sacrebleu_ci(metric, key: str, predictions: list[str], streams: list[list[str]], *,
                 n_samples: int = N_SAMPLES) -> dict[str, float]:
    """CI from sacreBLEU's ``corpus_score(n_bootstrap=...)`` (seed from SACREBLEU_SEED, default 12345)."""
    score = metric.corpus_score(predictions, streams, n_bootstrap=n_samples)
    mean, half_width = compat.bootstrap_estimate(score)
    return {f"{key}_mean": mean, f"{key}_ci95": half_width}


def sacrebleu_paired(metric, key: str, predictions: list[str], baseline: list[str],
                     streams: list[list[str]], *, n_samples: int = N_SAMPLES) -> dict[str, float]:
    """Paired bootstrap test from ``sacrebleu.significance.PairedTest`` (test_type="bs")."""
    from sacrebleu.significance import PairedTest

    test = PairedTest([("baseline", baseline), ("system", predictions)], {key: metric},
                      references=streams, test_type="bs", n_samples=n_samples)
    _, scores = test()
    (baseline_result, system_result), = [v for name, v in scores.items() if name != "System"]
    difference = abs(baseline_result.score - system_result.score)
    return {f"{key}_baseline": float(baseline_result.score),
            f"{key}_p_value": _no_difference_p(difference, float(system_result.p_value))}
