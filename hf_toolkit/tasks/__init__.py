"""The tasks hftk trains and applies: one :class:`~hf_toolkit.tasks.base.Task` subclass per
module, one instance each in :data:`TASKS`, the only table of them.

Adding a task: write ``tasks/<name>.py`` with a ``Task`` subclass (its ``Data`` options, roles,
``auto_model`` and ``prepare``, plus the hooks it changes) and add its instance here. Recipes
name it in ``task:``; :mod:`hf_toolkit.recipe.checks` validates their ``data`` with its ``Data``.
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
