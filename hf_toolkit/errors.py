"""User-fixable errors.

Everything a user can fix (a bad recipe key, a missing file or column, an impossible option)
raises a subclass of :class:`HftkError`. The CLI prints ``str(error)`` on stderr and exits with
status 2, with no traceback; any other exception is a bug and keeps its traceback (exit 1).

Messages say what is wrong, where (file, line, key) and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HftkError(Exception):
    """A mistake the user can fix. ``str()`` is the whole message shown to them."""


class RecipeError(HftkError):
    """One or more problems in a recipe, all reported at once."""

    def __init__(self, problems: list[str], source: str = "recipe"):
        self.problems = list(problems)
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
