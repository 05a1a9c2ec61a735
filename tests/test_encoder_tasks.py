"""End-to-end encoder tasks through the real CLI on tiny models built from config (CPU, seconds).

masked-lm: loss falls, whole-word masking masks words whole, the output loads as AutoModelForMaskedLM.
text-classification: a tiny BERT learns a separable toy task with string labels (names in the
config), GPT-2 classification trains with its EOS pad token, label mistakes exit 2.
question-answering: a tiny BERT learns to extract spans from a toy SQuAD-format set with a context
longer than max_length (answer in the 2nd window) and SQuAD v2 unanswerable questions; the output
loads as AutoModelForQuestionAnswering.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import finetune, shared_path, write

TINY_BERT = "{model_type: bert, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}"
POSITIVE = ["good", "great", "excellent", "wonderful", "superb", "lovely", "brilliant", "delightful"]
NEGATIVE = ["bad", "awful", "terrible", "dreadful", "horrible", "poor", "boring", "dull"]
FILLER = ["the", "movie", "plot", "actors", "film", "story", "music", "scenes", "was", "and", "really", "quite"]


def bert_recipe(path: Path, task: str, data: str, training: str, extra_model: str = "") -> Path:
    tokenizer = shared_path("tokenizers", "bert-base-uncased")
    return write(
        path,
        f"task: {task}\nseed: 0\n"
        f"model:\n  init: scratch\n  tokenizer: {tokenizer}\n  config: {TINY_BERT}\n{extra_model}"
        f"data:\n{data}"
        f"training:\n  output_dir: {path.parent / 'run'}\n  report_to: none\n  save_strategy: 'no'\n{training}",
    )


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


def log_losses(run: Path) -> list[float]:
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


# --------------------------------------------------------------------------------------------
# text-classification


def sentiment_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if positive else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"sentence": " ".join(words), "sentiment": "pos" if positive else "neg"})
    return rows


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cls")
    jsonl(tmp / "train.jsonl", sentiment_rows(240, 0))
    jsonl(tmp / "dev.jsonl", sentiment_rows(60, 1))
    recipe = bert_recipe(
        tmp / "recipe.yaml", "text-classification",
        f"  train: {tmp / 'train.jsonl'}\n  validation: {tmp / 'dev.jsonl'}\n"
        "  columns: {text: sentence, label: sentiment}\n  max_length: 32\n",
        "  num_train_epochs: 12\n  learning_rate: 3.0e-3\n  per_device_train_batch_size: 16\n  eval_strategy: epoch\n  logging_steps: 10\n",
    )
    result = finetune(recipe)
    return tmp / "run", tmp, result


def test_classification_learns_a_separable_task(classifier_run):
    run, _, result = classifier_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_accuracy"] >= 0.9, metrics
    for key in ("eval_f1", "eval_precision", "eval_recall"):
        assert 0.0 <= metrics[key] <= 1.0
    assert "eval_accuracy" in result.stdout


def test_final_validation_scores_are_the_last_epochs_not_a_second_pass(classifier_run):
    run, _, _ = classifier_run
    evaluations = [e for e in json.loads((run / "trainer_state.json").read_text())["log_history"] if "eval_loss" in e]
    assert len(evaluations) == 12  # one per epoch; the end of training adds none
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_accuracy"] == evaluations[-1]["eval_accuracy"]
    assert metrics["eval_loss"] == evaluations[-1]["eval_loss"]


def test_classifier_stores_label_names_and_loads_in_plain_transformers(classifier_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run, _, _ = classifier_run
    model = AutoModelForSequenceClassification.from_pretrained(run)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    tokenizer = AutoTokenizer.from_pretrained(run)
    logits = model(**tokenizer(["the movie was excellent and lovely", "terrible dull film"], return_tensors="pt", padding=True)).logits
    assert [model.config.id2label[i] for i in logits.argmax(-1).tolist()] == ["pos", "neg"]


def test_predict_json_returns_label_names_and_probabilities(classifier_run, cli):
    run, _, _ = classifier_run
    result = cli("predict", "--model", run, "--text", "a wonderful brilliant story", "--text", "an awful boring plot", "--json")
    assert result.exit_code == 0, result
    records = json.loads(result.stdout)
    assert [r["label"] for r in records] == ["pos", "neg"]
    for record in records:
        assert set(record) == {"text", "label", "score", "probabilities"}
        assert abs(sum(record["probabilities"].values()) - 1) < 1e-5
        assert record["score"] == max(record["probabilities"].values()) > 0.5


def test_predict_text_output_and_file_input(classifier_run, cli):
    run, tmp, _ = classifier_run
    plain = cli("predict", "--model", run, "--text", "superb acting")
    assert plain.exit_code == 0, plain
    assert plain.stdout.startswith("pos\t")
    jsonl(tmp / "inputs.jsonl", [{"sentence": "a great film"}, {"sentence": "a dreadful film"}, {"sentence": "lovely music"}])
    result = cli("predict", "--model", run, "--file", tmp / "inputs.jsonl", "--json")
    assert result.exit_code == 0, result
    assert [r["label"] for r in json.loads(result.stdout)] == ["pos", "neg", "pos"]


def test_task_predict_gives_ids_that_metrics_score(classifier_run):
    from datasets import Dataset

    from hf_toolkit import metrics
    from hf_toolkit.core import rundir
    from hf_toolkit.core.data import eval_rows
    from hf_toolkit.tasks import TASKS

    task = TASKS["text-classification"]
    run, _, _ = classifier_run
    loaded = rundir.open_run(run)
    rows, recipe = sentiment_rows(40, 7), loaded.recipe
    dataset = eval_rows(Dataset.from_list(rows), recipe.data, task.roles, task.optional_roles, where="rows", how_to_map="")
    model, tokenizer = rundir.load_model(loaded)
    predictions, references = task.predict(model, tokenizer, recipe, dataset, None)
    assert references == [1 if r["sentiment"] == "pos" else 0 for r in rows]
    scores = metrics.compute(task.eval_metrics, predictions, references)
    assert scores["accuracy"] >= 0.9


def test_predict_rejects_qa_options_for_a_classifier(classifier_run, cli):
    run, _, _ = classifier_run
    result = cli("predict", "--model", run, "--question", "why?", "--context", "because")
    assert result.exit_code == 2
    assert "--question" in result.stderr and "text-classification" in result.stderr


def test_eval_and_predict_read_a_file_in_the_encoding_they_are_given(classifier_run, cli, tmp_path):
    """Issue 21.5: eval --model honours --set data.encoding (it read UTF-8 whatever was set); predict --file
    takes --encoding; each command's advice names the option that command has."""
    run, _, _ = classifier_run
    rows = [("很好 excellent", "pos"), ("糟糕 awful", "neg")]
    gbk = tmp_path / "reviews-gbk.csv"
    gbk.write_bytes(("sentence,sentiment\n" + "".join(f"{text},{label}\n" for text, label in rows)).encode("gbk"))

    refused = cli("eval", "--model", run, "--data", gbk)
    assert refused.exit_code == 2 and "reviews-gbk.csv:2: not utf-8 text" in refused.stderr
    assert "give the file's encoding with --set data.encoding=ENCODING" in refused.stderr
    scored = cli("eval", "--model", run, "--data", gbk, "--set", "data.encoding=gbk", "--json")
    assert scored.exit_code == 0, scored
    written = (run / "eval" / "reviews-gbk.csv.predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [(json.loads(line)["text"], json.loads(line)["reference"]) for line in written] == rows

    refused = cli("predict", "--model", run, "--file", gbk)
    assert refused.exit_code == 2 and "give the file's encoding with --encoding ENCODING" in refused.stderr
    assert "data.encoding" not in refused.stderr
    predicted = cli("predict", "--model", run, "--file", gbk, "--encoding", "gbk", "--json")
    assert predicted.exit_code == 0, predicted
    assert [record["text"] for record in json.loads(predicted.stdout)] == [text for text, _ in rows]
    for args, message in ((["--text", "x", "--encoding", "gbk"], "give --file too"),
                          (["--file", gbk, "--encoding", "klingon"], "--encoding: unknown text encoding 'klingon'")):
        result = cli("predict", "--model", run, *args)
        assert result.exit_code == 2 and message in result.stderr, result


def test_unknown_validation_label_exits_2_before_training(tmp_path, cli):
    jsonl(tmp_path / "train.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}] * 4)
    jsonl(tmp_path / "dev.jsonl", [{"text": "meh", "label": "neutral"}])
    recipe = bert_recipe(tmp_path / "r.yaml", "text-classification",
                         f"  train: {tmp_path / 'train.jsonl'}\n  validation: {tmp_path / 'dev.jsonl'}\n", "  max_steps: 1\n")
    result = cli("finetune", recipe)
    assert result.exit_code == 2
    assert "'neutral'" in result.stderr and "data.validation" in result.stderr
    assert not (tmp_path / "run").exists()


def test_model_config_num_labels_is_a_setting_checked_against_the_labels(tmp_path, cli):
    """Issue 21.8: num_labels (as the transformers docs set it) was refused as "not a setting of BertConfig"."""
    jsonl(tmp_path / "train.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}] * 4)

    def recipe(num_labels: int, labels: str = "") -> Path:
        path = bert_recipe(tmp_path / "r.yaml", "text-classification", f"  train: {tmp_path / 'train.jsonl'}\n{labels}",
                           "  max_steps: 1\n")
        path.write_text(path.read_text().replace(TINY_BERT, TINY_BERT[:-1] + f", num_labels: {num_labels}}}"))
        return path

    declared = cli("finetune", recipe(3, "  labels: [neg, pos]\n"), "--check")
    assert declared.exit_code == 2, declared
    assert "r.yaml:6: model.config.num_labels: 3, but data.labels lists 2 ([neg, pos])" in " ".join(declared.stderr.split())
    assert "not a setting" not in declared.stderr
    seen = cli("finetune", recipe(3))
    assert seen.exit_code == 2, seen
    assert "model.config.num_labels is 3, but data.train has 2 labels (neg, pos)" in seen.stderr
    assert not (tmp_path / "run").exists()
    trained = cli("finetune", recipe(2))
    assert trained.exit_code == 0, trained
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}


def test_missing_label_column_names_the_columns(tmp_path, cli):
    jsonl(tmp_path / "train.jsonl", [{"text": "good", "stars": 5}] * 4)
    recipe = bert_recipe(tmp_path / "r.yaml", "text-classification", f"  train: {tmp_path / 'train.jsonl'}\n", "  max_steps: 1\n")
    result = cli("finetune", recipe)
    assert result.exit_code == 2
    assert "label" in result.stderr and "stars" in result.stderr


def test_imbalanced_labels_warn(tmp_path, caplog):
    from datasets import Dataset, DatasetDict

    from hf_toolkit.tasks import TASKS

    rows = [{"text": "x", "label": 0}] * 50 + [{"text": "y", "label": 1}] * 5
    with caplog.at_level("WARNING", logger="hftk"):
        config = TASKS["text-classification"].model_config(None, DatasetDict(train=Dataset.from_list(rows)))
    assert config["num_labels"] == 2 and config["id2label"] == {0: "0", 1: "1"}
    assert "imbalanced" in caplog.text and "0: 50" in caplog.text


def test_gpt2_classification_trains_with_a_pad_token(tmp_path, cli):
    from transformers import AutoModelForSequenceClassification

    tokenizer = shared_path("tokenizers", "gpt2")
    rows = [{"text": r["sentence"], "label": int(r["sentiment"] == "pos")} for r in sentiment_rows(64, 3)]
    jsonl(tmp_path / "train.jsonl", rows)
    recipe = write(
        tmp_path / "gpt2.yaml",
        "task: text-classification\n"
        f"model:\n  init: scratch\n  tokenizer: {tokenizer}\n  config: {{model_type: gpt2, n_layer: 2, n_head: 2, n_embd: 32}}\n"
        f"data:\n  train: {tmp_path / 'train.jsonl'}\n  validation_split: 0.25\n  max_length: 16\n"
        f"training:\n  output_dir: {tmp_path / 'run'}\n  max_steps: 4\n  per_device_train_batch_size: 8\n  save_strategy: 'no'\n",
    )
    result = cli("finetune", recipe)
    assert result.exit_code == 0, result
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run")
    assert type(model).__name__ == "GPT2ForSequenceClassification"
    assert model.config.pad_token_id == model.config.eos_token_id is not None
    assert "eval_accuracy" in json.loads((tmp_path / "run" / "metrics.json").read_text())


# --------------------------------------------------------------------------------------------
# masked-lm


def test_masked_lm_loss_falls_and_output_loads(tmp_path, cli):
    from transformers import AutoModelForMaskedLM

    rng = random.Random(0)
    lines = [" ".join(rng.sample(FILLER, 6)) + " ." for _ in range(1200)]
    write(tmp_path / "corpus.txt", "\n".join(lines) + "\n")
    recipe = bert_recipe(
        tmp_path / "mlm.yaml", "masked-lm",
        f"  train: {tmp_path / 'corpus.txt'}\n  validation_split: 0.1\n  block_size: 32\n  mlm_probability: 0.2\n",
        "  num_train_epochs: 3\n  learning_rate: 5.0e-3\n  per_device_train_batch_size: 16\n  logging_steps: 10\n",
    )
    result = cli("finetune", recipe)
    assert result.exit_code == 0, result
    run = tmp_path / "run"
    losses = log_losses(run)
    assert losses[-1] < 0.6 * losses[0], losses
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_perplexity"] < 30  # a 30k-token vocabulary starts near 30000
    model = AutoModelForMaskedLM.from_pretrained(run)
    assert type(model).__name__ == "BertForMaskedLM"

    filled = cli("predict", "--model", run, "--text", "the movie [MASK] actors .", "--top-k", "3", "--json")
    assert filled.exit_code == 0, filled
    [record] = json.loads(filled.stdout)
    assert len(record["fills"]) == 1 and len(record["fills"][0]) == 3
    assert all(fill["sequence"].startswith("the movie ") and "[MASK]" not in fill["sequence"] for fill in record["fills"][0])
    no_mask = cli("predict", "--model", run, "--text", "no mask here")
    assert no_mask.exit_code == 2 and "[MASK]" in no_mask.stderr

    # hftk eval --model: one row per masked token, with tokens (not ids) that score as in model mode
    held_out = write(tmp_path / "held_out.txt", "\n".join(lines[:40]) + "\n")
    scored = cli("eval", "--model", run, "--data", held_out, "--json")
    assert scored.exit_code == 0, scored
    accuracy = json.loads(scored.stdout.strip().splitlines()[-1])["accuracy"]
    [path] = (run / "eval").glob("held_out*.predictions.jsonl")
    out = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert out and all(set(r) == {"prediction", "reference"} and isinstance(r["prediction"], str) for r in out)
    assert {r["reference"] for r in out} <= set(FILLER) | {"."}
    assert accuracy == pytest.approx(sum(r["prediction"] == r["reference"] for r in out) / len(out))


def test_whole_word_mask_masks_every_piece_of_a_word():
    from transformers import AutoTokenizer

    from hf_toolkit.tasks import TASKS
    from hf_toolkit.tasks.collators import WordPieceMaskingCollator

    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "bert-base-uncased"))
    recipe = type("R", (), {"data": type("D", (), {"mlm_probability": 0.4, "whole_word_mask": True})()})()
    collator = TASKS["masked-lm"].trainer_kwargs(recipe, tokenizer, None)["data_collator"]
    assert type(collator) is WordPieceMaskingCollator
    text = "unbelievably antidisestablishmentarianism tokenization hyperparameters " * 4
    encoded = tokenizer([text, text])
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    batch = collator([{"input_ids": ids} for ids in encoded["input_ids"]])
    masked_any = False
    for row in batch["labels"].tolist():
        masked = [label != -100 for label in row]
        masked_any |= any(masked)
        word = []
        for token, is_masked in zip(tokens + ["[END]"], masked + [False]):
            if not token.startswith("##") and word:
                assert len(set(word)) == 1, f"a word was partly masked: {tokens}"
                word = []
            word.append(is_masked)
    assert masked_any


