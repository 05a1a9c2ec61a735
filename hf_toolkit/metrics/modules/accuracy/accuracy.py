"""Offline `evaluate` module for hftk's `accuracy` metric: `evaluate.load("<this folder>")`.

A thin subclass of hf_toolkit.metrics.evaluate_module.HftkMetric; the numbers come from
hf_toolkit.metrics.accuracy (see that package's docstring for keys, scales and options).
"""

from hf_toolkit.metrics import evaluate_module


class Accuracy(evaluate_module.HftkMetric):
    metric_name = "accuracy"
