"""The Trainer's ``checkpoint-N`` directories in an output directory: which are complete, which
one ``training.resume_from_checkpoint`` (``--resume``) resumes from, and whether the recipe still
describes the run a checkpoint belongs to.

The Trainer's own choice (the highest number) may be a save that a kill cut short: it has no
``trainer_state.json``, which the Trainer writes last, and resuming from it crashes.

Every checkpoint also holds the recipe it was made with (``hftk_recipe.yaml``, the resolved
recipe), the sha256 of its local data files (``hftk_data.json``) and the run's progress over
its parts (``hftk_progress.json``, :mod:`hf_toolkit.training.resumption`), written by
:class:`hf_toolkit.training.callbacks.SaveRecipe` before the Trainer's own files (so a complete checkpoint has them).
:func:`resume_changes` compares them with the recipe now: a change that alters the run (task,
model, data or its content, batch size, lengths, seed, optimizer...) refuses the resume with the
keys listed; a harmless one (:data:`HARMLESS`: logging, evaluation and saving frequency, more
epochs or steps, decoding settings) is allowed and reported. A checkpoint that already reached the
steps or epochs the recipe asks for (a finished run's last one) has nothing to resume: refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_toolkit.core import provenance
from hf_toolkit.core.rundir import RECIPE_FILE, TRAINER_STATE, write_atomically
from hf_toolkit.errors import Problem

if TYPE_CHECKING:
    from hf_toolkit.recipe.schema import Recipe

PREFIX = "checkpoint-"
CHECKPOINT_RECIPE = "hftk_recipe.yaml"  # the same name as the run directory's resolved recipe
CHECKPOINT_DATA = "hftk_data.json"
# Recipe keys (dotted; a trailing '.' covers a whole section) whose change leaves a resumed run the
# same run: how often it logs, evaluates and saves, how long it trains, what it reports, decoding.
HARMLESS = (
    "training.output_dir", "training.resume_from_checkpoint", "training.num_train_epochs", "training.max_steps",
    "training.logging_steps", "training.logging_strategy", "training.logging_first_step", "training.logging_dir",
    "training.eval_strategy", "training.eval_steps", "training.eval_delay", "training.eval_on_start",
    "training.per_device_eval_batch_size", "training.eval_accumulation_steps", "training.save_strategy",
    "training.save_steps", "training.save_total_limit", "training.report_to", "training.run_name",
    "training.disable_tqdm", "training.dataloader_num_workers", "training.dataloader_pin_memory",
    "training.dataloader_persistent_workers", "training.dataloader_prefetch_factor", "training.push_to_hub",
    "training.hub_model_id", "training.hub_strategy", "training.hub_token", "training.hub_private_repo",
    "training.include_num_input_tokens_seen", "training.predict_with_generate", "data.test", "data.max_eval_samples",
    "data.cache", "generation.",
)

logger = logging.getLogger("hftk")


def latest_checkpoint(output_dir: str | Path) -> str | None:
    """The highest-numbered checkpoint-N in `output_dir` that was saved completely."""
    steps = []
    for path in Path(output_dir).glob(f"{PREFIX}*") if Path(output_dir).is_dir() else []:
        suffix = path.name.removeprefix(PREFIX)
        if suffix.isdigit() and trainer_state(path) is not None:
            steps.append((int(suffix), path))
    return str(max(steps)[1]) if steps else None


def trainer_state(checkpoint: str | Path) -> dict[str, Any] | None:
    """A checkpoint's trainer_state.json, or None when it is missing or cut short (the Trainer
    writes it last, but not atomically: a kill can leave it empty)."""
    try:
        return json.loads((Path(checkpoint) / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def data_fingerprints(recipe: "Recipe") -> dict[str, dict[str, Any]]:
    """Split -> {file, sha256} of the local data file(s) each split is read from: a local file, or the
    files a packaged builder's ``data_files`` name (their names and digests joined; the builder's other
    arguments, such as ``split``, are recipe keys, compared as such). Hub datasets have none."""
    found = {}
    for split, source in recipe.data.sources():
        files = source.local_files()
        if files is None:
            continue
        found[split] = {"file": source.file if source.file is not None else ", ".join(str(path) for path in files),
                        "sha256": ",".join(provenance.sha256(path) for path in files)}
    return found


def save_recipe(checkpoint: str | Path, recipe: "Recipe", fingerprints: dict[str, dict[str, Any]]) -> None:
    """The recipe and data fingerprints a checkpoint was made with, into its directory."""
    import yaml

    checkpoint = Path(checkpoint)
    checkpoint.mkdir(parents=True, exist_ok=True)
    write_atomically(checkpoint / CHECKPOINT_DATA, json.dumps(fingerprints, indent=2) + "\n")
    write_atomically(checkpoint / CHECKPOINT_RECIPE, yaml.safe_dump(recipe.dump(), sort_keys=False, allow_unicode=True))


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted key (an empty mapping has no leaves: ``config: {}`` is no setting)."""
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def _harmless(key: str) -> bool:
    return any(key == h or (h.endswith(".") and key.startswith(h)) for h in HARMLESS)


