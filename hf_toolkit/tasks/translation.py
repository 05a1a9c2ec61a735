"""Translation (``task: translation``): source-language text in, target-language text out,
scored with BLEU and chrF (sacreBLEU; Chinese targets use sacreBLEU's ``zh`` tokenizer).

Everything but the metrics and the language options is shared with summarization in
:mod:`hf_toolkit.tasks.seq2seq`. Data: ``source``/``target`` columns (``data.columns``), or the
Hugging Face translation format ``{"translation": {"en": ..., "de": ...}}`` read with
``data.source_lang``/``data.target_lang`` (which multilingual tokenizers such as mBART-50 also
take as their language codes).
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

EVAL_METRICS = TASK_METRICS["translation"]
