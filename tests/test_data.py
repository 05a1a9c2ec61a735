"""Data loading from every local file type, column mapping, cleaning and validation splits."""

from __future__ import annotations

import json

import pytest

from hf_toolkit.core.data import clean_text, load_splits
from hf_toolkit.errors import DataError
from hf_toolkit.recipe.schema import DataSection

ROWS = [{"sentence": f"text number {i}", "y": i % 2} for i in range(20)]


def write_rows(path, rows):
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix in (".csv", ".tsv"):
        sep = "," if suffix == ".csv" else "\t"
        path.write_text("sentence" + sep + "y\n" + "".join(f"{r['sentence']}{sep}{r['y']}\n" for r in rows))
    elif suffix == ".parquet":
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_each_tabular_file_type_loads_and_maps_columns(tmp_path, suffix):
    path = write_rows(tmp_path / f"train{suffix}", ROWS)
    section = DataSection(train=str(path), columns={"text": "sentence", "label": "y"})
    splits = load_splits(section, ("text", "label"), seed=0)
    assert splits["train"].column_names == ["text", "label"]
    assert splits["train"]["text"][:2] == ["text number 0", "text number 1"]
    assert splits["train"]["label"][:4] == [0, 1, 0, 1]


def test_text_file_keeps_line_breaks(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("First Citizen:\nBefore we proceed\n\nAll:\nSpeak.\n")
    splits = load_splits(DataSection(train=str(path)), ("text",), seed=0, nonempty_roles=())  # a blank line: a paragraph break
    assert "".join(splits["train"]["text"]) == path.read_text()


def test_missing_column_names_the_columns_that_exist(tmp_path):
    path = write_rows(tmp_path / "train.jsonl", ROWS)
    with pytest.raises(DataError) as caught:
        load_splits(DataSection(train=str(path), columns={"label": "y"}), ("text", "label"), seed=0)
    message = str(caught.value)
    assert "column 'text' (role text) not found" in message
    assert "Columns in the file: sentence, y" in message
    assert "data.columns" in message


def test_mapped_column_typo_gets_did_you_mean(tmp_path):
    path = write_rows(tmp_path / "train.jsonl", ROWS)
    with pytest.raises(DataError, match="column 'sentense' .*did you mean 'sentence'"):
        load_splits(DataSection(train=str(path), columns={"text": "sentense"}), ("text",), seed=0)


def test_validation_split_is_carved_reproducibly(tmp_path):
    path = write_rows(tmp_path / "train.jsonl", ROWS)
    section = DataSection(train=str(path), validation_split=0.25, columns={"text": "sentence"})
    first = load_splits(section, ("text",), seed=3)
    second = load_splits(section, ("text",), seed=3)
    assert (len(first["train"]), len(first["validation"])) == (15, 5)
    assert list(first["validation"]["text"]) == list(second["validation"]["text"])
    assert not set(first["validation"]["text"]) & set(first["train"]["text"])


def test_cleaning_strips_html_and_whitespace(tmp_path):
    rows = [{"text": "<p>Great&nbsp;movie!</p>\n<br/>Loved   it &amp; more"}]
    path = write_rows(tmp_path / "train.jsonl", rows)
    section = DataSection(train=str(path), strip_html=True, normalize_whitespace=True)
    splits = load_splits(section, ("text",), seed=0)
    assert list(splits["train"]["text"]) == ["Great movie! Loved it & more"]
    assert clean_text("a  <b>b</b>\tc", strip_html=False, normalize_whitespace=True) == "a <b>b</b> c"


def test_sample_limits(tmp_path):
    path = write_rows(tmp_path / "train.jsonl", ROWS)
    section = DataSection(train=str(path), validation=str(path), max_train_samples=4, max_eval_samples=2, columns={"text": "sentence"})
    splits = load_splits(section, ("text",), seed=0)
    assert (len(splits["train"]), len(splits["validation"])) == (4, 2)


def test_empty_file_is_a_data_error(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match="train.jsonl is empty"):
        load_splits(DataSection(train=str(path)), ("text",), seed=0)


def test_hub_dataset_offline_fails_fast_naming_the_split(tmp_path, monkeypatch):
    import contextlib

    import datasets
    from huggingface_hub import constants

    from hf_toolkit.core import hub

    monkeypatch.setattr(hub, "reachable", lambda: False)
    calls: list[str] = []
    real_cache_only = hub.cache_only

    @contextlib.contextmanager
    def recording(active=True):
        calls.append(f"cache only: {active}")
        with real_cache_only(active):
            calls.append(f"inside: {constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE}")
            yield

    monkeypatch.setattr(hub, "cache_only", recording)
    before = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    data = DataSection(train={"path": "hftk-test/no-such-dataset", "name": "plain"})
    with pytest.raises(DataError) as caught:
        load_splits(data, ("text",), seed=0)
    message = str(caught.value)
    assert message.startswith("data.train (load_dataset('hftk-test/no-such-dataset', 'plain')): cannot load dataset")
    assert "hub is unreachable" in message and "point the recipe at local files" in message
    assert calls == ["cache only: True", "inside: True"]
    assert (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == before, "the offline switch is restored"


def test_packaged_builder_with_local_files_never_asks_the_hub(tmp_path, monkeypatch):
    from hf_toolkit.core import hub

    monkeypatch.setattr(hub, "reachable", lambda: pytest.fail("a local json file needs no hub probe"))
    path = write_rows(tmp_path / "rows.jsonl", ROWS)
    splits = load_splits(DataSection(train={"path": "json", "data_files": str(path)}, columns={"text": "sentence"}), ("text",), seed=0)
    assert splits["train"]["text"][:2] == ["text number 0", "text number 1"]


def test_missing_column_hint_suggests_the_column_named_as_the_role(tmp_path):
    """Issue 21.9: a file with a `text` column gets `{text: text}`, not its first column."""
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps({"row_id": i, "text": f"t {i}", "label": i % 2}) + "\n" for i in range(4)))
    with pytest.raises(DataError) as caught:
        load_splits(DataSection(train=str(path), columns={"text": "sentence"}), ("text", "label"), seed=0)
    assert "data.columns: {text: text}" in str(caught.value)
    with pytest.raises(DataError) as caught:  # no column named as the role: the one named like the mapped column
        load_splits(DataSection(train=str(write_rows(tmp_path / "t.jsonl", ROWS)), columns={"text": "sentences"}),
                    ("text",), seed=0)
    assert "data.columns: {text: sentence}" in str(caught.value)


