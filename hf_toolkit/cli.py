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


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="hftk: %(message)s")


SetOption = Annotated[
    list[str],
    typer.Option("--set", help="Override a recipe key: dotted.key=value (value parsed as YAML). Repeatable."),
]


@app.command(
    epilog=(
        "Examples:\n\n"
        "  hftk finetune recipes/quickstart.yaml\n\n"
        "  hftk finetune recipes/quickstart.yaml --set training.max_steps=20 --set data.block_size=64\n\n"
        "  hftk finetune recipes/gpt2-wikitext.yaml --set training.output_dir=runs/mine"
    )
)
@user_errors
def finetune(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe file.")],
    set_: SetOption = [],
    check: Annotated[bool, typer.Option("--check", help="Only validate the recipe, then exit.")] = False,
) -> None:
    """Fine-tune a model as a YAML recipe describes, and save it as a Hugging Face model directory."""
    if check:
        from hf_toolkit.recipe import load_recipe

        load_recipe(recipe, set_)
        typer.echo(f"{recipe}: OK")
        return
    from hf_toolkit.train import finetune as run_finetune

    _setup_logging()
    result = run_finetune(recipe, set_)
    typer.echo(f"Saved to {result.output_dir}")
    for key, value in result.metrics.items():
        if key.startswith(("eval_", "test_")) and not key.endswith(("_runtime", "_per_second")):
            typer.echo(f"  {key}: {value:.4f}")


@app.command(
    epilog=(
        "Examples:\n\n"
        "  hftk generate --model runs/quickstart --prompt 'ROMEO:'\n\n"
        "  hftk generate --model gpt2 --prompt 'The quick brown fox jumps over the lazy' --max-length 50\n\n"
        "  hftk generate --model runs/quickstart --prompts-file prompts.txt --do-sample --top-p 0.9 --seed 0 --json\n\n"
        "  hftk generate --model runs/quickstart --prompt 'To be' --num-beams 4 --num-return-sequences 2"
    )
)
@user_errors
def generate(
    model: Annotated[str, typer.Option(help="Run directory, local model directory or hub id.")],
    prompt: Annotated[list[str], typer.Option(help="Prompt text. Repeatable.")] = [],
    prompts_file: Annotated[Optional[Path], typer.Option(help="File with one prompt per line.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(min=1, help="New tokens to generate (default 50).")] = None,
    max_length: Annotated[Optional[int], typer.Option(min=1, help="Total length, prompt included.")] = None,
    do_sample: Annotated[Optional[bool], typer.Option("--do-sample/--greedy", help="Sample instead of greedy/beam.")] = None,
    temperature: Annotated[Optional[float], typer.Option(min=0.0)] = None,
    top_k: Annotated[Optional[int], typer.Option(min=0)] = None,
    top_p: Annotated[Optional[float], typer.Option(min=0.0, max=1.0)] = None,
    num_beams: Annotated[Optional[int], typer.Option(min=1)] = None,
    repetition_penalty: Annotated[Optional[float], typer.Option(min=0.0)] = None,
    num_return_sequences: Annotated[Optional[int], typer.Option(min=1)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed for sampling.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per generate() call.")] = 8,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON array of {prompt, text}.")] = False,
) -> None:
    """Generate text with a causal or seq2seq model; the output is the continuation only."""
    import json

    from hf_toolkit.errors import HftkError
    from hf_toolkit.generation import generate as run_generate

    prompts = list(prompt)
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise HftkError(f"--prompts-file: file not found: {prompts_file}")
        prompts += [line for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    options = dict(
        max_new_tokens=max_new_tokens, max_length=max_length, do_sample=do_sample, temperature=temperature,
        top_k=top_k, top_p=top_p, num_beams=num_beams, repetition_penalty=repetition_penalty,
        num_return_sequences=num_return_sequences,
    )
    streamed: list[str] = []

    def stream(text: str) -> None:
        if not streamed:
            typer.echo(prompts[0], nl=False)
        streamed.append(text)
        typer.echo(text, nl=False)

    results = run_generate(
        model, prompts, options, seed=seed, batch_size=batch_size, on_text=None if json_output else stream
    )
    if json_output:
        typer.echo(json.dumps([{"prompt": r.prompt, "text": r.text} for r in results], ensure_ascii=False, indent=2))
    elif not streamed:
        for r in results:
            typer.echo(f"=== {r.prompt}\n{r.prompt}{r.text}\n")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
