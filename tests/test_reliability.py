"""Never lose a run (issue 12): bad data caught before training with file and line, no silent
overwrite, the run lock, exact resume after a kill, refusal of a changed recipe, graceful stop on
SIGTERM / Ctrl-C (one process and ``--nproc 2``), NaN loss, safe loading.

The training tests run real ``hftk finetune`` processes on a tiny scratch GPT-2 (one layer, 16-wide,
a 300-token BPE) for a few steps, so the whole file takes well under two minutes on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------
# Bad data: exit 2 with the file and the line or row, before any model loads

CLASSIFIER = """\
task: text-classification
model:
  init: scratch
  train_tokenizer: {{vocab_size: 300}}
  config: {{model_type: bert, num_hidden_layers: 1, hidden_size: 16, num_attention_heads: 2, intermediate_size: 32}}
data:
  train: {train}
{data}training:
  output_dir: out
  max_steps: 1
  save_strategy: 'no'
"""


def classifier(tmp_path: Path, train: str, data: str = "") -> Path:
    return write(tmp_path / "recipe.yaml", CLASSIFIER.format(train=train, data=data))


def assert_user_error(result, *expected: str, out: Path | None = None) -> None:
    assert result.exit_code == 2, result
    for text in expected:
        assert text in result.stderr, (text, result.stderr)
    assert "Traceback" not in result.stderr
    if out is not None:
        assert not out.exists(), "nothing may be written before the data is known to be good"


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_malformed_jsonl_names_its_line(here, cli):
    write(here / "train.jsonl", '{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"\n{"text": "x", "label": "neg"}\n')
    result = cli("finetune", classifier(here, "train.jsonl"))
    assert_user_error(result, "train.jsonl:2: not valid JSON", out=here / "out")


def test_malformed_json_document_names_its_line(here, cli):
    write(here / "train.json", '[{"text": "good", "label": "pos"},\n {"text": "bad" "label": "neg"}]\n')
    result = cli("finetune", classifier(here, "train.json"))
    assert_user_error(result, "train.json:2: not valid JSON")


def test_non_utf8_bytes_name_the_line_and_the_encoding_option(here, cli):
    (here / "train.csv").write_bytes(b"text,label\ngood,pos\ncaf\xe9 au lait,neg\n")
    result = cli("finetune", classifier(here, "train.csv"))
    assert_user_error(result, "train.csv:3: not utf-8 text", "data.encoding", out=here / "out")

    from hf_toolkit.data import load_splits
    from hf_toolkit.tasks import TASKS

    data = TASKS["text-classification"].Data.model_validate({"train": "train.csv", "encoding": "latin-1"})
    assert load_splits(data, ("text", "label"), seed=0)["train"]["text"] == ["good", "café au lait"]


def test_ragged_csv_and_tsv_rows_name_their_line(here, cli):
    write(here / "train.csv", "text,label\ngood,pos\nbad,neg,extra\nok,pos\n")
    assert_user_error(cli("finetune", classifier(here, "train.csv")), "train.csv:3: 3 fields where the header has 2 (text, label)")
    write(here / "train.tsv", "text\tlabel\ngood\tpos\nbad\tneg\nshort\n")
    assert_user_error(cli("finetune", classifier(here, "train.tsv")), "train.tsv:4: 1 fields where the header has 2")


def test_empty_texts_after_cleaning_are_counted_and_can_be_dropped(here, cli):
    rows = [{"text": "good film", "label": "pos"}, {"text": "<br/>", "label": "neg"}, {"text": "bad", "label": "neg"},
            {"text": "   ", "label": "pos"}, {"text": "fine", "label": "pos"}]
    write(here / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    recipe = classifier(here, "train.jsonl", "  strip_html: true\n  normalize_whitespace: true\n")
    assert_user_error(cli("finetune", recipe), "data.train (train.jsonl): 2 of 5 rows have an empty text (after cleaning), rows 2, 4",
                      "data.drop_empty: true", out=here / "out")

    from hf_toolkit.data import load_splits
    from hf_toolkit.tasks import TASKS

    data = TASKS["text-classification"].Data.model_validate(
        {"train": "train.jsonl", "strip_html": True, "normalize_whitespace": True, "drop_empty": True})
    assert load_splits(data, ("text", "label"), seed=0)["train"]["text"] == ["good film", "bad", "fine"]


def test_labels_outside_the_declared_set_name_their_rows(here, cli):
    rows = [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}, {"text": "c", "label": "neutral"}]
    write(here / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    result = cli("finetune", classifier(here, "train.jsonl", "  labels: [neg, pos]\n"))
    assert_user_error(result, "data.train (train.jsonl): 1 row(s) with a label outside data.labels [neg, pos]: row 3 ('neutral')",
                      out=here / "out")
    twice = cli("finetune", classifier(here, "train.jsonl", "  labels: [neg, neg]\n"), "--check")
    assert_user_error(twice, "recipe.yaml:8: data.labels: labels are listed twice")


def test_declared_labels_fix_the_ids(here):
    from datasets import Dataset, DatasetDict

    from hf_toolkit.checks import validate_recipe
    from hf_toolkit.tasks import TASKS

    recipe = validate_recipe({"task": "text-classification", "model": {"name_or_path": "./m"},
                              "data": {"train": "t.jsonl", "labels": ["pos", "neg"]}})
    config = TASKS["text-classification"].model_config(recipe, DatasetDict(train=Dataset.from_list([{"text": "a", "label": "neg"}] * 2)))
    assert config["id2label"] == {0: "pos", 1: "neg"}  # the recipe's order, even for a label the data lacks


def test_empty_validation_split_is_named(here, cli):
    write(here / "train.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", "label": "neg"}\n')
    write(here / "dev.jsonl", "\n\n")
    result = cli("finetune", classifier(here, "train.jsonl", "  validation: dev.jsonl\n"))
    assert_user_error(result, "dev.jsonl: no rows (the file holds only blank lines)", out=here / "out")
    write(here / "test.csv", "text,label\n")
    result = cli("finetune", classifier(here, "train.jsonl", "  test: test.csv\n"))
    assert_user_error(result, "test.csv: no rows, only the header line", out=here / "out")
