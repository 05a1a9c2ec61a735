"""Summarization (``task: summarization``): document in, summary out, scored with ROUGE.

Everything but the metric is shared with translation in :mod:`hf_toolkit.tasks.seq2seq`
(three model shapes: encoder-decoder checkpoints, EncoderDecoderModel pairs, decoder-only with a
prompt template). Data roles: ``source`` (the document) and ``target`` (the summary).
"""

from hf_toolkit.tasks.seq2seq import (  # noqa: F401  (the task contract, re-exported)
    OPTIONAL_ROLES,
    PEFT_TASK_TYPE,
    ROLES,
    TASK_METRICS,
    TRAINER,
    TRAINING_DEFAULTS,
    auto_model,
    build_model,
    check_recipe,
    encode_prompts,
    finish_metrics,
    metric_options,
    model_config,
    predict,
    prepare,
    trainer_class,
    trainer_kwargs,
)

EVAL_METRICS = TASK_METRICS["summarization"]