def test_masked_lm_contradicting_options_exit_2(tmp_path, cli):
    write(tmp_path / "c.txt", "a b c\n")
    recipe = bert_recipe(tmp_path / "r.yaml", "masked-lm", f"  train: {tmp_path / 'c.txt'}\n  line_by_line: true\n  block_size: 64\n", "  max_steps: 1\n")
    result = cli("finetune", recipe)
    assert result.exit_code == 2
    assert "data.block_size" in result.stderr and "line_by_line" in result.stderr


# --------------------------------------------------------------------------------------------
# question-answering

NAMES = ["zorb", "quix", "plom", "vrell", "drax", "yelm", "kront", "snib", "frum", "glav"]


def qa_rows(n: int, seed: int, *, unanswerable_every: int = 0, long_every: int = 0) -> list[dict]:
    """Contexts of filler words with one 'the secret word is X .' sentence; the question asks for X.

    Every `unanswerable_every`-th context has no secret sentence (SQuAD v2: answers empty); every
    `long_every`-th context puts it after ~70 filler words, past the first 64-token window.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        before = rng.sample(FILLER, rng.randint(1, 6))
        if long_every and i % long_every == 0:
            before = [rng.choice(FILLER) for _ in range(70)]
        after = rng.sample(FILLER, rng.randint(1, 6))
        word = rng.choice(NAMES)
        unanswerable = unanswerable_every and i % unanswerable_every == 1
        prefix = " ".join(before) + " "
        secret = "" if unanswerable else f"the secret word is {word} . "
        context = prefix + secret + " ".join(after)
        answers = {"text": [], "answer_start": []} if unanswerable else {"text": [word], "answer_start": [len(prefix) + len("the secret word is ")]}
        rows.append({"id": f"q{seed}-{i}", "question": "what is the secret word ?", "context": context, "answers": answers})
    return rows


def squad_json(path: Path, rows: list[dict]) -> Path:
    """The official nested SQuAD v2.0 layout."""
    paragraphs = [
        {"context": r["context"], "qas": [{"id": r["id"], "question": r["question"], "is_impossible": not r["answers"]["text"],
                                           "answers": [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])]}]}
        for r in rows
    ]
    return write(path, json.dumps({"version": "v2.0", "data": [{"title": "toy", "paragraphs": paragraphs}]}))


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qa")
    jsonl(tmp / "train.jsonl", qa_rows(400, 0, unanswerable_every=5, long_every=7))
    dev = qa_rows(40, 1, unanswerable_every=5, long_every=7)
    squad_json(tmp / "dev.json", dev)
    recipe = bert_recipe(
        tmp / "qa.yaml", "question-answering",
        f"  train: {tmp / 'train.jsonl'}\n  validation: {tmp / 'dev.json'}\n"
        "  max_length: 64\n  doc_stride: 24\n  max_answer_length: 5\n  version_2: true\n",
        # group_by_length: transformers 5 then length-groups evaluation too, which QA post-processing must not see
        "  num_train_epochs: 4\n  learning_rate: 3.0e-3\n  per_device_train_batch_size: 16\n  eval_strategy: 'no'\n  logging_steps: 20\n"
        "  train_sampling_strategy: group_by_length\n",
        extra_model="",
    )
    finetune(recipe)
    return tmp / "run", dev


def test_qa_learns_to_extract_spans_incl_long_contexts_and_no_answer(qa_run):
    run, dev = qa_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_exact_match"] >= 80, metrics
    assert metrics["eval_NoAns_exact_match"] >= 80, metrics  # unanswerable questions answered ""
    assert "eval_loss" in metrics


def test_qa_long_context_answer_found_in_second_window(qa_run):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from hf_toolkit.core import rundir
    from hf_toolkit.tasks import question_answering

    run, dev = qa_run
    long_rows = [r for i, r in enumerate(dev) if i % 7 == 0 and r["answers"]["text"]]
    tokenizer = AutoTokenizer.from_pretrained(run)
    settings = question_answering.settings(rundir.open_run(run).recipe)
    for row in long_rows:
        windows = question_answering.encode(tokenizer, [row["question"]], [row["context"]], settings)
        assert len(windows["input_ids"]) >= 2  # the context really is cut into windows
    model = AutoModelForQuestionAnswering.from_pretrained(run)
    answers = question_answering.answer_questions(model, tokenizer, [r["question"] for r in long_rows], [r["context"] for r in long_rows], settings)
    assert [a.text for a in answers] == [r["answers"]["text"][0] for r in long_rows]


def test_qa_predict_json_answers_are_substrings_of_the_context(qa_run, cli):
    run, dev = qa_run
    args = []
    for row in dev[:6]:
        args += ["--question", row["question"], "--context", row["context"]]
    result = cli("predict", "--model", run, *args, "--json")
    assert result.exit_code == 0, result
    records = json.loads(result.stdout)
    assert len(records) == 6
    for record, row in zip(records, dev[:6]):
        assert set(record) == {"question", "context", "answer", "score", "start", "end"}
        assert record["answer"] in record["context"]
        if record["answer"]:
            assert record["context"][record["start"] : record["end"]] == record["answer"]
        assert record["answer"] == (row["answers"]["text"] or [""])[0]


def test_qa_predict_plain_no_answer_shows_no_character_span(qa_run, cli):
    """A SQuAD v2 "no answer" prints its score but no "chars -1--1" span."""
    run, dev = qa_run
    row = next(r for r in dev if not r["answers"]["text"])
    result = cli("predict", "--model", run, "--question", row["question"], "--context", row["context"])
    assert result.exit_code == 0, result
    answer_line = result.stdout.strip().splitlines()[-1]
    assert answer_line.startswith("A: (no answer)\t(score ") and "chars" not in answer_line, result.stdout


def test_qa_task_predict_scores_with_squad_metrics(qa_run):
    from datasets import Dataset

    from hf_toolkit import metrics
    from hf_toolkit.core import rundir
    from hf_toolkit.core.data import eval_rows
    from hf_toolkit.tasks import TASKS

    task = TASKS["question-answering"]
    run, dev = qa_run
    loaded = rundir.open_run(run)
    recipe = loaded.recipe
    dataset = eval_rows(Dataset.from_list(dev), recipe.data, task.roles, task.optional_roles, where="dev", how_to_map="")
    model, tokenizer = rundir.load_model(loaded)
    predictions, references = task.predict(model, tokenizer, recipe, dataset, None)
    assert set(predictions) == set(references) == {r["id"] for r in dev}
    scores = metrics.compute(task.eval_metrics, predictions, references)
    assert scores["exact_match"] >= 80


def test_qa_output_loads_in_plain_transformers(qa_run):
    from transformers import AutoModelForQuestionAnswering

    run, _ = qa_run
    assert type(AutoModelForQuestionAnswering.from_pretrained(run)).__name__ == "BertForQuestionAnswering"


def test_qa_unanswerable_without_version_2_exits_2(tmp_path, cli):
    jsonl(tmp_path / "train.jsonl", qa_rows(10, 0, unanswerable_every=3))
    recipe = bert_recipe(tmp_path / "r.yaml", "question-answering", f"  train: {tmp_path / 'train.jsonl'}\n  max_length: 64\n  doc_stride: 16\n", "  max_steps: 1\n")
    result = cli("finetune", recipe)
    assert result.exit_code == 2
    assert "version_2" in result.stderr


def test_qa_misplaced_answer_start_exits_2(tmp_path, cli):
    rows = qa_rows(4, 0)
    rows[2]["answers"]["answer_start"] = [0]
    jsonl(tmp_path / "train.jsonl", rows)
    recipe = bert_recipe(tmp_path / "r.yaml", "question-answering", f"  train: {tmp_path / 'train.jsonl'}\n  max_length: 64\n  doc_stride: 16\n", "  max_steps: 1\n")
    result = cli("finetune", recipe)
    assert result.exit_code == 2
    assert "answer_start" in result.stderr and rows[2]["id"] in result.stderr


def test_qa_doc_stride_not_below_max_length_exits_2(tmp_path, cli):
    jsonl(tmp_path / "train.jsonl", qa_rows(4, 0))
    recipe = bert_recipe(tmp_path / "r.yaml", "question-answering", f"  train: {tmp_path / 'train.jsonl'}\n  max_length: 64\n  doc_stride: 64\n", "  max_steps: 1\n")
    result = cli("finetune", recipe)
    assert result.exit_code == 2
    assert "data.doc_stride" in result.stderr


def test_qa_num_labels_other_than_two_exits_2(tmp_path, cli):
    """Issue 21.8: num_labels is a setting now; the QA head's start and end logits need exactly 2."""
    jsonl(tmp_path / "train.jsonl", qa_rows(4, 0))
    recipe = bert_recipe(tmp_path / "r.yaml", "question-answering", f"  train: {tmp_path / 'train.jsonl'}\n", "  max_steps: 1\n")
    recipe.write_text(recipe.read_text().replace(TINY_BERT, TINY_BERT[:-1] + ", num_labels: 3}"))
    result = cli("finetune", recipe, "--check")
    assert result.exit_code == 2, result
    assert "r.yaml:6: model.config.num_labels: the QA head scores two things per token" in result.stderr


