"""Summarization / translation: recipe checks, label masking, and tiny models that learn to copy.

The three model shapes (encoder-decoder config, EncoderDecoderModel pair, decoder-only GPT-2 with
a prompt template) each learn to copy short word sequences to ROUGE-L >= 0.9 on their training
set; their run directories reload in plain transformers and generate what ``hftk generate`` prints.
Tiny dims and a 300-token BPE trained on the toy data keep the default run short; the real-tokenizer
BERT2GPT2 run (30k- and 50k-token embeddings) is marked slow.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import write

WORDS = "red blue green cat dog sun moon tree".split()
TINY_TOKENIZER = "train_tokenizer: {vocab_size: 300, min_frequency: 1}"
T5 = "{model_type: t5, d_model: 64, d_ff: 128, num_layers: 2, num_decoder_layers: 2, num_heads: 4, d_kv: 16, dropout_rate: 0.0}"
BERT = ("{model_type: bert, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 128, "
        "max_position_embeddings: 128, hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}")
GPT2 = "{model_type: gpt2, n_embd: 64, n_layer: 2, n_head: 4, n_positions: 128, resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}"


@pytest.fixture(scope="module")
def copy_data(tmp_path_factory) -> Path:
    """24 rows of 3-4 random words; the target is the source."""
    rng = random.Random(0)
    rows = []
    for _ in range(24):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 4)))
        rows.append({"document": text, "summary": text})
    path = tmp_path_factory.mktemp("copy") / "copy.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def recipe_text(data: Path, out: Path, model: str, *, extra_data: str = "", task: str = "summarization",
                epochs: int = 30, lr: str = "5e-3") -> str:
    return f"""
task: {task}
model:
{model}
data:
  train: {data}
  validation: {data}
  columns: {{source: document, target: summary}}
  max_target_length: 12
{extra_data}
training:
  output_dir: {out}
  num_train_epochs: {epochs}
  per_device_train_batch_size: 8
  learning_rate: {lr}
  eval_strategy: "no"
  save_strategy: "no"
  logging_steps: 1000
  disable_tqdm: true
