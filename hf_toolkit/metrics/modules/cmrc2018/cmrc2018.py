"""Offline `evaluate` module for hftk's `cmrc2018` metric: `evaluate.load("<this folder>")`.

A thin subclass of hf_toolkit.metrics.evaluate_module.HftkMetric; the numbers come from
hf_toolkit.metrics.cmrc2018 (see that package's docstring for keys, scales and options).
"""

from hf_toolkit.metrics import evaluate_module


class Cmrc2018(evaluate_module.HftkMetric):
    metric_name = "cmrc2018"
