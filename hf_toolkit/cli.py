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
        "  hftk generate --model runs/quickstart --prompt 'Once upon a time'\n\n"
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
            if str(error):  # other ranks of a stopped run leave the message to rank 0
                typer.echo(f"hftk: error: {error}", err=True)
            raise typer.Exit(getattr(error, "exit_code", 2)) from None  # 2; a run stopped by a signal: 128 + it

    return wrapper


def option_flags(command: str) -> dict[str, str]:
    """Parameter name -> long flag of one hftk command's options (``n`` of serve -> ``--max-n``).

    Read from the Typer options below, the one place a flag is named: the library names a setting
    by its keyword or field, and a command that builds library objects hands these over so the
    library's messages name the flag the user types.
    """
    import typer.main

    params = typer.main.get_command(app).commands[command].params
    return {param.name: max(param.opts, key=len) for param in params if param.opts[0].startswith("-")}


def _print_version(value: bool) -> None:
    if value:
        from hf_toolkit import __version__

        typer.echo(f"hftk {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print hftk's version and exit.")] = None,
) -> None:
    """Options before the command: ``hftk --version``."""


VerboseOption = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Also show the libraries' own notes, warnings and progress bars "
                 "(transformers, datasets, peft, torch), which hftk otherwise hides or shortens to one line."),
]

def examples(*commands: str) -> str:
    """A command's help epilog: its example command lines."""
    return "Examples:\n\n" + "\n\n".join(f"  {command}" for command in commands)


NewDirectoryArgument = Annotated[Path, typer.Argument(help="New directory to write.")]

RecipeArgument = Annotated[Path, typer.Argument(help="YAML recipe file (hftk sweep: one with a sweep section).")]

SetOption = Annotated[
    list[str],
    typer.Option("--set", help="Override a recipe key: dotted.key=value (value parsed as YAML). Repeatable."),
]

NprocOption = Annotated[
    int,
    typer.Option("--nproc", min=1, help="Train with N processes (DDP via torchrun: one per GPU, or CPU/gloo); "
                 "sweep: each trial."),
]


