"""The run directory: what ``hftk finetune`` writes, and the one way every command loads it back.

A run directory is a plain Hugging Face model directory (weights, config, tokenizer,
generation_config.json) that loads with ``AutoModelFor*.from_pretrained(dir)`` without hftk, plus:

- ``hftk_recipe.yaml`` (:data:`RECIPE_FILE`): the resolved recipe, every default filled in, which
  generate / predict / eval read back (validated like any recipe) to know the task, columns and
  options;
- ``metrics.json``: final train / validation / test metrics; ``README.md``: the model card (task,
  base model, data files with sha256 and rows per split, the resolved recipe, final metrics,
  library versions, the command line and the hardware, from :mod:`hf_toolkit.core.provenance`);
- ``loss_curve.png`` (:data:`LOSS_PLOT`): train and eval loss by step (and eval metrics), linked
  from the card (:mod:`hf_toolkit.training.plot`);
- ``trainer_state.json``: the Trainer's log history and step count;
- LoRA runs: the adapter instead of full weights, with the fine-tuned model's config and
  generation config in ``model_config/`` (a config.json beside the adapter would make
  transformers look for full weights);
- encoder-decoder pairs with two tokenizers: the decoder's in ``decoder_tokenizer/``;
- ``eval/``: what ``hftk eval --model`` writes;
- ``hftk_manifest.json`` (:data:`MANIFEST_FILE`): the names of what the run wrote at the top of
  the directory, so ``--overwrite`` deletes exactly those (:mod:`hf_toolkit.training.runlock`);
  :data:`RUN_WRITES` names what a run writes for directories made before the manifest existed.

:func:`open_run` accepts a run directory, any local model directory or a hub id (no recipe);
:func:`load_model` loads the model (in eval mode, on the GPU when there is one) and tokenizer
for every command; :func:`architecture` reads a config's task and Auto class from the tasks'
``architectures`` (:data:`hf_toolkit.tasks.TASKS`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hf_toolkit.core import modeling, onnx_model
from hf_toolkit.errors import HftkError
from hf_toolkit.recipe import checks
from hf_toolkit.recipe.paths import looks_local
from hf_toolkit.recipe.problems import Locator
from hf_toolkit.recipe.yamlio import parse_yaml
from hf_toolkit.tasks import TASKS

if TYPE_CHECKING:
    from hf_toolkit.core.provenance import Story
    from hf_toolkit.recipe.schema import Recipe

RECIPE_FILE = "hftk_recipe.yaml"
METRICS_FILE = "metrics.json"
MODEL_CARD = "README.md"
LOSS_PLOT = "loss_curve.png"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_MODEL_CONFIG_DIR = "model_config"
DECODER_TOKENIZER_DIR = "decoder_tokenizer"
EVAL_DIR = "eval"
RUN_FILES = (RECIPE_FILE, METRICS_FILE, MODEL_CARD)
TRAINER_STATE = "trainer_state.json"  # the Trainer writes it into the run directory and each checkpoint
MANIFEST_FILE = "hftk_manifest.json"
# Top-level names (fnmatch patterns) a run writes: hftk's files, the Trainer's (save_model,
# save_state, checkpoints, TensorBoard's runs/), save_pretrained's (config, weights, tokenizer
# files of every kind transformers saves, generation config), a LoRA adapter's, hftk eval's.
RUN_WRITES = (
    *RUN_FILES, LOSS_PLOT, TRAINER_STATE, MANIFEST_FILE, EVAL_DIR, ADAPTER_MODEL_CONFIG_DIR, DECODER_TOKENIZER_DIR,
    "checkpoint-*", "runs", "training_args.bin", "config.json", "generation_config.json",
    "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
    "pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json",
    ADAPTER_CONFIG, "adapter_model.safetensors", "adapter_model.bin",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt",
    "merges.txt", "spiece.model", "sentencepiece.bpe.model", "source.spm", "target.spm", "chat_template.jinja",
    "chat_template.json", ".*.tmp",
)


@dataclass
class Run:
    """A trained model to apply: a run directory, a local model directory or a hub id."""

    reference: str
    location: str  # the resolved local path, or the hub id
    recipe: "Recipe | None"  # None for a model not written by hftk finetune

    @property
    def is_local(self) -> bool:
        return Path(self.location).is_dir()

    @property
    def adapter_base(self) -> str | None:
        """The base model a LoRA run adapts, or None when this is not an adapter directory."""
        adapter = Path(self.location) / ADAPTER_CONFIG
        if not adapter.is_file():
            return None
        return json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]

    def path(self, name: str) -> Path:
        """A file or folder of the run directory."""
        return Path(self.location) / name


def open_run(reference: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Run:
    """The run `reference` names, with its recipe read back (``overrides`` as ``--set``); fails fast
    on a missing directory or an unreachable hub id, before anything heavy is imported."""
    location, _ = modeling.locate(str(reference), "model")
    recipe = read_recipe(Path(location) / RECIPE_FILE, overrides) if looks_local(str(reference)) else None
    if recipe is None and overrides:
        raise HftkError(f"--set: {reference} has no {RECIPE_FILE} to override; --set applies to runs written by hftk finetune")
    return Run(str(reference), location, recipe)


def read_recipe(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> "Recipe | None":
    """A saved recipe, validated like any other (pass one: its data files and local model paths
    were relative to wherever training ran and need not exist here); None when there is none."""
    if not path.is_file():
        return None
    data, lines = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    return checks.validate_recipe(data, Locator(str(path), lines), overrides)


def load_config(run: Run) -> Any:
    """The model config: the run's own, or for a LoRA run the fine-tuned model's (label names, heads)."""
    from transformers import AutoConfig

    base = run.adapter_base
    if base is None:
        return modeling.from_pretrained(AutoConfig, run.location, "model config")
    saved = run.path(ADAPTER_MODEL_CONFIG_DIR)
    return AutoConfig.from_pretrained(saved) if saved.is_dir() else modeling.from_pretrained(AutoConfig, base, "base model config")


def architecture(config: Any) -> tuple[str | None, str]:
    """(hftk task, Auto class name) for a config's architecture, from the tasks whose ``architectures``
    end its name: the task None when several share the head (summarization, translation);
    ('', 'AutoModel') when no task has it."""
    for name in config.architectures or []:
        tasks = [task for task in TASKS.values() if any(name.endswith(suffix) for suffix in task.architectures)]
        if tasks:
            return (tasks[0].name if len(tasks) == 1 else None), tasks[0].auto_class
    return "", "AutoModel"


def heads(predicting: bool = False) -> str:
    """The architectures hftk knows (those of tasks that predict), for messages: '*ForSequenceClassification, ...'."""
    known = dict.fromkeys(f"*{suffix}" for task in TASKS.values() if task.predicts or not predicting
                          for suffix in task.architectures)
    return ", ".join(known)


def task_name(run: Run, config: Any) -> str | None:
    """The run's task: its recipe's, else what its architecture serves (None: generative, or unknown)."""
    return run.recipe.task if run.recipe is not None else architecture(config)[0] or None


def load_model(run: Run, config: Any | None = None) -> tuple[Any, Any]:
    """(model in eval mode on the GPU if any, tokenizer with a pad token): for every command.

    The Auto class comes from the config's architecture (:func:`architecture`); a LoRA run loads
    its base model with the fine-tuned config and generation config, then the adapter (a PeftModel);
    a directory ``hftk export --format onnx`` wrote runs with onnxruntime (:mod:`hf_toolkit.core.onnx_model`).
    """
    import torch
    import transformers

    config = config if config is not None else load_config(run)
    if run.is_local and onnx_model.is_exported(run.location):  # hftk export --format onnx: onnxruntime
        return onnx_model.OnnxModel(run.location, config), modeling.load_tokenizer_from(run.location)
    auto_class = getattr(transformers, architecture(config)[1])
    base = run.adapter_base
    if base is None:
        model = modeling.from_pretrained(auto_class, run.location, "model")
    else:
        from peft import PeftModel
        from transformers import GenerationConfig

        base_model = modeling.from_pretrained(auto_class, base, "base model", config=config)
        saved = run.path(ADAPTER_MODEL_CONFIG_DIR)
        if (saved / "generation_config.json").is_file():
            base_model.generation_config = GenerationConfig.from_pretrained(saved)
        model = PeftModel.from_pretrained(base_model, run.location)
    tokenizer = modeling.load_tokenizer_from(run.location)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return model, tokenizer


def output_tokenizer(run: Run, tokenizer: Any) -> Any:
    """The tokenizer that decodes outputs: an encoder-decoder pair's own decoder tokenizer when saved."""
    saved = run.path(DECODER_TOKENIZER_DIR)
    return modeling.load_tokenizer_from(str(saved)) if run.is_local and saved.is_dir() else tokenizer


