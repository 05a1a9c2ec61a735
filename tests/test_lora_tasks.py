"""LoRA on every task: a few steps on tiny saved base models; the adapter (and task head) is saved,
only adapter/head weights train, and the run directory works with hftk's inference commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_path, write

TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """Tiny 'pretrained' bases saved to disk: BERT (MLM head), GPT-2 and BART (GPT-2 BPE)."""
    from transformers import (
        AutoTokenizer,
        BartConfig,
        BartForConditionalGeneration,
        BertConfig,
        BertForMaskedLM,
        GPT2Config,
        GPT2LMHeadModel,
    )

    root = tmp_path_factory.mktemp("bases")
    bert_tok = AutoTokenizer.from_pretrained(shared_path("tokenizers", "bert-base-uncased"))
    gpt2_tok = AutoTokenizer.from_pretrained(shared_path("tokenizers", "gpt2"))
    models = {
        "bert": (BertForMaskedLM(BertConfig(vocab_size=len(bert_tok), **TINY_BERT)), bert_tok),
        "gpt2": (GPT2LMHeadModel(GPT2Config(vocab_size=len(gpt2_tok), n_layer=2, n_head=2, n_embd=32, n_positions=128)), gpt2_tok),
        "bart": (BartForConditionalGeneration(BartConfig(
            vocab_size=len(gpt2_tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
            pad_token_id=gpt2_tok.eos_token_id, bos_token_id=gpt2_tok.bos_token_id, eos_token_id=gpt2_tok.eos_token_id,
            decoder_start_token_id=gpt2_tok.eos_token_id)), gpt2_tok),
    }
    for name, (model, tokenizer) in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return {name: root / name for name in models}


def rows_for(task: str) -> tuple[list[dict], str]:
    """Toy rows and the `data` options for each task."""
    if task == "masked-lm":
        return [{"text": f"the cat sat on the mat number {i} today"} for i in range(16)], "  block_size: 16\n"
    if task == "text-classification":
        return [{"text": f"{w} movie {i}", "label": int(w == "good")} for i in range(8) for w in ("good", "bad")], ""
    if task == "question-answering":
        context = "The cat sat on the mat in Paris."
        return [{"id": str(i), "question": "Where did the cat sit?", "context": context,
                 "answers": {"text": ["the mat"], "answer_start": [context.index("the mat")]}} for i in range(8)], "  max_length: 64\n  doc_stride: 16\n"
    return [{"source": f"a b c {i}", "target": f"{i} c b a"} for i in range(8)], "  max_source_length: 16\n  max_target_length: 16\n"


CASES = {
    "masked-lm": ("bert", ""),
    "text-classification": ("bert", ""),
    "question-answering": ("bert", ""),
    "summarization": ("bart", ""),
    "translation": ("gpt2", "  prompt_template: '{source} =>'\n"),
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_lora_on_each_task(task, bases, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base, extra_data = CASES[task]
    rows, data_options = rows_for(task)
    write(tmp_path / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    recipe = write(tmp_path / "lora.yaml", (
        f"task: {task}\nseed: 0\nmodel: {{name_or_path: {bases[base]}}}\n"
        f"data:\n  train: train.jsonl\n{data_options}{extra_data}"
        "peft: {r: 4, alpha: 8, dropout: 0.0}\n"
        "training: {output_dir: run, max_steps: 3, learning_rate: 1e-2, save_strategy: 'no', disable_tqdm: true, report_to: none}\n"
    ))
    result = cli("finetune", recipe)
    assert result.exit_code == 0, result
    run = tmp_path / "run"
    assert (run / "adapter_config.json").is_file() and not (run / "model.safetensors").exists()
    from safetensors.torch import load_file

    adapter = load_file(run / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().max()) > 0 for v in lora_b)  # B starts at 0: it trained
    if task in ("text-classification", "question-answering"):
        head = "classifier" if task == "text-classification" else "qa_outputs"
        assert any(head in k for k in adapter), f"the {head} head must be saved with the adapter"

    scored = cli("eval", "--model", run, "--data", tmp_path / "train.jsonl", "--json")
    assert scored.exit_code == 0, scored
    assert json.loads(scored.stdout)
