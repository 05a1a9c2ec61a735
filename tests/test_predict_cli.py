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


def test_any_role_is_given_by_name_with_input(classifier_dir, qa_dir, cli):
    """--input ROLE=VALUE gives any role (a new task's too) without an option of its own; the common
    roles' options stay and mix with it; a role the model does not take is refused with those it does."""
    flags = cli("predict", "--model", classifier_dir, "--text", "a", "--text-pair", "b=c", "--json")
    named = cli("predict", "--model", classifier_dir, "--input", "text=a", "--input", "text_pair=b=c", "--json")
    mixed = cli("predict", "--model", classifier_dir, "--text", "a", "--input", "text_pair=b=c", "--json")
    assert flags.exit_code == named.exit_code == mixed.exit_code == 0, (named, mixed)
    assert json.loads(named.stdout) == json.loads(mixed.stdout) == json.loads(flags.stdout)
    assert json.loads(named.stdout)[0]["text_pair"] == "b=c", "the value runs to the end, = included"
    qa = cli("predict", "--model", qa_dir, "--input", "question=Where?", "--input", "question=Who?",
             "--context", "Normandy is in France.", "--json")
    assert qa.exit_code == 0 and [r["question"] for r in json.loads(qa.stdout)] == ["Where?", "Who?"], qa
    for model, args, message in (
        (classifier_dir, ["--input", "label=pos"], ("this is a text-classification model: give --text (optionally --text-pair) "
                                                   "(or --file), not --input label")),
        (classifier_dir, ["--input", "txt=a"], "not --input txt (did you mean 'text'?)"),
        (qa_dir, ["--input", "=Where?"], ("--input '=Where?': give ROLE=VALUE, e.g. --input question=... "
                                         "(this model takes question, context)")),
        (qa_dir, ["--input", "question=a", "--input", "question=b", "--input", "context=x", "--input", "context=y",
                  "--input", "context=z"], "2 --question but 3 --context; give one of each per input"),
    ):
        refused = cli("predict", "--model", model, *args)
        assert refused.exit_code == 2 and message in refused.stderr, (args, refused)


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


