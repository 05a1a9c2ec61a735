"""Offline `evaluate` module for hftk's `chrf` metric: `evaluate.load("<this folder>")`.

A thin subclass of hf_toolkit.metrics.evaluate_module.HftkMetric; the numbers come from
hf_toolkit.metrics.chrf (see that package's docstring for keys, scales and options).
"""

from hf_toolkit.metrics import evaluate_module


class Chrf(evaluate_module.HftkMetric):
    metric_name = "chrf"
