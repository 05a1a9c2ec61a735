"""Summarization (``task: summarization``): document in, summary out, scored with ROUGE.

Everything but the metric is shared with translation in :mod:`hf_toolkit.tasks.seq2seq`
(three model shapes: encoder-decoder checkpoints, EncoderDecoderModel pairs, decoder-only with a
prompt template). Data roles: ``source`` (the document) and ``target`` (the summary).
"""

from hf_toolkit.tasks.seq2seq import *  # noqa: F403  (the task contract: seq2seq.__all__)
from hf_toolkit.tasks.seq2seq import TASK_METRICS

EVAL_METRICS = TASK_METRICS["summarization"]