def test_an_empty_text_to_classify_exits_2_before_the_model_loads(classifier_dir, cli, tmp_path, monkeypatch):
    from hf_toolkit.core import rundir

    monkeypatch.setattr(rundir, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    result = cli("predict", "--model", classifier_dir, "--text", "")
    assert result.exit_code == 2, result
    assert "--text: the text is empty; a text-classification model needs a non-empty text" in result.stderr
    second = cli("predict", "--model", classifier_dir, "--text", "fine", "--text", "  ")
    assert second.exit_code == 2 and "--text 2: the text is empty" in second.stderr, second
    # A file row with a pair but no text (a row with neither is skipped as blank).
    rows = write(tmp_path / "pairs.jsonl", '{"text": "a", "text_pair": "b"}\n{"text": "", "text_pair": "c"}\n')
    in_file = cli("predict", "--model", classifier_dir, "--file", rows)
    assert in_file.exit_code == 2 and "pairs.jsonl: row 2: the text is empty" in in_file.stderr, in_file


def test_qa_mismatched_questions_and_contexts_exit_2(qa_dir, cli):
    result = cli("predict", "--model", qa_dir, "--question", "a", "--question", "b", "--context", "x", "--context", "y", "--context", "z")
    assert result.exit_code == 2
    assert "--context" in result.stderr
    assert "2 --question but 3 --context; give one of each per input (or one --context for all)" in result.stderr


def test_inputs_name_a_role_as_the_caller_spells_it():
    from hf_toolkit.apply.prediction import Inputs, read_inputs
    from hf_toolkit.errors import HftkError
    from hf_toolkit.tasks import TASKS

    qa = TASKS["question-answering"]
    with pytest.raises(HftkError, match="give question and context \\(or --file\\), not text$"):
        read_inputs(qa, Inputs({"text": ["x"]}), recipe=None)  # a program: the role's name
    flags = {"text": "--text", "question": "--question", "context": "--context"}
    with pytest.raises(HftkError, match="give --question and --context \\(or --file\\), not --text$"):
        read_inputs(qa, Inputs({"text": ["x"]}, flags=flags), recipe=None)


def test_inputs_are_cleaned_as_the_training_text_was_but_a_mask_token_is_kept(tmp_path):
    """A run whose recipe cleans HTML cleans its inputs the same way; fill-mask inputs are left as given, since
    strip_html would take RoBERTa's `<mask>` for a tag."""
    from hf_toolkit.apply.prediction import Inputs, read_inputs
    from hf_toolkit.recipe.checks import validate_recipe
    from hf_toolkit.tasks import TASKS

    def recipe(task: str):
        return validate_recipe({"task": task, "model": {"name_or_path": "./m"},
                                "data": {"train": "t.jsonl", "strip_html": True, "normalize_whitespace": True}})

    given = ["<p>A  <b>fine</b> film</p>", "The capital is <mask>."]
    for file in (False, True):
        inputs = Inputs(file=write(tmp_path / "rows.jsonl", "".join(json.dumps({"text": g}) + "\n" for g in given))) \
            if file else Inputs({"text": given})
        cleaned = read_inputs(TASKS["text-classification"], inputs, recipe("text-classification"))
        assert cleaned["text"] == ["A fine film", "The capital is ."], file
        assert read_inputs(TASKS["masked-lm"], inputs, recipe("masked-lm"))["text"] == given, file


def test_file_without_the_needed_column_names_the_columns(classifier_dir, cli, tmp_path):
    rows = write(tmp_path / "rows.jsonl", '{"review": "great"}\n')
    result = cli("predict", "--model", classifier_dir, "--file", rows)
    assert result.exit_code == 2
    assert "'text'" in result.stderr and "review" in result.stderr


def test_missing_model_dir_exits_2(cli, tmp_path):
    result = cli("predict", "--model", tmp_path / "nope", "--text", "x")
    assert result.exit_code == 2
    assert "nope" in result.stderr


# --------------------------------------------------------------------------------------------
# Issue 15: fill-mask sequences per mask, --file lines, QA with an empty context


@pytest.fixture(scope="module")
def mlm_paris_dir(tmp_path_factory):
    """A tiny fill-mask model whose output bias makes 'paris' the top token at every position."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    out = save_tiny(tmp_path_factory, "AutoModelForMaskedLM")
    model, tokenizer = AutoModelForMaskedLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        model.get_output_embeddings().bias[tokenizer.convert_tokens_to_ids("paris")] = 100.0
    model.save_pretrained(out)
    return out


def test_fill_mask_each_sequence_fills_its_own_mask(mlm_paris_dir, cli):
    """Each fill's sequence is the input with THAT mask filled; the other masks stay the mask token (as
    transformers' fill-mask pipeline shows them); the rest of the text is the input as typed."""
    result = cli("predict", "--model", mlm_paris_dir, "--text", "[MASK] is the [MASK] of France.", "--top-k", "1", "--json")
    assert result.exit_code == 0, result
    [record] = json.loads(result.stdout)
    assert [[fill["token"] for fill in fills] for fills in record["fills"]] == [["paris"], ["paris"]]
    assert [fills[0]["sequence"] for fills in record["fills"]] == [
        "paris is the [MASK] of France.",
        "[MASK] is the paris of France.",
    ]


def test_fill_mask_three_masks_top_k_sequences(mlm_paris_dir, cli):
    text = "a [MASK] b [MASK] c [MASK]"
    result = cli("predict", "--model", mlm_paris_dir, "--text", text, "--top-k", "2", "--json")
    assert result.exit_code == 0, result
    [record] = json.loads(result.stdout)
    parts = text.split("[MASK]")  # ["a ", " b ", " c ", ""]
    assert len(record["fills"]) == 3 and all(len(fills) == 2 for fills in record["fills"])
    for n, fills in enumerate(record["fills"]):
        for fill in fills:
            expected = parts[0] + "".join((fill["token"] if i == n else "[MASK]") + parts[i + 1] for i in range(3))
            assert fill["sequence"] == expected, (n, fill)


def test_txt_file_lines_are_stripped_and_blank_lines_skipped_with_a_count(classifier_dir, cli, tmp_path):
    lines = write(tmp_path / "lines.txt", "first line\n\n  second line  \n   \nthird\n\n")
    result = cli("predict", "--model", classifier_dir, "--file", lines, "--json")
    assert result.exit_code == 0, result
    assert [r["text"] for r in json.loads(result.stdout)] == ["first line", "second line", "third"]
    notes = [line for line in result.stderr.splitlines() if "blank" in line]
    assert len(notes) == 1 and "skipped 3 blank lines" in notes[0] and "lines.txt" in notes[0], result.stderr
    plain = cli("predict", "--model", classifier_dir, "--file", lines)
    assert plain.exit_code == 0, plain
    rows = plain.stdout.split("\n")
    assert rows[-1] == "" and "" not in rows[:-1], plain.stdout  # one line per input, no empty lines
    assert [row.split("\t")[2] for row in rows[:-1]] == ["first line", "second line", "third"]


def test_blank_rows_of_a_jsonl_file_are_skipped_with_a_count(classifier_dir, cli, tmp_path):
    rows = write(tmp_path / "rows.jsonl", '{"text": "one"}\n{"text": ""}\n{"text": "  "}\n{"text": "two"}\n')
    result = cli("predict", "--model", classifier_dir, "--file", rows, "--json")
    assert result.exit_code == 0, result
    assert [r["text"] for r in json.loads(result.stdout)] == ["one", "two"]
    assert "skipped 2 blank rows" in result.stderr


def test_file_of_blank_lines_only_exits_2(classifier_dir, cli, tmp_path):
    lines = write(tmp_path / "blank.txt", "\n  \n\n")
    result = cli("predict", "--model", classifier_dir, "--file", lines)
    assert result.exit_code == 2, result
    assert "blank.txt" in result.stderr and "blank" in result.stderr and "nothing to predict" in result.stderr
    assert "Traceback" not in result.stderr


def test_qa_empty_context_says_empty_context(qa_dir, cli):
    """An empty (or blank) context is not searched: plain output says so; --json gives no span or
    score (null) and no_answer_reason "empty context"; other questions are answered as usual."""
    context = "Normandy is a region in France."
    plain = cli("predict", "--model", qa_dir, "--question", "Where is Normandy?", "--context", "")
    assert plain.exit_code == 0, plain
    assert "empty context" in plain.stdout and "-1" not in plain.stdout, plain.stdout
    result = cli("predict", "--model", qa_dir, "--question", "Where?", "--context", "  ",
                 "--question", "Where is Normandy?", "--context", context, "--json")
    assert result.exit_code == 0, result
    empty, answered = json.loads(result.stdout)
    assert empty == {"question": "Where?", "context": "  ", "answer": "", "score": None, "start": None, "end": None,
                     "no_answer_reason": "empty context"}
    assert set(answered) == {"question", "context", "answer", "score", "start", "end"}
    assert answered["answer"] and answered["answer"] == context[answered["start"] : answered["end"]]