# --------------------------------------------------------------------------------------------
# Writing


def write_atomically(path: str | Path, text: str) -> None:
    """Write a text file whole or not at all: a temporary file in the same directory, then os.replace."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def save_adapter_model_config(model: Any, output_dir: str | Path) -> None:
    """Beside a saved LoRA adapter: the fine-tuned model's config and generation config."""
    base = modeling.base_model(model)
    # save_pretrained of a model records its class; the config alone keeps the base checkpoint's.
    base.config.architectures = [type(base).__name__]
    base.config.save_pretrained(Path(output_dir) / ADAPTER_MODEL_CONFIG_DIR)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(Path(output_dir) / ADAPTER_MODEL_CONFIG_DIR)


def write_run_files(output_dir: str | Path, recipe: "Recipe", metrics: dict[str, float], auto_class_name: str,
                    story: "Story | None" = None, *, has_plot: bool = False, notes: Sequence[str] = ()) -> None:
    """hftk's own files: the resolved recipe, the metrics and the model card (linking :data:`LOSS_PLOT`
    when `has_plot`; with `notes` on how it was trained), each written whole or not at all (a
    temporary file, then os.replace)."""
    out = Path(output_dir)
    write_atomically(out / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    write_atomically(out / MODEL_CARD, model_card(recipe, metrics, auto_class_name, story, has_plot=has_plot, notes=notes))
    write_atomically(out / RECIPE_FILE, recipe_yaml(recipe))  # last: a run directory with it is a finished run


def recipe_yaml(recipe: "Recipe") -> str:
    """The resolved recipe (every default filled in) as YAML."""
    return yaml.safe_dump(recipe.dump(), sort_keys=False, allow_unicode=True)


def model_card(recipe: "Recipe", metrics: dict[str, float], auto_class_name: str, story: "Story | None" = None,
               *, has_plot: bool = False, notes: Sequence[str] = ()) -> str:
    """The run directory's README.md: what was trained on what, how, with what result, where and by which command."""
    sides = [recipe.model.encoder, recipe.model.decoder] if recipe.model.is_pair else [recipe.model]
    base = " + ".join(_base_name(side) for side in sides) + (" (EncoderDecoderModel)" if recipe.model.is_pair else "")
    if all(side.name_or_path for side in sides):
        title = f"{recipe.task} fine-tune of {base}"
    else:
        title = f"{recipe.task} model: {base}"
    if not any(side.name_or_path for side in sides):
        base = f"none: {base}, its weights initialized at random from the recipe's config"
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in metrics.items() if isinstance(v, (int, float)))
    parts = [
        f"# {title}\n\n"
        f"Trained with hf_toolkit (`hftk finetune`); the resolved recipe is `{RECIPE_FILE}`.\n\n"
        f"- **Task:** {recipe.task}\n- **Base model:** {base}\n{_teacher_line(recipe)}"
        + "".join(f"- **Training:** {note}\n" for note in notes) + "\n"
        f"```python\nfrom transformers import {auto_class_name}, AutoTokenizer\n"
        f"model = {auto_class_name}.from_pretrained(\"<this dir>\")\n```\n",
    ]
    if story is not None:
        data = "\n".join(f"| {d.split} | `{d.source}` | {d.rows if d.rows is not None else '?'} | "
                         f"{f'`{d.sha256}`' if d.sha256 else '(not a local file)'} |" for d in story.data)
        parts.append(f"## Data\n\n| split | source | rows | sha256 |\n|---|---|---|---|\n{data}\n")
    parts.append(f"## Metrics\n\n| metric | value |\n|---|---|\n{rows}\n")
    if has_plot:
        parts.append(f"## Loss curve\n\n![train and eval loss by step]({LOSS_PLOT})\n")
    parts.append(f"## Recipe (resolved)\n\n```yaml\n{recipe_yaml(recipe)}```\n")
    if story is not None:
        libraries = "\n".join(f"| {name} | {version} |" for name, version in story.versions.items())
        hw = story.hardware
        gpus = ", ".join(hw.get("gpus") or []) or "none"
        parts.append(
            f"## How it was made\n\n"
            f"Command line (in `{story.working_dir}`):\n\n```\n{story.command}\n```\n\n"
            f"Hardware: CPU {hw.get('cpu')} ({hw.get('cpu_cores')} cores); GPU: {gpus}; "
            f"training processes: {hw.get('processes')}\n\n"
            f"| library | version |\n|---|---|\n{libraries}\n"
        )
    return "\n".join(parts)


