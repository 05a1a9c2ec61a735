"""Summarization (``task: summarization``): document in, summary out, scored with ROUGE.

Everything but the metric is :class:`~hf_toolkit.tasks.seq2seq.Seq2SeqTask` (three model
shapes: encoder-decoder checkpoints, EncoderDecoderModel pairs, decoder-only with a prompt
template). Data roles: ``source`` (the document) and ``target`` (the summary).
"""

from hf_toolkit.tasks.base import CompareMetric
from hf_toolkit.tasks.seq2seq import Seq2SeqTask


class Summarization(Seq2SeqTask):
    name = "summarization"
    eval_metrics = ("rouge",)
    compare_metric = CompareMetric("rouge", "rougeL", higher_is_better=True, timing="generate")
