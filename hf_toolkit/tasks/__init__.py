"""The tasks hftk trains and applies: one :class:`~hf_toolkit.tasks.base.Task` subclass per
module, one instance each in :data:`TASKS`, the only table of them.

Adding a task: write ``tasks/<name>.py`` with a ``Task`` subclass (its ``Data`` options, roles,
``auto_model`` and ``prepare``, plus the hooks it changes) and add its instance here. Recipes
name it in ``task:``; :mod:`hf_toolkit.recipe.checks` validates their ``data`` with its ``Data``.

Beside the tasks: :mod:`~hf_toolkit.tasks.qa_postprocess` (QA answers from logits), and the
Trainer and collator subclasses some tasks train with (:mod:`~hf_toolkit.tasks.trainers`,
:mod:`~hf_toolkit.tasks.collators`), which import transformers and so are imported only by the
hooks that return them, never by this table.
"""

from __future__ import annotations

from hf_toolkit.tasks.base import Task
from hf_toolkit.tasks.causal_lm import CausalLM
from hf_toolkit.tasks.masked_lm import MaskedLM
from hf_toolkit.tasks.question_answering import QuestionAnswering
from hf_toolkit.tasks.summarization import Summarization
from hf_toolkit.tasks.text_classification import TextClassification
from hf_toolkit.tasks.translation import Translation

TASKS: dict[str, Task] = {
    task.name: task
    for task in (CausalLM(), MaskedLM(), TextClassification(), QuestionAnswering(), Summarization(), Translation())
}