def test_nested_squad_json_loads_as_rows(tmp_path):
    from hf_toolkit.core.data import load_source
    from hf_toolkit.recipe.schema import DataSource

    rows = qa_rows(6, 3, unanswerable_every=3)
    dataset = load_source(DataSource(file=str(squad_json(tmp_path / "s.json", rows))))
    assert len(dataset) == 6
    assert dataset[0]["answers"] == rows[0]["answers"]
    assert dataset[1]["answers"] == {"text": [], "answer_start": []}
    assert dataset["context"] == [r["context"] for r in rows]


def test_settings_an_encoder_task_cannot_use_exit_2(tmp_path, cli):
    jsonl(tmp_path / "train.jsonl", qa_rows(4, 0))
    recipe = bert_recipe(
        tmp_path / "r.yaml", "question-answering",
        f"  train: {tmp_path / 'train.jsonl'}\n  null_score_threshold: 1.0\n  normalize_whitespace: true\n", "  max_steps: 1\n",
    )
    write(recipe, recipe.read_text() + "generation: {num_beams: 4}\n")
    result = cli("finetune", recipe)
    assert result.exit_code == 2
    assert "generation.num_beams" in result.stderr and "data.null_score_threshold" in result.stderr
    assert "data.normalize_whitespace: would change the contexts" in result.stderr


