"""The tasks hftk can train, one module each, listed in one explicit dict.

A task module reads top to bottom and provides:

- ``ROLES`` / ``OPTIONAL_ROLES``: the data roles it needs / uses when present (see ``data.columns``);
- ``TRAINER``: ``"Trainer"`` or ``"Seq2SeqTrainer"``;
- ``PEFT_TASK_TYPE``: peft's TaskType name for LoRA (``CAUSAL_LM``, ``SEQ_CLS``, ``QUESTION_ANS``,
  ``SEQ_2_SEQ_LM``) or None; it makes peft keep task heads fully trainable and saved;
- ``auto_model()``: the transformers Auto class to build;
- ``model_config(recipe, splits)``: task settings for the model config (e.g. ``num_labels``);
- ``prepare(recipe, splits, tokenizer, model)``: tokenized splits ready for the Trainer;
- ``trainer_kwargs(recipe, tokenizer, model)``: data collator, compute_metrics, ...;
- ``finish_metrics(metrics, prefix)``: derived numbers (e.g. perplexity) added to evaluation output.

For ``hftk eval --model DIR --data F`` (model mode):

- ``EVAL_METRICS``: tuple of :mod:`hf_toolkit.metrics` names scored by default (e.g. ``("rouge",)``
  for summarization, ``("bleu", "chrf")`` for translation);
- ``EVAL_OPTIONS`` (optional): metric options that go with ``EVAL_METRICS`` (text-classification:
  ``{"average": "macro"}``, as during training), passed to the chosen metrics that take them;
  or ``metric_options(recipe)`` when they depend on the run (translation into Chinese: BLEU's
  ``zh`` tokenizer);
- ``predict(run_dir, recipe, dataset) -> (predictions, references)``: run the trained model over
  ``dataset`` (the rows of F with role columns, prepared by :func:`hf_toolkit.data.eval_rows`;
  the run's recipe may be None for a plain model dir) and return lists in the layout
  :func:`hf_toolkit.metrics.compute` takes for those
  metrics (strings for text metrics, labels, SQuAD id mappings). Generative tasks generate
  through :mod:`hf_toolkit.generation` with the run's saved generation config.

Column mapping in model mode: :func:`hf_toolkit.data.eval_rows` takes a role's column from the
run's ``data.columns`` when F has it, else the role's own name, and cleans text as the run did.
The run's recipe is read
back with :func:`hf_toolkit.generation.read_run_recipe` (None for a plain Hugging Face model dir).

Optional hooks (generic code checks ``hasattr(task, ...)``; a task without them gets the default):

- ``TRAINING_DEFAULTS``: mapping of TrainingArguments defaults for the task, applied unless the
  recipe's ``training`` sets the key (e.g. ``{"predict_with_generate": True}``);
- ``build_model(recipe, splits) -> (tokenizer, model)``: replaces the default
  ``modeling.load_tokenizer`` + ``modeling.load_model(auto_model(), ...)``, for tasks whose model
  shape depends on the recipe (seq2seq: encoder-decoder, EncoderDecoderModel pair, decoder-only).
  The tokenizer returned reads the inputs and is saved at the top of the run directory. Such a
  task's ``auto_model(recipe)`` takes the recipe and names the class for its shape (model card);
- ``check_recipe(recipe)``: raise RecipeError for settings the task cannot honour (options that
  contradict each other, e.g. masked-lm ``block_size`` with ``line_by_line``; a ``generation``
  section for a task that does not generate); called before any data or model is loaded;
- ``evaluate(trainer, recipe, examples, features, prefix) -> metrics``: scores one split at the
  end of training instead of ``trainer.evaluate(features)``, for tasks scored on examples rather
  than on the features the model sees (question-answering: windows -> one answer per question).
  ``examples`` is the split as loaded (role columns), ``features`` the prepared split; returns
  keys prefixed with ``prefix`` (``eval``/``test``), the loss included;
- ``trainer_class()``: the Trainer class to use instead of ``getattr(transformers, TRAINER)``
  (a subclass of it; TRAINER still picks the TrainingArguments class);
- ``encode_prompts(recipe, tokenizer, model, prompts) -> list[list[int]]``: the input ids
  ``hftk generate`` feeds a model trained with this task, encoded exactly as training encoded
  its inputs (e.g. ``data.source_prefix``, ``data.prompt_template``, truncation).
"""

from __future__ import annotations

from types import ModuleType

from hf_toolkit.errors import HftkError
from hf_toolkit.tasks import (
    causal_lm,
    masked_lm,
    question_answering,
    summarization,
    text_classification,
    translation,
)

TASKS: dict[str, ModuleType] = {
    "causal-lm": causal_lm,
    "masked-lm": masked_lm,
    "text-classification": text_classification,
    "question-answering": question_answering,
    "summarization": summarization,
    "translation": translation,
}


def get_task(name: str) -> ModuleType:
    """The module for a task named in a recipe; a clear error for one that is not built yet."""
    if name not in TASKS:
        raise HftkError(
            f"task '{name}' is not available yet in this version of hftk (available: {', '.join(TASKS)})"
        )
    return TASKS[name]