def _teacher_line(recipe: "Recipe") -> str:
    """The card's line naming the teacher a distilled student learned from ('' without one)."""
    d = recipe.distillation
    if d is None:
        return ""
    return (f"- **Distilled from:** `{d.teacher}` (teacher; soft loss weight alpha {d.alpha:g}, "
            f"temperature {d.temperature:g}; the teacher is not part of this model)\n")


def _base_name(section: Any) -> str:
    """'gpt2' (a checkpoint's weights), or 'the gpt2 architecture trained from scratch' (a model built
    from a config: the architecture, not the weights, of any checkpoint of that name)."""
    return section.name_or_path or f"the {section.config['model_type']} architecture trained from scratch"


def exported_card(source: str | Path, run_card: str | None, *, merged_adapter: dict[str, Any] | None,
                  onnx: bool, quantized: bool, auto_class_name: str) -> str:
    """The README.md of ``hftk export``: what was done to which run (the LoRA weights merged into the
    base model, an ONNX graph, int8), then the run's own card, its headings one level down."""
    done = []
    if merged_adapter is not None:
        modules = ", ".join(merged_adapter.get("target_modules") or []) or "?"
        done.append(f"the LoRA adapter of the run `{source}` (rank {merged_adapter.get('r')}, alpha "
                    f"{merged_adapter.get('lora_alpha')}, on {modules}) merged into the weights of its base model "
                    f"`{merged_adapter.get('base_model_name_or_path')}`: plain weights that load without peft and give "
                    "the adapter model's outputs")
    if onnx:
        done.append(f"the model as an ONNX graph, `model.onnx`{', its weights quantized to int8 by onnxruntime' if quantized else ''} "
                    "(`hftk predict`, `eval --model` and `serve` run it with onnxruntime)")
    what = [name for name, done_here in (("LoRA weights merged", merged_adapter is not None),
                                          ("ONNX int8" if quantized else "ONNX", onnx)) if done_here]
    text = (f"# Exported from `{Path(source).name}`: {', '.join(what)}\n\n"
            f"Written by `hftk export` from the run directory `{source}`:\n\n" + "".join(f"- {d}\n" for d in done) +
            ("" if onnx else f"\n```python\nfrom transformers import {auto_class_name}, AutoTokenizer\n"
                             f"model = {auto_class_name}.from_pretrained(\"<this dir>\")\n```\n"))
    if run_card:
        demoted = "\n".join(f"#{line}" if line.startswith("#") else line for line in run_card.splitlines())
        text += f"\n## The run it was exported from\n\nIts card, as written when it was trained:\n\n{demoted}\n"
    return text