def test_hftk_eval_model_mode_scores_qa_and_classification_runs(qa_run, classifier_run, cli):
    qa, _ = qa_run
    result = cli("eval", "--model", qa, "--data", qa.parent / "dev.json", "--json")
    assert result.exit_code == 0, result
    assert json.loads(result.stdout.strip().splitlines()[-1])["exact_match"] >= 80
    classifier, tmp, _ = classifier_run
    jsonl(tmp / "test.jsonl", sentiment_rows(40, 9))
    result = cli("eval", "--metric", "accuracy", "--model", classifier, "--data", tmp / "test.jsonl", "--json")
    assert result.exit_code == 0, result
    assert json.loads(result.stdout.strip().splitlines()[-1])["accuracy"] >= 0.9


def test_eval_column_mistakes_fail_before_the_model_loads_and_set_maps_them(classifier_run, cli, monkeypatch):
    from hf_toolkit.core import rundir

    classifier, tmp, _ = classifier_run
    rows = [{"review": r["sentence"], "sentiment": r["sentiment"]} for r in sentiment_rows(30, 11)]
    jsonl(tmp / "reviews.jsonl", rows)
    with monkeypatch.context() as patched:
        def no_model(*args, **kwargs):
            raise AssertionError("the model must not load before the columns are checked")

        patched.setattr(rundir, "load_model", no_model)
        result = cli("eval", "--metric", "accuracy", "--model", classifier, "--data", tmp / "reviews.jsonl", "--json")
    assert result.exit_code == 2, result
    assert "column 'text' (role text) not found" in result.stderr
    assert "--set data.columns.text=review" in result.stderr
    mapped = cli("eval", "--metric", "accuracy", "--model", classifier, "--data", tmp / "reviews.jsonl",
                 "--set", "data.columns.text=review", "--json")
    assert mapped.exit_code == 0, mapped
    assert json.loads(mapped.stdout.strip().splitlines()[-1])["accuracy"] >= 0.9


