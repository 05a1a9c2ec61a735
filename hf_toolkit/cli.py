"""The ``hftk`` command line: a thin map from commands to library functions.

No ML code lives here and nothing heavy is imported at module level (torch and transformers
take seconds to import), so ``hftk --help`` is instant. Every command turns a user mistake
(:class:`hf_toolkit.errors.HftkError`) into one message on stderr and exit status 2; any other
exception is a bug and keeps its traceback (exit status 1).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from hf_toolkit.errors import HftkError

app = typer.Typer(
    name="hftk",
    help=(
        "Fine-tune and apply pretrained Hugging Face models from one YAML recipe.\n\n"
        "Examples:\n\n"
        "  hftk finetune recipes/quickstart.yaml\n\n"
        "  hftk finetune recipes/quickstart.yaml --set training.learning_rate=3e-4\n\n"
        "  hftk generate --model runs/quickstart --prompt 'ROMEO:'\n\n"
        "  hftk eval --metric bleu --predictions hyp.txt --references ref.txt"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def user_errors(command):
    """Report HftkError as one clean message and exit status 2 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except HftkError as error:
            typer.echo(f"hftk: error: {error}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