@pytest.mark.parametrize("suffix, lines", [(".csv", "lines 5, 8"), (".jsonl", "lines 4, 6")])
def test_rows_without_a_label_name_the_file_and_lines(tmp_path, suffix, lines):
    """Issue 21.18: a missing label is found as the split loads, with its rows and the file's lines."""
    if suffix == ".csv":  # header, a quoted text spanning two lines, then a row without a label
        text = 'text,label\n"good,\nfine",pos\nbad,neg\nmeh,\nok,pos\n\nnope,\n'
    else:  # a blank line before the third row
        text = '{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n\n{"text": "meh", "label": null}\n' \
               '{"text": "ok", "label": "pos"}\n{"text": "nope"}\n'
    path = tmp_path / f"train{suffix}"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        load_splits(DataSection(train=str(path)), ("text", "label"), seed=0)
    message = str(caught.value)
    assert f"train{suffix}): " in message and message.startswith("data.train (")
    assert f"2 of 5 rows have a missing or empty label (after cleaning), rows 3, 5 ({lines})" in message
    assert "data.drop_empty: true" in message
    kept = load_splits(DataSection(train=str(path), drop_empty=True), ("text", "label"), seed=0)
    assert kept["train"]["label"] == ["pos", "neg", "pos"]


def test_eval_rows_without_a_gold_label_name_their_rows():
    """Issue 21.18, model mode: `hftk eval --model` needs each row's gold label, and says which rows lack one."""
    from types import SimpleNamespace

    from datasets import Dataset

    from hf_toolkit.tasks.text_classification import reference_ids

    config = SimpleNamespace(label2id={"neg": 0, "pos": 1})
    rows = Dataset.from_dict({"text": ["a", "b", "c"], "label": ["pos", None, "neg"]})
    with pytest.raises(DataError, match=r"--data: 1 of 3 rows have no label, rows 2;"):
        reference_ids(config, rows)