def test_a_classifier_neither_generates_nor_takes_text_metrics(classifier_run, cli):
    run, tmp, _ = classifier_run
    generated = cli("generate", "--model", run, "--prompt", "a wonderful film")
    assert generated.exit_code == 2, generated
    assert "is a text-classification model: it predicts rather than generates text; use hftk predict" in generated.stderr
    jsonl(tmp / "few.jsonl", sentiment_rows(5, 3))
    scored = cli("eval", "--model", run, "--data", tmp / "few.jsonl", "-m", "rouge")
    assert scored.exit_code == 2, scored
    assert "--metric rouge: does not score what a text-classification run predicts; use accuracy, precision, recall, f1" in scored.stderr


# --------------------------------------------------------------------------------------------
# hftk eval --model: the predictions file (issue 15)


def eval_model_json(cli, *args) -> dict:
    result = cli("eval", *args, "--json")
    assert result.exit_code == 0, result
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_eval_model_mode_files_of_two_data_files_do_not_collide_and_hold_inputs_and_label_names(classifier_run, cli):
    """`--data heldout.csv` then `--data heldout.jsonl`: two predictions files and two scores files;
    each row holds the input text, the predicted and the reference label NAMES; files mode scores the
    predictions file to the same accuracy."""
    run, tmp, _ = classifier_run
    rows = sentiment_rows(10, 21)
    csv_rows, jsonl_rows = rows[:4], rows[4:]
    csv = write(tmp / "heldout.csv", "sentence,sentiment\n" + "".join(f"{r['sentence']},{r['sentiment']}\n" for r in csv_rows))
    jsonl(tmp / "heldout.jsonl", jsonl_rows)
    scores = {}
    for data in (csv, tmp / "heldout.jsonl"):
        scores[data.suffix] = eval_model_json(cli, "-m", "accuracy", "--model", run, "--data", data)
    written = sorted((run / "eval").glob("heldout*.predictions.jsonl"))
    assert len(written) == 2, written
    assert len(sorted((run / "eval").glob("heldout*.scores.json"))) == 2
    by_texts = {}
    for path in written:
        out = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        by_texts[tuple(r["text"] for r in out)] = (path, out)
    for suffix, expected in ((".csv", csv_rows), (".jsonl", jsonl_rows)):
        path, out = by_texts[tuple(r["sentence"] for r in expected)]
        assert all(set(r) == {"text", "prediction", "reference"} for r in out), out
        assert [r["reference"] for r in out] == [r["sentiment"] for r in expected]
        assert all(r["prediction"] in {"pos", "neg"} for r in out)
        accuracy = sum(r["prediction"] == r["reference"] for r in out) / len(out)
        assert scores[suffix]["accuracy"] == pytest.approx(accuracy)
        files_mode = eval_model_json(cli, "-m", "accuracy", "--predictions", path, "--references", path,
                                     "--field", "prediction", "--reference-field", "reference")
        assert files_mode["accuracy"] == pytest.approx(accuracy)


