"""Offline `evaluate` module for hftk's `precision` metric: `evaluate.load("<this folder>")`.

A thin subclass of hf_toolkit.metrics.evaluate_module.HftkMetric; the numbers come from
hf_toolkit.metrics.precision (see that package's docstring for keys, scales and options).
"""

from hf_toolkit.metrics import evaluate_module


class Precision(evaluate_module.HftkMetric):
    metric_name = "precision"
