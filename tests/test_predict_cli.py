"""``hftk predict`` on plain Hugging Face model dirs (no hftk recipe: the task comes from config.architectures).

The models are tiny and untrained (built from config and saved), so these tests check the shape of
the output, the task inference and the input errors; tests/test_encoder_tasks.py checks that
trained models predict the right answers.
"""

from __future__ import annotations

import json

import pytest
from conftest import shared_path, write


def save_tiny(tmp_path_factory, auto_class_name: str, **config_kwargs):
    import transformers
    from transformers import AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "bert-base-uncased"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, **config_kwargs)
    model = getattr(transformers, auto_class_name).from_config(config)
    out = tmp_path_factory.mktemp(auto_class_name)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory, "AutoModelForSequenceClassification", num_labels=3,
                     id2label={0: "neg", 1: "neutral", 2: "pos"}, label2id={"neg": 0, "neutral": 1, "pos": 2})


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory, "AutoModelForQuestionAnswering")


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory, "AutoModelForMaskedLM")


def test_classifier_json_one_object_per_text(classifier_dir, cli):
    result = cli("predict", "--model", classifier_dir, "--text", "one", "--text", "two", "--json")
    assert result.exit_code == 0, result
    records = json.loads(result.stdout)
    assert [r["text"] for r in records] == ["one", "two"]
    for record in records:
        assert record["label"] in {"neg", "neutral", "pos"}
        assert set(record["probabilities"]) == {"neg", "neutral", "pos"}
        assert record["score"] == record["probabilities"][record["label"]]


def test_classifier_text_pairs_and_file(classifier_dir, cli, tmp_path):
    result = cli("predict", "--model", classifier_dir, "--text", "a", "--text-pair", "b", "--json")
    assert result.exit_code == 0, result
    assert json.loads(result.stdout)[0]["text_pair"] == "b"
    csv = write(tmp_path / "in.csv", "text,text_pair\nfirst,second\nthird,fourth\n")
    from_file = cli("predict", "--model", classifier_dir, "--file", csv, "--json")
    assert from_file.exit_code == 0, from_file
    assert [(r["text"], r["text_pair"]) for r in json.loads(from_file.stdout)] == [("first", "second"), ("third", "fourth")]


def test_classifier_plain_output_is_label_tab_score_tab_text(classifier_dir, cli):
    result = cli("predict", "--model", classifier_dir, "--text", "hello")
    assert result.exit_code == 0, result
    label, score, text = result.stdout.strip().split("\t")
    assert label in {"neg", "neutral", "pos"} and 0 < float(score) <= 1 and text == "hello"


def test_qa_json_answers_are_context_substrings(qa_dir, cli):
    context = "Normandy is a region in France. It is named after the Normans."
    result = cli("predict", "--model", qa_dir, "--question", "Where is Normandy?", "--question", "Who?", "--context", context, "--json")
    assert result.exit_code == 0, result
    records = json.loads(result.stdout)
    assert len(records) == 2  # one --context serves every --question
    for record in records:
        assert set(record) == {"question", "context", "answer", "score", "start", "end"}
        assert record["answer"] and record["answer"] == context[record["start"] : record["end"]]


def test_fill_mask_top_k(mlm_dir, cli):
    result = cli("predict", "--model", mlm_dir, "--text", "paris is the [MASK] of [MASK] .", "--top-k", "4", "--json")
    assert result.exit_code == 0, result
    [record] = json.loads(result.stdout)
    assert len(record["fills"]) == 2 and all(len(fills) == 4 for fills in record["fills"])
    scores = [fill["score"] for fill in record["fills"][0]]
    assert scores == sorted(scores, reverse=True)


def test_causal_lm_points_to_generate(tmp_path, cli):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=100)).save_pretrained(tmp_path / "gpt")
    result = cli("predict", "--model", tmp_path / "gpt", "--text", "hi")
    assert result.exit_code == 2
    assert "hftk generate" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", "a", "--text", "b", "--text-pair", "c"], "--text-pair"),
        ([], "nothing to predict"),
        (["--question", "q", "--context", "c"], "--question"),
    ],
)
def test_classifier_input_mistakes_exit_2(classifier_dir, cli, args, message):
    result = cli("predict", "--model", classifier_dir, *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_qa_mismatched_questions_and_contexts_exit_2(qa_dir, cli):
    result = cli("predict", "--model", qa_dir, "--question", "a", "--question", "b", "--context", "x", "--context", "y", "--context", "z")
    assert result.exit_code == 2
    assert "--context" in result.stderr


def test_file_without_the_needed_column_names_the_columns(classifier_dir, cli, tmp_path):
    rows = write(tmp_path / "rows.jsonl", '{"review": "great"}\n')
    result = cli("predict", "--model", classifier_dir, "--file", rows)
    assert result.exit_code == 2
    assert "'text'" in result.stderr and "review" in result.stderr


def test_missing_model_dir_exits_2(cli, tmp_path):
    result = cli("predict", "--model", tmp_path / "nope", "--text", "x")
    assert result.exit_code == 2
    assert "nope" in result.stderr
