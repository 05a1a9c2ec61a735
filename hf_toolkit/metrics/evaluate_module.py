"""The shared ``evaluate.Metric`` behind the offline modules in ``metrics/modules/<name>/<name>.py``.

``evaluate.load("rouge")`` downloads its script from the hub and fails offline. Each of our
module files subclasses :class:`HftkMetric` and sets ``metric_name``; ``evaluate.load`` on that
local path (:func:`hf_toolkit.metrics.load`) then gives an ordinary evaluate module, usable with
``evaluate.combine``, that calls our plain function, so both routes give identical numbers.

Inputs follow evaluate's conventions (one row per example), converted here to the plain
functions' layouts:

- bleu/chrf/ter/rouge: ``predictions`` strings; ``references`` one string or one list of
  strings per prediction (sacreBLEU needs the same number of references for every prediction).
- squad/squad_v2/cmrc2018: the HF ``squad`` layout: ``predictions`` ``{"id", "prediction_text"}``,
  ``references`` ``{"id", "answers": {"text": [...], "answer_start": [...]}}``.
- accuracy/precision/recall/f1: integer labels.
- perplexity: ``predictions`` are the texts; pass ``model_id=`` (a run or model dir, or hub id) to
  ``compute``; it loads with ``AutoModelForCausalLM`` (a LoRA run's adapter through transformers'
  PEFT integration), in eval mode.

Module files must import this module (not the class): evaluate takes the first concrete
``EvaluationModule`` subclass it finds in the script's namespace.
"""

from __future__ import annotations

import datasets
import evaluate

from hf_toolkit.errors import DataError

_TEXT = [
    datasets.Features({"predictions": datasets.Value("string"),
                       "references": datasets.Sequence(datasets.Value("string"))}),
    datasets.Features({"predictions": datasets.Value("string"),
                       "references": datasets.Value("string")}),
]
_SQUAD = [datasets.Features({
    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
    "references": {"id": datasets.Value("string"),
                   "answers": datasets.Sequence({"text": datasets.Value("string"),
                                                 "answer_start": datasets.Value("int32")})},
})]
_LABELS = [datasets.Features({"predictions": datasets.Value("int64"),
                              "references": datasets.Value("int64")})]

FEATURES = {
    "bleu": _TEXT, "chrf": _TEXT, "ter": _TEXT, "rouge": _TEXT,
    "squad": _SQUAD, "squad_v2": _SQUAD, "cmrc2018": _SQUAD,
    "accuracy": _LABELS, "precision": _LABELS, "recall": _LABELS, "f1": _LABELS,
    "perplexity": [datasets.Features({"predictions": datasets.Value("string")})],
}


def _streams(references: list) -> list[list[str]]:
    """evaluate's one-list-per-prediction -> sacreBLEU's one-list-per-stream."""
    per_item = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
    counts = {len(refs) for refs in per_item}
    if len(counts) > 1:
        raise DataError(f"sacreBLEU needs the same number of references per prediction; got {sorted(counts)}")
    return [list(stream) for stream in zip(*per_item)]


class HftkMetric(evaluate.Metric):
    """An evaluate module that calls ``hf_toolkit.metrics.METRICS[metric_name]``."""

    metric_name = ""

    def _info(self) -> evaluate.MetricInfo:
        from hf_toolkit.metrics import METRICS

        return evaluate.MetricInfo(
            description=METRICS[self.metric_name].__doc__ or self.metric_name,
            citation="See hf_toolkit.metrics: sacreBLEU, rouge-score, the official SQuAD "
                     "scripts, scikit-learn.",
            inputs_description=__doc__,
            features=FEATURES[self.metric_name],
        )

    def _compute(self, predictions, references=None, **options):
        from hf_toolkit.metrics import METRICS

        function = METRICS[self.metric_name]
        name = self.metric_name
        if name in ("bleu", "chrf", "ter"):
            return function(predictions, _streams(references), **options)
        if name in ("squad", "squad_v2", "cmrc2018"):
            preds = {p["id"]: p["prediction_text"] for p in predictions}
            refs = {r["id"]: list(r["answers"]["text"]) for r in references}
            return function(preds, refs, **options)
        if name == "perplexity":
            model, tokenizer = _causal_lm(options.pop("model_id"))
            return function(predictions, model, tokenizer, **options)
        return function(predictions, references, **options)


def _causal_lm(reference: str) -> tuple:
    """(causal LM in eval mode, tokenizer with a pad token) for `reference`, loaded by transformers alone:
    the metrics layer sits below the run directory (:mod:`hf_toolkit.core.rundir`) and must not reach up."""
    from transformers import AutoModelForCausalLM

    from hf_toolkit.core import modeling

    model = modeling.from_pretrained(AutoModelForCausalLM, reference, "model").eval()
    return model, modeling.load_tokenizer_from(reference)
