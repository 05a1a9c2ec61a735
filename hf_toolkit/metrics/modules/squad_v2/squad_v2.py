"""Offline `evaluate` module for hftk's `squad_v2` metric: `evaluate.load("<this folder>")`.

A thin subclass of hf_toolkit.metrics.evaluate_module.HftkMetric; the numbers come from
hf_toolkit.metrics.squad_v2 (see that package's docstring for keys, scales and options).
"""

from hf_toolkit.metrics import evaluate_module


class SquadV2(evaluate_module.HftkMetric):
    metric_name = "squad_v2"
