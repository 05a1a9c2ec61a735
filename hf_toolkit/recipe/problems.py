"""Problems located in the recipe: a key path becomes ``file:line`` (or the ``--set`` that wrote it).

Checks report :class:`~hf_toolkit.errors.Problem` records (key path, message); a
:class:`Locator` knows where each key path was written, and :meth:`Locator.error` turns the
records into one :class:`~hf_toolkit.errors.RecipeError`, sorted by line. pydantic's validation
errors become records in :func:`from_validation_error`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from hf_toolkit.errors import Problem, RecipeError, did_you_mean
from hf_toolkit.recipe.schema import SPEC_TAGS, section_at
from hf_toolkit.recipe.yamlio import KeyPath


@dataclass
class Locator:
    """Where the key paths of one recipe were written: YAML lines and ``--set`` assignments."""

    source: str = "recipe"
    lines: dict[KeyPath, int] = field(default_factory=dict)
    overridden: dict[KeyPath, str] = field(default_factory=dict)

    def where(self, key: KeyPath) -> str:
        """'file:line' (or '--set k=v') of the closest key path at or above `key` that was written,
        else of the first key written below it (a section that only ``--set peft.r=4`` created)."""
        for i in range(len(key), 0, -1):
            if key[:i] in self.overridden:
                return f"--set {self.overridden[key[:i]]}"
            if key[:i] in self.lines:
                return f"{self.source}:{self.lines[key[:i]]}"
        if key:
            for written, assignment in self.overridden.items():
                if written[: len(key)] == key:
                    return f"--set {assignment}"
        return self.source

    def locate(self, problem: Problem) -> Problem:
        return problem if problem.where else replace(problem, where=self.where(problem.key))

    def error(self, problems: Iterable[Problem]) -> RecipeError:
        """One RecipeError with every problem located, each once, in line order."""
        located = list(dict.fromkeys(self.locate(p) for p in problems))
        located.sort(key=lambda p: _line(p.where))
        return RecipeError(located, self.source)


def _line(where: str | None) -> int:
    match = re.search(r":(\d+)$", where or "")
    return int(match.group(1)) if match else 0


def from_validation_error(error: ValidationError, root: type[BaseModel], *, task: str | None = None,
                          other_options: dict[str, Sequence[str]] | None = None) -> list[Problem]:
    """pydantic's errors as problem records.

    ``other_options`` maps a ``data`` option to the tasks that read it, so an option of another
    task is reported as such rather than as an unknown key.
    """
    return [_problem(item, root, task, other_options or {}) for item in error.errors()]


def _problem(item: dict[str, Any], root: type[BaseModel], task: str | None, other_options: dict[str, Sequence[str]]) -> Problem:
    loc = tuple(str(p) for p in item["loc"] if p not in SPEC_TAGS)
    kind = item["type"]
    if kind == "extra_forbidden":
        if loc[:1] == ("data",) and len(loc) == 2 and loc[1] in other_options:
            data = section_at(root, ("data",))
            own = sorted(set(data.model_fields) - set(_common_data_keys())) if data else []
            reads = f"it reads {', '.join(own)}" if own else "it reads none of the task options"
            return Problem(loc, f"does not apply to task {task} ({reads}); remove it")
        parent = section_at(root, loc[:-1])
        choices = list(parent.model_fields) if parent else []
        hint = did_you_mean(loc[-1], choices)
        allowed = f"; allowed keys: {', '.join(choices)}" if choices and not hint else ""
        return Problem(loc, f"unknown key{hint}{allowed}")
    if kind == "missing":
        return Problem(loc, "required key is missing")
    message = item["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
        # A rule across keys that names its key first ("peft: ...") is reported at that key.
        named = re.match(r"(\w+(?:\.\w+)*): ", message)
        if named and named.group(1).split(".")[0] in root.model_fields:
            return Problem(tuple(named.group(1).split(".")), message[named.end():])
        return Problem(loc, message)
    got = item.get("input")
    shown = "" if kind.startswith("value_error") or isinstance(got, dict) else f" (got {got!r})"
    return Problem(loc, f"{message}{shown}")


def _common_data_keys() -> list[str]:
    from hf_toolkit.recipe.schema import DataSection

    return list(DataSection.model_fields)
