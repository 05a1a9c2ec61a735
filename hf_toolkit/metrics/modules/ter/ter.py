"""Offline `evaluate` module for hftk's `ter` metric: `evaluate.load("<this folder>")`.

A thin subclass of hf_toolkit.metrics.evaluate_module.HftkMetric; the numbers come from
hf_toolkit.metrics.ter (see that package's docstring for keys, scales and options).
"""

from hf_toolkit.metrics import evaluate_module


class Ter(evaluate_module.HftkMetric):
    metric_name = "ter"