def test_eval_model_mode_qa_rows_hold_question_context_and_squad_answers(qa_run, cli):
    """Each QA row: id, question, context, prediction_text, answers (the SQuAD layout), so that the
    file is both readable and a files-mode predictions AND references file with the same scores."""
    run, dev = qa_run
    scores = eval_model_json(cli, "--model", run, "--data", run.parent / "dev.json")
    [path] = [p for p in (run / "eval").glob("dev*.predictions.jsonl")]
    out = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in out] == [r["id"] for r in dev]
    assert [(r["question"], r["context"]) for r in out] == [(r["question"], r["context"]) for r in dev]
    assert [r["answers"] for r in out] == [r["answers"] for r in dev]
    assert all(set(r) == {"id", "question", "context", "prediction_text", "answers"} for r in out)
    assert eval_model_json(cli, "-m", "squad_v2", "--predictions", path, "--references", path) == scores


def test_a_scratch_config_derives_its_settings_from_the_overrides(tmp_path):
    """ModernBERT's layer_types has one entry per layer: set num_hidden_layers on a built default config and
    it kept the default's 22, so a 4-layer run trained to the end and then failed in save_pretrained."""
    from transformers import AutoTokenizer

    from hf_toolkit.core.modeling import build_config
    from hf_toolkit.recipe.schema import ModelSection

    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "bert-base-uncased"))
    section = ModelSection(init="scratch", tokenizer=str(shared_path("tokenizers", "bert-base-uncased")),
                           config={"model_type": "modernbert", "hidden_size": 32, "num_hidden_layers": 2,
                                   "num_attention_heads": 2, "intermediate_size": 64})
    config = build_config(section, tokenizer)
    assert (config.num_hidden_layers, len(config.layer_types), config.hidden_size) == (2, 2, 32)
    assert config.vocab_size == len(tokenizer) and config.pad_token_id == tokenizer.pad_token_id
    config.save_pretrained(tmp_path)  # validates layer_types against num_hidden_layers
    assert json.loads((tmp_path / "config.json").read_text())["num_hidden_layers"] == 2