@app.command(
    epilog=examples(
        "hftk finetune recipes/quickstart.yaml",
        "hftk finetune recipes/quickstart.yaml --set training.max_steps=20 --set data.block_size=64",
        "hftk finetune recipes/gpt2-wikitext.yaml --set training.output_dir=runs/mine",
        "hftk finetune recipes/quickstart.yaml --nproc 2      # 2 DDP processes (GPUs, or CPU with gloo)",
    )
)
@user_errors
def finetune(
    recipe: RecipeArgument,
    set_: SetOption = [],
    check: Annotated[
        bool, typer.Option("--check", help="Only check the recipe (and the model config, training arguments), then exit.")
    ] = False,
    nproc: NprocOption = 1,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Do everything up to the first training step (checks, data, tokenizer, model, Trainer), then "
        "print the plan instead of training: resolved recipe, rows, three examples with their loss mask, token "
        "lengths, steps, parameters, a memory estimate. Nothing is trained or written.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="With --dry-run: print the plan as one JSON object.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in the output directory from its newest complete checkpoint (the same as "
        "training.resume_from_checkpoint: true); refused when the recipe changed in a way that matters.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the run the output directory holds (its checkpoints and files are deleted first).")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Fine-tune a model as a YAML recipe describes, and save it as a Hugging Face model directory.

    A run into an output directory that holds a run needs --resume or --overwrite. SIGTERM or
    Ctrl-C saves a checkpoint and stops (exit 143 / 130); --resume continues from it.
    """
    if json_output and not dry_run:
        raise HftkError("--json prints the plan of --dry-run; add --dry-run (training itself prints its metrics)")
    if dry_run and (check or nproc > 1):
        raise HftkError(f"--dry-run goes without {'--check' if check else '--nproc'}: it plans one process's run")
    if _OWN_PROCESS and not (check or dry_run):
        from hf_toolkit.training import allocator

        allocator.restart_keeping_freed_memory()  # before anything heavy: the process starts again
    from hf_toolkit.core import console
    from hf_toolkit.training import launch
    from hf_toolkit.training.preflight import check_run

    console.setup(verbose, data_bars=True)
    if dry_run:
        import json

        from hf_toolkit.training.plan import format_plan
        from hf_toolkit.training.train import finetune as run_finetune

        plan = run_finetune(recipe, set_, dry_run=True)
        typer.echo(json.dumps(plan.to_json(), ensure_ascii=False, indent=2) if json_output else format_plan(plan))
        return

    checked = None
    if check or (nproc > 1 and not launch.in_distributed_launch()):
        # report recipe mistakes once, before starting processes
        checked = check_run(recipe, set_, resume=resume, overwrite=overwrite)
    if check:
        for warning in checked.warnings:
            typer.echo(f"hftk: warning: {warning}", err=True)
        typer.echo(f"{recipe}: OK")
        return
    if checked is not None:
        raise typer.Exit(launch.relaunch(nproc, own_arguments(), output_dir=checked.args.output_dir, overwrite=overwrite))
    from hf_toolkit.training.train import finetune as run_finetune

    result = run_finetune(recipe, set_, resume=resume, overwrite=overwrite)
    if not launch.is_main_process():
        return
    typer.echo(f"Saved to {result.output_dir}")
    for key, value in result.metrics.items():
        if key.startswith(("eval_", "test_")) and not key.endswith(("_runtime", "_per_second")):
            typer.echo(f"  {key}: {value:.4f}")


@app.command(
    epilog=examples(
        "hftk sweep recipes/sweep-sentiment-minilm.yaml",
        "hftk sweep recipes/sweep-sentiment-minilm.yaml --dry-run      # the space and a sample trial's recipe",
        "hftk sweep recipes/sweep-sentiment-minilm.yaml --trials 20 --timeout 2h",
        "hftk sweep recipe.yaml --storage postgresql://user:pw@db/hftk  # one study, many machines",
    )
)
@user_errors
def sweep(
    recipe: RecipeArgument,
    set_: SetOption = [],
    trials: Annotated[Optional[int], typer.Option(min=1, help="Trials in the study (default: sweep.trials).")] = None,
    timeout: Annotated[Optional[str], typer.Option(help="Start no new trial after this long: 90s, 30m, 2h, 1h30m.")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Optuna RDB URL of the study (default: sqlite in the output "
                                                   "directory). Sweeps on one storage share the study.")] = None,
    nproc: NprocOption = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the space and a sample trial's resolved recipe; "
                                          "train and write nothing.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Search hyperparameters with Optuna: every trial an ordinary finetune run in OUTPUT/trial-NNN.

    OUTPUT (the recipe's training.output_dir) holds the study, trials.csv, trials.png, params.png
    and best (a link to the best trial's run). Run the same command again to continue a stopped sweep.
    """
    if _OWN_PROCESS and not dry_run:  # the trials train in this process, as finetune does
        from hf_toolkit.training import allocator

        allocator.restart_keeping_freed_memory()
    from hf_toolkit.core import console
    from hf_toolkit.training import sweep as sweep_lib

    console.setup(verbose, data_bars=True)
    planned = sweep_lib.prepare(recipe, set_, trials=trials, timeout=timeout, storage=storage, nproc=nproc, verbose=verbose)
    if dry_run:
        typer.echo(sweep_lib.dry_run(planned))
        return
    result = sweep_lib.run(planned, on_trial=lambda t: typer.echo(sweep_lib.trial_line(t, planned)))
    typer.echo(sweep_lib.summary(result, planned))


@app.command(
    epilog=examples(
        "hftk export runs/lora-gpt2 exported/gpt2-merged --merge",
        "hftk export runs/sentiment-minilm exported/sentiment-onnx --format onnx",
        "hftk export runs/sentiment-minilm exported/sentiment-int8 --format onnx --quantize int8",
        "hftk predict --model exported/sentiment-int8 --text 'a gorgeous, witty movie'",
    )
)
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (or any local model directory).")],
    output_dir: NewDirectoryArgument,
    merge: Annotated[bool, typer.Option("--merge", help="Fold a LoRA adapter into the base weights.")] = False,
    format: Annotated[str, typer.Option(
        "--format", help="'hf': a transformers model directory (with --merge); 'onnx': model.onnx for onnxruntime, "
        "checked against PyTorch (classification, QA, fill-mask, causal LM without KV cache).")] = "hf",
    quantize: Annotated[
        Optional[str], typer.Option(help="'int8' (with --format onnx): onnxruntime dynamic int8 quantization.")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Write a deployable model: LoRA merged into plain weights, and/or an ONNX graph (fp32 or int8).

    hftk predict, eval --model, serve and compare run an ONNX export with onnxruntime
    (pip install "hf_toolkit[onnx]").
    """
    from hf_toolkit.apply.export import export as run_export
    from hf_toolkit.core import console

    if format not in ("hf", "onnx"):
        raise HftkError(f"--format: '{format}' is not supported; use --format hf or --format onnx")
    if quantize not in (None, "int8"):
        raise HftkError(f"--quantize: '{quantize}' is not supported; use --quantize int8")
    console.setup(verbose)
    report = run_export(run_dir, output_dir, merge=merge, quantize=quantize, format=format)
    typer.echo(f"Wrote {report.output_dir}" + (" (LoRA merged; loads without peft)" if report.merged else ""))
    for key, value in report.numbers.items():
        typer.echo(f"  {key}: {value:.2e}" if key.startswith("max_abs") else f"  {key}: {value:.2f}")


@app.command(
    epilog=examples(
        "hftk prune runs/sentiment-minilm runs/minilm-3l --keep-layers 0,2,4",
        "hftk prune runs/sentiment-minilm runs/minilm-slim --ffn-keep 0.5",
        "hftk prune runs/quickstart runs/quickstart-2l --keep-layers 0,3 --ffn-keep 0.75",
    )
)
@user_errors
def prune(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (or any local model directory): BERT-family or GPT-2.")],
    output_dir: NewDirectoryArgument,
    keep_layers: Annotated[Optional[str], typer.Option(
        help="Transformer layers to keep, comma-separated and increasing, e.g. 0,2,4 (numbered from 0).")] = None,
    ffn_keep: Annotated[Optional[float], typer.Option(
        help="Share (0-1] of each feed-forward layer's neurons to keep: those with the largest "
             "||weights in|| x ||weights out||.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Make a smaller plain transformers model by dropping layers and feed-forward neurons.

    The output loads with the task's Auto class (no hftk needed) and holds the run's tokenizer,
    label names and recipe; train or distil it before use (hftk finetune with model.name_or_path
    pointing at it, and a distillation section naming the original as teacher).
    """
    from hf_toolkit.apply.prune import parse_layers
    from hf_toolkit.apply.prune import prune as run_prune
    from hf_toolkit.core import console

    layers = parse_layers(keep_layers) if keep_layers is not None else None
    console.setup(verbose)
    r = run_prune(run_dir, output_dir, keep_layers=layers, ffn_keep=ffn_keep)
    typer.echo(f"Wrote {r.output_dir}")
    typer.echo(f"  layers: {r.layers_before} -> {r.layers_after}; feed-forward width: {r.ffn_before} -> {r.ffn_after}")
    typer.echo(f"  parameters: {r.params_before:,} -> {r.params_after:,} ({r.params_after / r.params_before:.0%})")
    typer.echo(f"  weights on disk: {r.size_before_mb:.1f} MB -> {r.size_after_mb:.1f} MB")


@app.command(
    epilog=examples(
        "hftk compare runs/sentiment-minilm runs/distill-sentiment-minilm exported/student-int8 --data test.jsonl",
        "hftk compare runs/squad runs/squad-3l --data dev.jsonl --json",
        "hftk compare runs/sentiment-minilm runs/minilm-3l --data dev.jsonl --set data.columns.text=text",
        "hftk compare runs/a runs/b --data test.jsonl --plot tradeoff.png",
        "hftk compare runs/gpt2-teacher runs/gpt2-student exported/student-onnx --data valid.txt",
    )
)
@user_errors
def compare(
    models: Annotated[list[Path], typer.Argument(help="Run directories or hftk export outputs, of one task.")],
    data: Annotated[Path, typer.Option(help="Data file to measure on (the runs' columns), e.g. a held-out test set.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON array, one object per model.")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="Also draw the metric against throughput into this new PNG file.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override every model's recipe, e.g. --set data.columns.text=sentence.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Measure models side by side on this machine: parameters, size on disk, p50 latency at batch 1,
    throughput at batch 32 and the task's metric on --data, as hftk eval --model scores it.

    Metrics: accuracy (text-classification), SQuAD F1 (question-answering), ROUGE-L (summarization),
    BLEU (translation), masked-token accuracy (masked-lm): higher is better; perplexity (causal-lm):
    lower is better. Throughput counts rows per second, tokens for the language-model tasks.
    ONNX exports of every task but summarization and translation.
    """
    import json

    from hf_toolkit.apply import compare as compare_lib
    from hf_toolkit.core import console

    if plot is not None and plot.exists():
        raise HftkError(f"--plot: {plot} exists; give a new file name")
    console.setup(verbose, models=True)
    rows = compare_lib.compare(list(models), data, set_ or ())
    typer.echo(json.dumps(compare_lib.to_json(rows), indent=2) if json_output else compare_lib.format_table(rows))
    if plot is not None:
        typer.echo(f"hftk: plot written to {compare_lib.plot(rows, plot)}", err=True)


@app.command(
    epilog=examples(
        "hftk generate --model runs/quickstart --prompt 'Once upon a time'",
        "hftk generate --model gpt2 --prompt 'The quick brown fox jumps over the lazy' --max-length 50",
        "hftk generate --model runs/quickstart --prompts-file prompts.txt --do-sample --top-p 0.9 --seed 0 --json",
        "hftk generate --model runs/quickstart --prompt 'The little fox' --num-beams 4 --num-return-sequences 2",
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
    temperature: Annotated[Optional[float], typer.Option(help="Sampling temperature (> 0).")] = None,
    top_k: Annotated[Optional[int], typer.Option(min=0)] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Nucleus sampling: keep tokens up to this probability mass (0-1].")] = None,
    num_beams: Annotated[Optional[int], typer.Option(min=1)] = None,
    repetition_penalty: Annotated[Optional[float], typer.Option(help="> 1 discourages repeating tokens.")] = None,
    num_return_sequences: Annotated[Optional[int], typer.Option(min=1)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed for sampling.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per generate() call.")] = 8,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON array of {prompt, text}.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Generate text with a causal or seq2seq model.

    Without --json, each prompt is printed followed by its continuation (streamed as it is
    generated when there is one prompt, one sequence and no beams); summaries and translations are
    printed alone. --json prints one {prompt, text} object per sequence, with the text the
    continuation only.
    """
    import json

    from hf_toolkit.apply.generation import prepare
    from hf_toolkit.core import console

    console.setup(verbose)

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
    generator, request = prepare(model, prompts, options, seed=seed)
    streams = not json_output and request.streamable
    if streams and generator.continues_prompt:
        typer.echo(prompts[0], nl=False)  # the terminal shows the prompt, then its continuation as it comes
    results = generator.generate(request, batch_size=batch_size,
                                 on_text=(lambda text: typer.echo(text, nl=False)) if streams else None)
    if json_output:
        typer.echo(json.dumps([{"prompt": r.prompt, "text": r.text} for r in results], ensure_ascii=False, indent=2))
    elif streams:
        typer.echo("")
    else:
        for r in results:
            typer.echo(f"=== {r.prompt}\n{r.prompt + r.text if r.continues_prompt else r.text}\n")


@app.command(
    epilog=examples(
        "hftk chat runs/quickstart",
        "hftk chat runs/my-chat-model --do-sample --temperature 0.7 --max-new-tokens 200 --system 'You are terse.'",
    )
)
@user_errors
def chat(
    run_dir: Annotated[str, typer.Argument(help="A generative run directory (causal-lm, summarization, translation) or model.")],
    max_new_tokens: Annotated[Optional[int], typer.Option(min=1, help="Tokens per reply (default: the run's, else 50).")] = None,
    do_sample: Annotated[Optional[bool], typer.Option("--do-sample/--greedy", help="Sample instead of greedy decoding.")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="Sampling temperature (> 0).")] = None,
    top_k: Annotated[Optional[int], typer.Option(min=0)] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Nucleus sampling mass (0-1].")] = None,
    repetition_penalty: Annotated[Optional[float], typer.Option(help="> 1 discourages repeating tokens.")] = None,
    system: Annotated[Optional[str], typer.Option(help="A system message put before the conversation.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed for sampling.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Talk with a generative run in the terminal: each reply streams as it is generated.

    The history goes into every prompt: through the tokenizer's chat template when it has one,
    else as plain text (the turns joined by newlines, oldest turns dropped to fit the context).
    /reset clears the history, /exit (or Ctrl-D) quits. Classifier, QA and fill-mask runs answer
    through hftk predict instead.
    """
    from hf_toolkit.apply import chat as chat_lib
    from hf_toolkit.core import console

    console.setup(verbose)
    options = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k,
                   top_p=top_p, repetition_penalty=repetition_penalty)
    status = chat_lib.run(chat_lib.open_chat(run_dir, options, system=system, seed=seed))
    if status:
        raise typer.Exit(status)


@app.command("eval")
@user_errors
def eval_command(
    metric: Annotated[list[str], typer.Option(
        "--metric", "-m", help="Metric to compute; repeat for several: bleu, chrf, ter, rouge, "
        "squad, squad_v2, cmrc2018, accuracy, precision, recall, f1, perplexity. Model mode default: the task's (QA with Chinese answers: cmrc2018).")] = [],
    predictions: Annotated[Optional[Path], typer.Option(
        help="Predictions: text (one a line), JSONL (with --field), or SQuAD {id: answer} JSON.")] = None,
    references: Annotated[Optional[list[Path]], typer.Option(
        "--references", "-r", help="References, same layout as the predictions; repeat for "
        "several references per item. SQuAD: official JSON or JSONL with 'answers'.")] = None,
    field: Annotated[Optional[str], typer.Option(help="JSONL field holding the text or label.")] = None,
    reference_field: Annotated[Optional[str], typer.Option(
        help="JSONL field of the references when it differs from --field.")] = None,
    tokenize: Annotated[Optional[str], typer.Option(
        help="BLEU tokenizer (sacreBLEU): 13a, zh, intl, char, none, ja-mecab, ... "
        "(default: zh when predictions and references are Chinese, else 13a).")] = None,
    word_order: Annotated[Optional[int], typer.Option(
        "--chrf-word-order", help="chrF word n-gram order: 0 = chrF (default), 2 = chrF++.")] = None,
    chrf_plus_plus: Annotated[bool, typer.Option(
        "--chrf-plus-plus", help="chrF++ (same as --chrf-word-order 2).")] = False,
    use_stemmer: Annotated[bool, typer.Option(
        "--stemmer", help="ROUGE: Porter-stem English words (rouge-score use_stemmer).")] = False,
    split_sentences: Annotated[bool, typer.Option(
        "--split-sentences", help="ROUGE: put each sentence on its own line before rougeLsum.")] = False,
    average: Annotated[Optional[str], typer.Option(
        help="precision/recall/f1 averaging: binary (default), macro, micro, weighted.")] = None,
    ci: Annotated[bool, typer.Option(
        "--ci", help="Add bootstrap 95% confidence intervals (KEY_mean, KEY_ci95 = +/-).")] = False,
    compare: Annotated[Optional[Path], typer.Option(
        help="A baseline system's predictions: paired bootstrap test (KEY_baseline, KEY_p_value).")] = None,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print ONE JSON object mapping metric keys to numbers.")] = False,
    model: Annotated[Optional[Path], typer.Option(help="Model mode: a run directory written by hftk finetune.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Model mode: data file to predict and score (the run's columns).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Model mode: override the run's recipe, e.g. --set data.columns.text=review, or "
        "--set data.encoding=gbk (--data is read in the run's data.encoding).")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Score predictions against references with exact, offline metrics.

    Numbers are those of the reference implementations: sacreBLEU (bleu, chrf, ter; 0-100),
    rouge-score (rouge1/2/L/Lsum; mean F over pairs, 0-1; Chinese scored per character), the
    official SQuAD v1.1/v2.0 scripts (exact_match, f1; 0-100), scikit-learn (0-1).

    \b
    Examples:
      hftk eval -m bleu -m chrf --predictions hyp.de --references ref.de
      hftk eval -m bleu --tokenize zh --predictions hyp.zh -r ref1.zh -r ref2.zh --json
      hftk eval -m rouge --stemmer --predictions preds.jsonl --references test.jsonl \\
                --field prediction --reference-field summary
      hftk eval -m squad --predictions predictions.json --references dev-v1.1.json
      hftk eval -m f1 -m accuracy --average macro --predictions labels.txt --references gold.txt
      hftk eval -m bleu --ci --compare baseline.de --predictions hyp.de --references ref.de
      hftk eval --model runs/sentiment-minilm --data test.jsonl -m accuracy --json
      hftk eval --model runs/xsum --data test.jsonl --set data.columns.source=document
      hftk eval --model runs/sentiment-minilm --data reviews-gbk.csv --set data.encoding=gbk
    """
    import json

    from hf_toolkit.apply import evaluation
    from hf_toolkit.core import console

    console.setup(verbose, models=model is not None)
    result = evaluation.run_eval(
        metric, predictions=predictions, references=references or (), field_name=field, reference_field=reference_field,
        ci=ci, compare=compare, model=model, data=data, overrides=set_ or (), word_order=word_order,
        chrf_plus_plus=chrf_plus_plus, tokenize=tokenize, use_stemmer=use_stemmer or None,
        split_sentences=split_sentences or None, average=average, flags=option_flags("eval"),
    )
    for warning in result.warnings:
        typer.echo(f"hftk: warning: {warning}", err=True)
    if result.predictions_file is not None:
        typer.echo(f"hftk: predictions written to {result.predictions_file}", err=True)
    typer.echo(json.dumps(result.scores) if json_output else evaluation.format_table(result.scores))


@app.command(
    epilog=examples(
        "hftk predict --model runs/sentiment-minilm --text 'a gorgeous, witty movie' --text 'a tedious mess'",
        "hftk predict --model runs/nli --text 'A man sleeps.' --text-pair 'A person rests.' --json",
        "hftk predict --model runs/squad --question 'Where is Normandy?' --context 'Normandy is a region in France.'",
        "hftk predict --model runs/mlm --text 'Paris is the [MASK] of France.' --top-k 3",
        "hftk predict --model runs/nli --input text='A man sleeps.' --input text_pair='A person rests.'",
        "hftk predict --model runs/sentiment-minilm --file reviews.jsonl --json > predictions.json",
        "hftk predict --model runs/sentiment-minilm --file reviews-gbk.csv --encoding gbk",
    )
)
@user_errors
def predict(
    model: Annotated[str, typer.Option(help="Run directory, local model directory or hub id (classifier, QA or fill-mask).")],
    text: Annotated[list[str], typer.Option(help="Text to classify, or with the mask token to fill. Repeatable.")] = [],
    text_pair: Annotated[list[str], typer.Option(help="Second text of a pair, one per --text. Repeatable.")] = [],
    question: Annotated[list[str], typer.Option(help="Question for a QA model. Repeatable.")] = [],
    context: Annotated[list[str], typer.Option(help="Context for a QA model: one per --question, or one for all.")] = [],
    assigned: Annotated[list[str], typer.Option(
        "--input", metavar="ROLE=VALUE",
        help="An input of any role the model takes, named (the options above are shorthands for the common roles; a "
             "task's own roles have none), e.g. --input passage='...'. Repeatable.")] = [],
    file: Annotated[Optional[Path], typer.Option(help="json/jsonl/csv/tsv/parquet/txt file, one input a row (text[, text_pair] or question, context).")] = None,
    encoding: Annotated[Optional[str], typer.Option(
        help="Text encoding of --file (e.g. gbk, latin-1); default: the run's data.encoding, else utf-8.")] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Fill-mask: candidates per mask token.")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Inputs per forward pass.")] = 16,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON array, one object per input.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Apply a classifier (label + probability), extractive QA model (answer span + score) or fill-mask model (top-k fillers)."""
    import json

    from hf_toolkit.apply.prediction import Inputs
    from hf_toolkit.apply.prediction import predict as run_predict
    from hf_toolkit.core import console

    console.setup(verbose)
    inputs = Inputs({"text": text, "text_pair": text_pair, "question": question, "context": context}, file, encoding,
                    flags=option_flags("predict"), assigned=assigned)
    task, records = run_predict(model, inputs, top_k=top_k, batch_size=batch_size)
    if json_output:
        typer.echo(json.dumps(records, ensure_ascii=False, indent=2))
    else:
        for record in records:
            typer.echo(task.format_record(record))


@app.command(
    epilog=examples(
        "hftk serve runs/quickstart                      # http://127.0.0.1:8000/ : playground; POST /v1/completions",
        "hftk serve runs/sentiment-minilm --port 8080    # POST /v1/classify",
        "hftk serve runs/quickstart --max-tokens-limit 256 --max-n 4",
        "hftk serve runs/quickstart --max-batch-size 1   # no batching: one request at a time",
    )
)
@user_errors
def serve(
    model: Annotated[str, typer.Argument(help="Run directory, local model directory or hub id.")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens-limit", min=1, help="Largest max_tokens a request may ask for.")] = 512,
    max_prompt_tokens: Annotated[int, typer.Option(min=1, help="Longest prompt, in tokens.")] = 2048,
    n: Annotated[int, typer.Option("--max-n", min=1, help="Largest n (sequences per prompt).")] = 8,
    max_batch: Annotated[int, typer.Option(min=1, help="Most prompts or inputs in one request.")] = 64,
    top_k: Annotated[int, typer.Option("--max-top-k", min=1, help="Largest fill-mask top_k.")] = 50,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Largest request body, in bytes.")] = 1_000_000,
    max_queue: Annotated[int, typer.Option(min=1, help="Requests that may wait for the model; more get 503.")] = 256,
    max_batch_size: Annotated[int, typer.Option(
        min=1, help="Most sequences (prompts x n, or task inputs) run as one batch: waiting requests with the same "
                    "decoding settings (greedy, or sampling without a seed; a stream runs alone) share one model call. "
                    "1: one request at a time.")] = 16,
    max_running: Annotated[int, typer.Option(
        min=1, help="Most model calls (batches or streams) in progress at once; they take turns token by token, so a "
                    "long request does not hold up the others.")] = 4,
    request_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds a request may take from arrival to its last token; past it, it ends with an error "
                      "(504, or an error event in a stream).")] = 120.0,
    verbose: VerboseOption = False,
) -> None:
    """Serve a run over HTTP: OpenAI-compatible completions for generative runs, /v1/classify,
    /v1/answer or /v1/fill-mask for the other heads, and a playground page at /."""
    from hf_toolkit.core import console
    from hf_toolkit.serving.server import serve as run_serve

    console.setup(verbose)
    limits = serve_limits(max_body_bytes=max_body_bytes, max_prompt_tokens=max_prompt_tokens, max_tokens=max_tokens,
                          n=n, max_batch=max_batch, top_k=top_k, max_queue=max_queue, max_batch_size=max_batch_size,
                          max_running=max_running, request_timeout=request_timeout)
    run_serve(model, host=host, port=port, limits=limits)


def serve_limits(**bounds):
    """:class:`~hf_toolkit.serving.limits.Limits` from hftk serve's options (each named as the bound it sets),
    whose refusals name the option that sets each bound (``hftk serve --max-n``)."""
    from hf_toolkit.serving.limits import Limits

    flags = option_flags("serve")
    return Limits(**bounds, set_by={bound: f"hftk serve {flags[bound]}" for bound in Limits.bounds()})


_OWN_PROCESS = False
"""True when this process was started as hftk (``hftk`` or ``python -m hf_toolkit``), not a program or
test calling :data:`app`: only then may ``finetune`` re-execute the process (:mod:`hf_toolkit.training.allocator`)."""


def own_arguments() -> list[str]:
    """This hftk process's arguments, as ``--nproc`` starts its ranks with them: the very command,
    ``--nproc`` included (each rank runs under torchrun, so it trains instead of launching again), so
    every option reaches the ranks as the user typed it."""
    if not _OWN_PROCESS:
        raise HftkError("--nproc starts the command again in N processes, which it can do only when run as "
                        "hftk (or python -m hf_toolkit), not called from Python: run it as a command")
    return sys.argv[1:]


def main() -> None:
    """Console-script entry point (also ``python -m hf_toolkit``)."""
    global _OWN_PROCESS
    _OWN_PROCESS = True
    app()


if __name__ == "__main__":
    main()
