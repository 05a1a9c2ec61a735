"""Checks shared by the encoder tasks (masked-lm, text-classification, question-answering)."""

from __future__ import annotations

from hf_toolkit.errors import RecipeError
from hf_toolkit.recipe import Recipe


def generation_problems(recipe: Recipe) -> list[str]:
    """The recipe's `generation` settings, which a task that does not generate text would ignore."""
    given = recipe.generation.model_dump(exclude_none=True)
    if not given:
        return []
    keys = ", ".join(f"generation.{key}" for key in given)
    return [f"{keys}: task {recipe.task} does not generate text, so decoding settings do not apply; remove the generation section"]


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise RecipeError(problems)