def test_overrides_a_checkpoints_config_would_refuse_at_save_are_refused_up_front(tmp_path):
    """A checkpoint's config.json lists layer_types; overriding num_hidden_layers alone trained to the end and
    then failed in save_pretrained. The config's own validators now run at the recipe check, with what to set."""
    from transformers import AutoModel, ModernBertConfig

    from hf_toolkit.core.modeling import config_problems
    from hf_toolkit.recipe.schema import ModelSection

    checkpoint = tmp_path / "checkpoint"
    ModernBertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                     pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2).save_pretrained(checkpoint)

    def problems(config: dict) -> list[str]:
        section = ModelSection(name_or_path=str(checkpoint), config=config)
        return [f"{'.'.join(p.key)}: {p.message}" for p in config_problems(section, AutoModel)]

    assert problems({"num_hidden_layers": 2}) == [
        "model.config: `num_hidden_layers` (2) must be equal to the number of `layer_types` (3): the checkpoint's "
        "config.json sets the other one; set both in model.config (layer_types: one entry per layer), or the run "
        "would train and then fail to save its config"]
    assert [p for p in config_problems(ModelSection(name_or_path=str(checkpoint), config={
        "num_hidden_layers": 2, "layer_types": ["full_attention", "sliding_attention"]}), AutoModel)] == []