"""


SHAPES = {
    "seq2seq": (f"  init: scratch\n  config: {T5}\n  {TINY_TOKENIZER}", ""),
    "pair": (f"  {TINY_TOKENIZER}\n  encoder: {{init: scratch, config: {BERT}}}\n  decoder: {{init: scratch, config: {GPT2}}}", ""),
    "decoder-only": (f"  init: scratch\n  config: {GPT2}\n  {TINY_TOKENIZER}", '  prompt_template: "{source} =>"'),
}


def build(tmp_path: Path, copy_data: Path, shape: str, **kwargs):
    """(recipe, tokenizer, model, prepared splits) without training."""
    from hf_toolkit.core import data as data_lib
    from hf_toolkit.recipe.checks import load_recipe
    from hf_toolkit.tasks import TASKS

    seq2seq = TASKS["summarization"]
    model, extra = SHAPES[shape]
    path = write(tmp_path / "r.yaml", recipe_text(copy_data, tmp_path / "out", model, extra_data=extra, **kwargs))
    recipe = load_recipe(path)
    splits = data_lib.load_splits(recipe.data, seq2seq.roles, seed=0)
    tokenizer, model = seq2seq.build_model(recipe, splits)
    return recipe, tokenizer, model, seq2seq.prepare(recipe, splits, tokenizer, model)


def collate(recipe, tokenizer, model, dataset, rows=(0, 1, 2, 3)):
    from hf_toolkit.tasks import TASKS

    collator = TASKS["summarization"].trainer_kwargs(recipe, tokenizer, model)["data_collator"]
    return collator([dataset[i] for i in rows])


# --------------------------------------------------------------------------------------------
# Label masking (one collated batch)


@pytest.mark.parametrize("shape", ["seq2seq", "pair"])
def test_encoder_decoder_labels_end_in_eos_and_padding_is_ignored(tmp_path, copy_data, shape):
    recipe, tokenizer, model, prepared = build(tmp_path, copy_data, shape)
    batch = collate(recipe, tokenizer, model, prepared["train"])
    labels = batch["labels"]
    eos = model.generation_config.eos_token_id
    lengths = [len(prepared["train"][i]["labels"]) for i in range(4)]
    assert len(set(lengths)) > 1, "the batch should mix target lengths"
    for row, length in zip(labels.tolist(), lengths):
        assert row[length - 1] == eos, "every target ends in EOS, which the loss must see"
        assert IGNORE not in row[:length], "real target tokens are never masked"
        assert row[length:] == [IGNORE] * (len(row) - length), "padding is -100"
    # Teacher forcing: the decoder reads the decoder start token, then the labels shifted right,
    # built by the collator for both shapes and with no decoder mask: an EncoderDecoderModel left to
    # shift the labels itself would mask the start token when it is also the pad token (here it is).
    start = model.config.decoder_start_token_id
    decoder_inputs = batch["decoder_input_ids"]
    assert "decoder_attention_mask" not in batch
    if shape == "pair":
        assert start == model.config.pad_token_id, "the case this guards: start token == pad token"
    assert decoder_inputs[:, 0].tolist() == [start] * 4
    assert decoder_inputs[:, 1:].tolist() == [[t if t != IGNORE else tokenizer.pad_token_id for t in row[:-1]] for row in labels.tolist()]
    texts = tokenizer.batch_decode([row[: row.index(eos)] for row in labels.tolist()], skip_special_tokens=True)
    assert texts == [prepared_source(copy_data, i) for i in range(4)]


IGNORE = -100


def prepared_source(path: Path, i: int) -> str:
    return json.loads(path.read_text().splitlines()[i])["summary"]


def test_decoder_only_loss_covers_target_and_eos_only(tmp_path, copy_data, gpt2_tokenizer_dir):
    """GPT-2 pads with EOS: the EOS that ends a target must stay a label while padding is -100."""
    model = f"  init: scratch\n  tokenizer: {gpt2_tokenizer_dir}\n  config: {GPT2}"
    from hf_toolkit.core import data as data_lib
    from hf_toolkit.recipe.checks import load_recipe
    from hf_toolkit.tasks import TASKS

    seq2seq = TASKS["summarization"]
    path = write(tmp_path / "r.yaml", recipe_text(copy_data, tmp_path / "out", model,
                                                  extra_data='  prompt_template: "Copy: {source}\\nTL;DR: "'))
    recipe = load_recipe(path)
    splits = data_lib.load_splits(recipe.data, seq2seq.roles, seed=0)
    tokenizer, model = seq2seq.build_model(recipe, splits)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 50256
    prepared = seq2seq.prepare(recipe, splits, tokenizer, model)
    batch = collate(recipe, tokenizer, model, prepared["train"])
    for i, (ids, labels, mask) in enumerate(zip(batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist())):
        source = splits["train"][i]["source"]
        prompt = tokenizer(f"Copy: {source}\nTL;DR: ")["input_ids"]
        target = tokenizer(splits["train"][i]["target"], add_special_tokens=False)["input_ids"] + [50256]
        length = len(prompt) + len(target)
        assert ids[:length] == prompt + target
        assert labels[: len(prompt)] == [IGNORE] * len(prompt), "no loss on the prompt"
        assert labels[len(prompt) : length] == target, "loss on the target and its EOS"
        assert labels[length:] == [IGNORE] * (len(ids) - length), "no loss on padding"
        assert mask == [1] * length + [0] * (len(ids) - length)


def test_decoder_only_evaluation_generates_from_each_prompt_alone(tmp_path):
    """PromptSeq2SeqTrainer: a row's prompt (its -100 label prefix) is left-padded and generated from, and
    only the continuation comes back: what each prompt alone would generate, not the whole sequence's."""
    from types import SimpleNamespace

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Seq2SeqTrainingArguments
    from transformers.data.data_collator import default_data_collator

    from hf_toolkit.tasks import TASKS
    from hf_toolkit.tasks.trainers import PromptSeq2SeqTrainer, left_padded_prompts

    assert TASKS["summarization"].trainer_class() is PromptSeq2SeqTrainer is TASKS["translation"].trainer_class()
    ids = torch.tensor([[5, 6, 7, 8, 9], [3, 4, 8, 9, 1]])
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, 8, 9], [IGNORE, IGNORE, 8, 9, IGNORE]])
    prompts, mask = left_padded_prompts(ids, labels, pad_id=0)
    assert prompts.tolist() == [[5, 6, 7], [0, 3, 4]] and mask.tolist() == [[1, 1, 1], [0, 1, 1]]

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=20)).eval()
    args = Seq2SeqTrainingArguments(str(tmp_path), predict_with_generate=True, report_to="none", use_cpu=True)
    trainer = PromptSeq2SeqTrainer(model=model, args=args, data_collator=default_data_collator,
                                   processing_class=SimpleNamespace(pad_token_id=0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    loss, generated, returned = trainer.prediction_step(model, inputs, prediction_loss_only=False, max_new_tokens=3, do_sample=False)
    alone = [model.generate(torch.tensor([prompt]), max_new_tokens=3, do_sample=False)[0, len(prompt):].tolist()
             for prompt in ([5, 6, 7], [3, 4])]
    assert generated.tolist() == alone
    assert torch.equal(returned, labels) and torch.isfinite(loss)


# --------------------------------------------------------------------------------------------
# EncoderDecoderModel ids with real tokenizers


@pytest.mark.parametrize("decoder", ["gpt2", "bert"])
def test_pair_special_ids_follow_the_decoder_tokenizer(tmp_path, copy_data, shared, decoder):
    bert_dir = shared("tokenizers", "bert-base-uncased")
    decoder_dir = shared("tokenizers", "gpt2") if decoder == "gpt2" else bert_dir
    decoder_config = GPT2 if decoder == "gpt2" else BERT
    model = (f"  encoder: {{init: scratch, tokenizer: {bert_dir}, config: {BERT}}}\n"
             f"  decoder: {{init: scratch, tokenizer: {decoder_dir}, config: {decoder_config}}}")
    from hf_toolkit.core import data as data_lib
    from hf_toolkit.recipe.checks import load_recipe
    from hf_toolkit.tasks import TASKS

    seq2seq = TASKS["summarization"]
    recipe = load_recipe(write(tmp_path / "r.yaml", recipe_text(copy_data, tmp_path / "out", model)))
    splits = data_lib.load_splits(recipe.data, seq2seq.roles, seed=0)
    tokenizer, model = seq2seq.build_model(recipe, splits)
    writer = seq2seq.target_tokenizer(recipe, tokenizer)
    # GPT-2: <|endoftext|> starts, ends and pads; BERT: [CLS] starts, [SEP] ends, [PAD] pads.
    expected = {"gpt2": (50256, 50256, 50256), "bert": (101, 102, 0)}[decoder]
    got = (model.config.decoder_start_token_id, model.config.eos_token_id, model.config.pad_token_id)
    assert got == expected
    gen = model.generation_config
    assert (gen.decoder_start_token_id, gen.eos_token_id, gen.pad_token_id) == expected
    assert model.config.decoder.add_cross_attention and model.config.decoder.is_decoder
    assert model.config.vocab_size == len(writer)
    prepared = seq2seq.prepare(recipe, splits, tokenizer, model)
    row = prepared["train"][0]
    assert row["input_ids"][0] == 101 and row["input_ids"][-1] == 102, "BERT encoder input: [CLS] ... [SEP]"
    assert row["labels"][-1] == expected[1]
    assert writer.decode(row["labels"][:-1]) == splits["train"][0]["target"]


# --------------------------------------------------------------------------------------------
# Recipe and data errors (exit 2, before training)


BAD_RECIPES = {
    "encoder without decoder": ("  encoder: {name_or_path: bert-base-uncased}", "", "model.decoder"),
    "pair plus name_or_path": (f"  name_or_path: gpt2\n{SHAPES['pair'][0]}", "", "model.name_or_path describes a single model"),
    "template without source": (f"  init: scratch\n  config: {GPT2}\n  {TINY_TOKENIZER}", '  prompt_template: "{text} =>"', "data.prompt_template"),
    "decoder-only without template": (f"  init: scratch\n  config: {GPT2}\n  {TINY_TOKENIZER}", "", "data.prompt_template"),
    "template on an encoder-decoder": (f"  init: scratch\n  config: {T5}\n  {TINY_TOKENIZER}", '  prompt_template: "{source} =>"', "data.prompt_template"),
    "prefix on decoder-only": (f"  init: scratch\n  config: {GPT2}\n  {TINY_TOKENIZER}", '  prompt_template: "{source} =>"\n  source_prefix: "x: "', "data.source_prefix"),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_bad_seq2seq_recipes_exit_2(tmp_path, copy_data, cli, case):
    model, extra, key = BAD_RECIPES[case]
    path = write(tmp_path / "r.yaml", recipe_text(copy_data, tmp_path / "out", model, extra_data=extra))
    result = cli("finetune", path)
    assert result.exit_code == 2, result
    assert key in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_pair_only_for_seq2seq_tasks_and_generation_keys_belong_in_generation(tmp_path, copy_data, cli):
    text = recipe_text(copy_data, tmp_path / "out", SHAPES["pair"][0]).replace("task: summarization", "task: causal-lm")
    text = text.replace("  columns: {source: document, target: summary}\n  max_target_length: 12\n", "")
    text = text.replace("  disable_tqdm: true", "  disable_tqdm: true\n  generation_num_beams: 4")
    result = cli("finetune", write(tmp_path / "r.yaml", text), "--check")
    assert result.exit_code == 2, result
    assert "model.encoder: an encoder-decoder pair is for task summarization or translation" in result.stderr
    assert "training.generation_num_beams: set decoding in the recipe's generation section" in result.stderr


def test_translation_format_and_language_pair(tmp_path, shared):
    from hf_toolkit.core import data as data_lib
    from hf_toolkit.errors import DataError
    from hf_toolkit.recipe.checks import validate_recipe

    sample = shared("hf_transformers_tests_samples", "wmt16", "sample.json")
    base = {"task": "translation", "model": {"name_or_path": str(tmp_path)}, "data": {"train": str(sample)}}
    from hf_toolkit.tasks import TASKS

    read_rows = TASKS["translation"].read_rows
    recipe = validate_recipe({**base, "data": {**base["data"], "source_lang": "en", "target_lang": "ro"}})
    splits = data_lib.load_splits(recipe.data, ("source", "target"), seed=0, read_rows=read_rows)
    first = json.loads(sample.read_text(encoding="utf-8").splitlines()[0])["translation"]
    assert splits["train"][0] == {"source": first["en"], "target": first["ro"]}
    # mBART-style codes fall back to the bare language: en_XX -> en.
    recipe = validate_recipe({**base, "data": {**base["data"], "source_lang": "ro_RO", "target_lang": "en_XX"}})
    assert data_lib.load_splits(recipe.data, ("source", "target"), seed=0, read_rows=read_rows)["train"][0]["target"] == first["en"]
    recipe = validate_recipe({**base, "data": {**base["data"], "source_lang": "en", "target_lang": "de"}})
    with pytest.raises(DataError, match="language 'de' is not in the 'translation' mappings"):
        data_lib.load_splits(recipe.data, ("source", "target"), seed=0, read_rows=read_rows)
    recipe = validate_recipe(base)
    with pytest.raises(DataError, match="set data.source_lang and data.target_lang"):
        data_lib.load_splits(recipe.data, ("source", "target"), seed=0, read_rows=read_rows)


# --------------------------------------------------------------------------------------------
# End to end: learn to copy, reload in plain transformers, generate the same text


def plain_transformers_generate(run_dir: Path, shape: str, sources: list[str]) -> list[str]:
    """What a user without hftk gets from the run directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    writer = AutoTokenizer.from_pretrained(run_dir / "decoder_tokenizer") if (run_dir / "decoder_tokenizer").is_dir() else tokenizer
    texts = []
    for source in sources:
        if shape == "decoder-only":
            model = AutoModelForCausalLM.from_pretrained(run_dir)
            inputs = tokenizer(f"{source} =>", return_tensors="pt")
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(run_dir)
            inputs = tokenizer(source, return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(**inputs)
        if shape == "decoder-only":
            output = output[:, inputs["input_ids"].shape[1] :]
        texts.append(writer.decode(output[0], skip_special_tokens=True))
    return texts


def learn_to_copy(tmp_path: Path, copy_data: Path, cli, shape: str, **kwargs) -> Path:
    model, extra = SHAPES[shape]
    out = tmp_path / "out"
    path = write(tmp_path / "r.yaml", recipe_text(copy_data, out, model, extra_data=extra, **kwargs))
    result = cli("finetune", path)
    assert result.exit_code == 0, result
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_rougeL"] >= 0.9, metrics
    assert 2 <= metrics["eval_gen_len"] <= 12, "generation stops at EOS (targets are 3-4 words)"

    sources = [json.loads(line)["document"] for line in copy_data.read_text().splitlines()[:3]]
    args = ["generate", "--model", out, "--json"] + [a for s in sources for a in ("--prompt", s)]
    result = cli(*args)
    assert result.exit_code == 0, result
    generated = [row["text"] for row in json.loads(result.stdout)]
    assert [t.strip() for t in generated] == [t.strip() for t in plain_transformers_generate(out, shape, sources)]
    assert sum(t.strip() == s for t, s in zip(generated, sources)) >= 2, generated

    from datasets import load_dataset

    from hf_toolkit import metrics as metrics_lib
    from hf_toolkit.apply.generation import Generator
    from hf_toolkit.core import rundir
    from hf_toolkit.core.data import eval_rows
    from hf_toolkit.tasks import TASKS

    task = TASKS["summarization"]
    run = rundir.open_run(out)
    generator = Generator(run)
    rows = eval_rows(load_dataset("json", data_files=str(copy_data), split="train"), run.recipe.data, task.roles, where="copy", how_to_map="")
    predictions, references = task.predict(generator.model, generator.tokenizer, run.recipe, rows,
                                           lambda prompts: [r.text for r in generator.generate(generator.prepare(prompts, {}))])
    assert references[0] == sources[0]
    assert metrics_lib.compute(task.eval_metrics, predictions, references)["rougeL"] >= 0.9
    return out


def test_encoder_decoder_config_learns_to_copy(tmp_path, copy_data, cli):
    out = learn_to_copy(tmp_path, copy_data, cli, "seq2seq")
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(out).model_type == "t5"


def test_encoder_decoder_pair_learns_to_copy(tmp_path, copy_data, cli):
    out = learn_to_copy(tmp_path, copy_data, cli, "pair")
    from transformers import AutoModelForSeq2SeqLM

    assert type(AutoModelForSeq2SeqLM.from_pretrained(out)).__name__ == "EncoderDecoderModel"


def test_decoder_only_with_prompt_template_learns_to_copy(tmp_path, copy_data, cli):
    learn_to_copy(tmp_path, copy_data, cli, "decoder-only")


@pytest.mark.slow  # 40 epochs with 30k- and 50k-token embeddings, ~1 min
def test_bert2gpt2_with_real_tokenizers_saves_and_uses_the_decoder_tokenizer(tmp_path, copy_data, cli, shared):
    """Encoder reads with BERT's WordPiece, decoder writes GPT-2 BPE; generate decodes with GPT-2's."""
    bert_dir, gpt2_dir = shared("tokenizers", "bert-base-uncased"), shared("tokenizers", "gpt2")
    model = (f"  encoder: {{init: scratch, tokenizer: {bert_dir}, config: {BERT}}}\n"
             f"  decoder: {{init: scratch, tokenizer: {gpt2_dir}, config: {GPT2}}}")
    out = tmp_path / "out"
    result = cli("finetune", write(tmp_path / "r.yaml", recipe_text(copy_data, out, model, epochs=40, lr="3e-3")))
    assert result.exit_code == 0, result
    assert (out / "decoder_tokenizer" / "tokenizer.json").is_file()
    assert json.loads((out / "decoder_tokenizer" / "tokenizer_config.json").read_text())["tokenizer_class"].startswith("GPT2")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_rougeL"] >= 0.9, metrics
    sources = [json.loads(line)["document"] for line in copy_data.read_text().splitlines()[:2]]
    result = cli("generate", "--model", out, "--json", "--prompt", sources[0], "--prompt", sources[1])
    generated = [row["text"].strip() for row in json.loads(result.stdout)]
    assert generated == [t.strip() for t in plain_transformers_generate(out, "pair", sources)]
    assert any(g == s for g, s in zip(generated, sources)), generated


def test_summarization_and_translation_are_seq2seq_with_their_own_metrics():
    from hf_toolkit.tasks import TASKS
    from hf_toolkit.tasks.seq2seq import Seq2SeqTask

    summarization, translation = TASKS["summarization"], TASKS["translation"]
    assert isinstance(summarization, Seq2SeqTask) and isinstance(translation, Seq2SeqTask)
    assert summarization.eval_metrics == ("rouge",)
    assert translation.eval_metrics == ("bleu", "chrf")
    assert "source_lang" in translation.Data.model_fields and "source_lang" not in summarization.Data.model_fields


CHINESE = {"red": "红", "blue": "蓝", "green": "绿", "cat": "猫", "dog": "狗", "sun": "太阳", "moon": "月亮", "tree": "树"}


def test_translation_into_chinese_end_to_end(tmp_path, cli):
    """English -> Chinese word by word, in the Hugging Face translation format: the tokenizer is
    trained on both languages, generation prints Chinese (not escapes), and BLEU is sacreBLEU's
    with its `zh` tokenizer in training and in hftk eval alike."""
    import sacrebleu

    rng = random.Random(1)
    rows = []
    for _ in range(24):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 4))]
        rows.append({"translation": {"en": " ".join(words), "zh": "".join(CHINESE[w] for w in words)}})
    data = write(tmp_path / "en-zh.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    out = tmp_path / "out"
    recipe = write(tmp_path / "r.yaml", f"""
task: translation
model:
  init: scratch
  config: {T5}
  {TINY_TOKENIZER}
data:
  train: {data}
  validation: {data}
  source_lang: en
  target_lang: zh
  max_target_length: 16
training:
  output_dir: {out}
  num_train_epochs: 60  # 30 reached BLEU 61 in fp32 (a CPU without native bf16), 80+ only in bf16
  per_device_train_batch_size: 8
  learning_rate: 5e-3
  eval_strategy: "no"
  save_strategy: "no"
  disable_tqdm: true
""")
    result = cli("finetune", recipe)
    assert result.exit_code == 0, result
    trained = json.loads((out / "metrics.json").read_text())
    assert trained["eval_bleu"] >= 80, trained

    first = rows[0]["translation"]
    generated = cli("generate", "--model", out, "--prompt", first["en"], "--json")
    assert generated.exit_code == 0, generated
    assert f'"text": "{first["zh"]}"' in generated.stdout  # readable Chinese in the JSON, not \u escapes

    scored = cli("eval", "--model", out, "--data", data, "--json")
    assert scored.exit_code == 0, scored
    scores = json.loads(scored.stdout.strip().splitlines()[-1])
    predictions = [json.loads(line)["prediction"] for line in (out / "eval" / "en-zh.jsonl.predictions.jsonl").read_text().splitlines()]
    references = [r["translation"]["zh"] for r in rows]
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references], tokenize="zh").score, abs=1e-9)
    assert scores["bleu"] == pytest.approx(trained["eval_bleu"], abs=1e-6)
