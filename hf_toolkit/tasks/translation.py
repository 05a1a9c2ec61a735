"""Translation (``task: translation``): source-language text in, target-language text out,
scored with BLEU and chrF (sacreBLEU; Chinese targets use sacreBLEU's ``zh`` tokenizer).

Everything but the metrics and the language options is shared with summarization in
:mod:`hf_toolkit.tasks.seq2seq`. Data: ``source``/``target`` columns (``data.columns``), or the
Hugging Face translation format ``{"translation": {"en": ..., "de": ...}}`` read with
``data.source_lang``/``data.target_lang`` (which multilingual tokenizers such as mBART-50 also
take as their language codes).
"""

from hf_toolkit.tasks.seq2seq import *  # noqa: F403  (the task contract: seq2seq.__all__)
from hf_toolkit.tasks.seq2seq import TASK_METRICS

EVAL_METRICS = TASK_METRICS["translation"]
