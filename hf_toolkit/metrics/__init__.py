"""Offline, exact metrics: each a thin wrapper over its reference implementation.

Plain functions (what the tasks' ``compute_metrics`` call), by name in :data:`METRICS`:

============  ===========================================  ==========================  =======
name          keys                                         reference implementation    scale
============  ===========================================  ==========================  =======
bleu          bleu                                         sacreBLEU corpus BLEU       0-100
chrf          chrf (chrF++ with ``word_order=2``)          sacreBLEU chrF              0-100
ter           ter                                          sacreBLEU TER               0-100
rouge         rouge1, rouge2, rougeL, rougeLsum            rouge-score F, mean/pairs   0-1
squad         exact_match, f1                              official SQuAD v1.1 script  0-100
squad_v2      exact_match, f1, HasAns_*, NoAns_*           official SQuAD v2.0 script  0-100
cmrc2018      exact_match, f1, average                     official CMRC 2018 script   0-100
accuracy      accuracy                                     scikit-learn                0-1
precision     precision (``average``: binary/macro/...)    scikit-learn                0-1
recall        recall                                       scikit-learn                0-1
f1            f1                                           scikit-learn                0-1
perplexity    perplexity                                   transformers causal LM      >= 1
============  ===========================================  ==========================  =======

Key collisions: :func:`compute` returns ONE flat dict, each key once. When a key would come from
two requested metrics, every key of a metric involved is prefixed with that metric's name,
except a key equal to the metric's own name. So ``squad`` + ``f1`` gives ``f1`` (classification),
``squad_exact_match`` and ``squad_f1``; ``squad`` + ``squad_v2`` gives ``squad_exact_match``,
``squad_f1``, ``squad_v2_exact_match``, ... Alone, every metric keeps the keys in the table.

BLEU's tokenizer: without ``tokenize``, Chinese predictions and references are scored with
sacreBLEU's ``zh`` tokenizer (with a warning), other text with ``13a`` (with a warning for
Japanese or Korean); see :mod:`hf_toolkit.metrics.sacrebleu_metrics`.

Chinese extractive QA: ``squad``'s F1 splits at whitespace and scores a partly right Chinese
answer 0; ``cmrc2018`` scores characters as CMRC 2018's official script does
(:mod:`hf_toolkit.metrics.cmrc2018`). :func:`qa_metric` picks it for Chinese references, with a
warning that says so (as BLEU's ``zh`` tokenizer is picked).

Reference layouts: ``bleu``/``chrf``/``ter``/``rouge`` in :func:`compute` take sacreBLEU's layout,
one list per reference stream (a flat list of strings is one stream); the plain :func:`rouge`
function takes one reference (or list of references) per prediction. ``squad``/``squad_v2``/``cmrc2018`` take
``{id: text}`` predictions and ``{id: [gold texts]}`` references; classification takes labels.

Each metric is also an ``evaluate`` module that loads offline: :func:`load` returns
``evaluate.load(<local path>)``, usable with ``evaluate.combine``.

Nothing heavy is imported here: sacreBLEU, rouge-score, scikit-learn, torch and evaluate load
inside the functions that need them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

from hf_toolkit.errors import HftkError, did_you_mean
from hf_toolkit.metrics import sacrebleu_metrics
from hf_toolkit.metrics.cjk import cjk_language
from hf_toolkit.metrics.cmrc2018 import cmrc2018
from hf_toolkit.metrics.classification import accuracy, f1, precision, recall
from hf_toolkit.metrics.lm_perplexity import perplexity
from hf_toolkit.metrics.rouge_metrics import per_item_references, rouge
from hf_toolkit.metrics.sacrebleu_metrics import bleu, chrf, ter
from hf_toolkit.metrics.squad_official import squad, squad_v2

METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "bleu": bleu,
    "chrf": chrf,
    "ter": ter,
    "rouge": rouge,
    "squad": squad,
    "squad_v2": squad_v2,
    "cmrc2018": cmrc2018,
    "accuracy": accuracy,
    "precision": precision,
    "recall": recall,
    "f1": f1,
    "perplexity": perplexity,
}

# What each metric reads: files mode and compute() use this to shape inputs.
SACREBLEU_METRICS = ("bleu", "chrf", "ter")
TEXT_METRICS = (*SACREBLEU_METRICS, "rouge")
LABEL_METRICS = ("accuracy", "precision", "recall", "f1")
SQUAD_METRICS = ("squad", "squad_v2", "cmrc2018")
# Metrics that read the same kind of predictions (texts, labels, SQuAD answers, a language model).
FAMILIES = (TEXT_METRICS, LABEL_METRICS, SQUAD_METRICS, ("perplexity",))


def family_of(name: str) -> tuple[str, ...]:
    """The metrics that score the same kind of predictions as ``name`` (``rouge`` -> text metrics)."""
    return next(family for family in FAMILIES if name in family)


def qa_metric(references, *, version_2: bool = False) -> str:
    """The extractive-QA metric for ``{id: [gold texts]}`` references: ``cmrc2018`` when they are
    Chinese (v1 data; with a warning that says so), else ``squad`` (``squad_v2`` for ``version_2``)."""
    import warnings

    if version_2:
        return "squad_v2"
    if cjk_language(text for answers in references.values() for text in answers) == "zh":
        warnings.warn("the reference answers are Chinese: scored with CMRC 2018's metric (cmrc2018: character-level "
                      "F1 and EM, as its official script), not SQuAD's whitespace-token F1", stacklevel=2)
        return "cmrc2018"
    return "squad"


MODULES_DIR = Path(__file__).resolve().parent / "modules"
_DATA_PARAMETERS = {"predictions", "references", "texts"}


def check_names(names: Sequence[str]) -> list[str]:
    """Return ``names`` without duplicates, or raise HftkError for an unknown one."""
    if not names:
        raise HftkError(f"no metric given; choose from: {', '.join(METRICS)}")
    for name in names:
        if name not in METRICS:
            raise HftkError(f"unknown metric '{name}'{did_you_mean(name, METRICS)}; "
                            f"available: {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def options_of(name: str) -> list[str]:
    """The keyword options metric ``name`` accepts (its parameters besides the data)."""
    parameters = inspect.signature(METRICS[name]).parameters
    return [p for p in parameters if p not in _DATA_PARAMETERS]


def route_options(names: Sequence[str], options: dict) -> dict[str, dict]:
    """Split ``options`` per metric; an option no requested metric takes is a user error."""
    routed = {name: {} for name in names}
    for option, value in options.items():
        takers = [name for name in names if option in options_of(name)]
        if not takers:
            users = [name for name in METRICS if option in options_of(name)]
            hint = f"; it applies to: {', '.join(users)}" if users else ""
            raise HftkError(f"option '{option}' does not apply to the requested metrics "
                            f"({', '.join(names)}){hint}")
        for name in takers:
            routed[name][option] = value
    return routed


def _call(name: str, predictions, references, options: dict) -> dict[str, float]:
    function = METRICS[name]
    if name == "perplexity":
        return function(predictions, **options)
    if name == "rouge":
        references = per_item_references(references)
    return function(predictions, references, **options)


def resolve_keys(results: dict[str, dict[str, float]],
                 extra: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """Merge per-metric scores into one dict, prefixing colliding keys (see module docstring).

    Collisions are decided on ``results`` (the scores); ``extra`` holds keys derived from them
    (``f1_ci95``, ...) that are renamed along with their metric.
    """
    producers: dict[str, int] = {}
    for scores in results.values():
        for key in scores:
            producers[key] = producers.setdefault(key, 0) + 1
    merged = {}
    for name, scores in results.items():
        clash = any(producers[key] > 1 and key != name for key in scores)
        everything = {**scores, **(extra or {}).get(name, {})}
        for key, value in everything.items():
            own = key == name or key.startswith(f"{name}_")
            merged[f"{name}_{key}" if clash and not own else key] = value
    return merged


def compute(names: Sequence[str], predictions, references=None, *, ci: bool = False,
            baseline=None, **options) -> dict[str, float]:
    """Score ``predictions`` with every metric in ``names``; ONE merged dict of floats.

    ``options`` go to each metric that takes them (``tokenize``, ``word_order``, ``use_stemmer``,
    ``split_sentences``, ``average``, ``model`` for perplexity, ...). ``ci=True`` adds bootstrap
    95% intervals; ``baseline`` (another system's predictions) adds a paired bootstrap test.
    See :mod:`hf_toolkit.metrics.significance` for those keys.
    """
    names = check_names(names)
    routed = route_options(names, options)
    if "bleu" in names and routed["bleu"].get("tokenize") is None:
        # Decided once, so the --ci/--compare bootstrap uses the tokenizer the score uses.
        routed["bleu"]["tokenize"] = sacrebleu_metrics.default_tokenize(predictions, references)
    if "squad" in names and "cmrc2018" not in names and cjk_language(
            text for answers in (references or {}).values() for text in answers) == "zh":
        import warnings

        warnings.warn("the reference answers are Chinese, and squad's F1 splits answers at whitespace, so a partly "
                      "right Chinese answer scores 0; --metric cmrc2018 scores characters as CMRC 2018 does", stacklevel=2)
    results, extra = {}, {}
    for name in names:
        results[name] = _call(name, predictions, references, routed[name])
        if ci or baseline is not None:
            from hf_toolkit.metrics.bootstrap import significance_keys

            extra[name] = significance_keys(name, predictions, references, routed[name],
                                            ci=ci, baseline=baseline)
    return resolve_keys(results, extra)


def load(name: str, **kwargs):
    """``evaluate.load`` of the local, offline module for metric ``name``."""
    check_names([name])
    import evaluate

    return evaluate.load(str(MODULES_DIR / name), **kwargs)


__all__ = ["METRICS", "accuracy", "bleu", "chrf", "cmrc2018", "compute", "f1", "load", "perplexity",
           "precision", "recall", "rouge", "squad", "squad_v2", "ter"]