def resume_changes(recipe: "Recipe", checkpoint: str | Path) -> tuple[list[Problem], list[str]]:
    """(changes that refuse the resume, one Problem per key; harmless changes, described) between
    the recipe a checkpoint was made with and `recipe`."""
    import yaml

    checkpoint = Path(checkpoint)
    saved_file = checkpoint / CHECKPOINT_RECIPE
    if not saved_file.is_file():
        return [], [f"{checkpoint} holds no {CHECKPOINT_RECIPE} (not written by this hftk): the recipe could not be "
                    "compared with the one it was made with"]
    then = _flat(yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {})
    now = _flat(recipe.dump())
    fingerprints_file = checkpoint / CHECKPOINT_DATA
    old_data = json.loads(fingerprints_file.read_text(encoding="utf-8")) if fingerprints_file.is_file() else {}
    new_data = data_fingerprints(recipe)
    problems, harmless = [], []
    fix = f"set it back to resume from {checkpoint.name}, or start a new run with --overwrite (or another training.output_dir)"
    for split in sorted(set(old_data) | set(new_data)):
        key = f"data.{split}"
        old, new = old_data.get(split), new_data.get(split)
        then.pop(key, None), now.pop(key, None)
        if old and new and old["sha256"] == new["sha256"]:
            if old["file"] != new["file"]:
                harmless.append(f"{key}: {old['file']} -> {new['file']} (same content)")
            continue
        if split == "test":  # scored once at the end: no part of the training
            harmless.append(f"{key}: changed (scored only at the end)")
            continue
        what = ("its content changed since the checkpoint (sha256 differs)" if old and new and old["file"] == new["file"]
                else f"was {old['file'] if old else 'not set'} when {checkpoint.name} was saved, now {new['file'] if new else 'not set'}")
        problems.append(Problem(("data", split), f"{what}; {fix}"))
    for key in sorted(set(then) | set(now)):
        old, new = then.get(key, "(not set)"), now.get(key, "(not set)")
        if old == new or key == "training.resume_from_checkpoint":
            continue
        if _harmless(key):
            harmless.append(f"{key}: {old} -> {new}")
        else:
            problems.append(Problem(tuple(key.split(".")), f"{old!r} when {checkpoint.name} was saved, now {new!r}; "
                                                           f"resuming would not continue the same run; {fix}"))
    return problems, harmless


def resume_problems(args: Any) -> list[Problem]:
    """``training.resume_from_checkpoint``: a checkpoint directory, or true for the newest complete one in output_dir."""
    resume, key = args.resume_from_checkpoint, ("training", "resume_from_checkpoint")
    if resume is True:
        if latest_checkpoint(args.output_dir) is None and (Path(args.output_dir) / RECIPE_FILE).is_file():
            return [Problem(key, f"'{args.output_dir}' holds a finished run without checkpoints: nothing to resume (nothing "
                                 "was changed); to train anew, --overwrite or another training.output_dir")]
        if latest_checkpoint(args.output_dir) is None:
            return [Problem(key, f"no complete checkpoint-* directory in {args.output_dir} to resume from; train with "
                                 "save_strategy 'steps' or 'epoch' first, or give a checkpoint path")]
    elif resume and trainer_state(resume) is None:
        what = "has no readable trainer_state.json (missing, or a save cut short)" if Path(resume).is_dir() else "not found"
        return [Problem(key, f"checkpoint directory {what}: '{resume}' (looked at {Path(resume).absolute()})")]
    return _nothing_left(args, resume_target(args)) if resume else []


def _nothing_left(args: Any, checkpoint: str) -> list[Problem]:
    """A checkpoint at or past the steps (or epochs) the recipe trains: resuming would train 0
    steps and rewrite the run's figures with those of no training."""
    state = trainer_state(checkpoint) or {}
    step, epoch = state.get("global_step", 0), state.get("epoch") or 0.0
    if args.max_steps > 0:
        if args.max_steps > step:
            return []
        asked, longer = f"max_steps={args.max_steps}", f"training.max_steps=N with N above {step}"
    else:
        if args.num_train_epochs > epoch + 1e-6:
            return []
        asked, longer = f"num_train_epochs={args.num_train_epochs:g}", f"training.num_train_epochs=E with E above {epoch:g}"
    finished = (Path(args.output_dir) / RECIPE_FILE).is_file()
    what = f"'{args.output_dir}' holds a finished run" if finished else f"{Path(checkpoint).name} is the end of the run"
    return [Problem(("training", "resume_from_checkpoint"),
                    f"{what}: {Path(checkpoint).name} is at step {step} (epoch {epoch:g}) and the recipe asks for {asked}, "
                    f"so there is nothing to resume (nothing was changed). To train longer, --resume --set {longer}; "
                    "to train anew, --overwrite or another training.output_dir")]


def resume_target(args: Any) -> str | None:
    """The checkpoint ``training.resume_from_checkpoint`` names (true: the newest complete one), or None."""
    resume = latest_checkpoint(args.output_dir) if args.resume_from_checkpoint is True else args.resume_from_checkpoint
    return resume or None


def resume_point(args: Any) -> str | None:
    """:func:`resume_target`, said on the log."""
    resume = resume_target(args)
    if resume:
        logger.info("resuming from %s", resume)
    return resume or None
