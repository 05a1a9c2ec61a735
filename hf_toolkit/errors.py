"""User-fixable errors, and the problem records recipe checks produce.

Everything a user can fix (a bad recipe key, a missing file or column, an impossible option)
raises a subclass of :class:`HftkError`. The CLI prints ``str(error)`` on stderr and exits with
status 2, with no traceback; any other exception is a bug and keeps its traceback (exit 1).

Recipe checks describe each mistake as a :class:`Problem`: the dotted key path it concerns and
a message. :mod:`hf_toolkit.recipe.problems` locates the key path in the YAML (file and line, or
the ``--set`` that wrote it); a :class:`RecipeError` carries every problem of a recipe at once.
Messages say what is wrong, where (file, line, key) and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class HftkError(Exception):
    """A mistake the user can fix. ``str()`` is the whole message shown to them."""


@dataclass(frozen=True)
class Problem:
    """One recipe mistake: the key path it concerns (``("data", "max_length")``; ``()`` for the
    recipe as a whole), what is wrong and how to fix it, and once located, where it was written."""

    key: tuple[str, ...]
    message: str
    where: str | None = None  # "recipe.yaml:8" or "--set data.max_length=4"

    def __str__(self) -> str:
        parts = [self.where] if self.where else []
        parts += [".".join(self.key)] if self.key else []
        return ": ".join(parts + [self.message])


class RecipeError(HftkError):
    """One or more problems in a recipe, all reported at once.

    ``records`` holds the :class:`Problem` records; ``problems`` their text, one line each.
    A plain string counts as an already-located problem about the whole recipe.
    """

    def __init__(self, problems: Sequence[Problem | str], source: str = "recipe"):
        self.records = [p if isinstance(p, Problem) else Problem((), p) for p in problems]
        self.problems = [str(p) for p in self.records]
        self.source = source
        count = f"{len(self.problems)} problem" + ("s" if len(self.problems) != 1 else "")
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {count}:\n{body}")


class DataError(HftkError):
    """A data file, split or column that cannot be used as the recipe asks."""


class ModelLoadError(HftkError):
    """A model or tokenizer that cannot be found or reached (offline hub, wrong path)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
