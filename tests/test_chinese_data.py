"""Chinese data: GB18030/GBK files read with data.encoding (and the hint that names gb18030 when a
file's bytes look like it), the warning when a vocabulary turns the text into [UNK], and tiny
end-to-end runs of the Chinese recipes' shapes: masked-LM pretraining of a ModernBERT from scratch
with the bert-base-chinese vocabulary, then sentiment from that run (recipes/zh-mlm-reviews.yaml ->
recipes/zh-sentiment-offline.yaml), masked-LM continued from it on the first part of a CSV file
(``split: train[:75%]``, as a user adapts the model to the task's own texts while the rest stays
held out), fill-mask and classifier predictions read as Chinese."""

from __future__ import annotations

import csv
import json
import os

import pytest
from conftest import finetune, shared_path, write

from hf_toolkit.core.datafiles import looks_like_gb18030
from hf_toolkit.core.modeling import unknown_token_warning

CHINESE = "这家酒店的服务很好，房间干净，早餐丰富。隔音太差，一晚上没睡好！"

MLM_RECIPE = """\
task: masked-lm
seed: 0
model:
  init: scratch
  tokenizer: {tokenizer}
  config: {{model_type: modernbert, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 48,
            max_position_embeddings: 64, local_attention: 16, cls_token_id: 101, sep_token_id: 102, bos_token_id: 101,
            eos_token_id: 102, sparse_prediction: true, classifier_pooling: mean}}
data:
  train: {reviews}
  columns: {{text: review}}
  block_size: 32
training:
  output_dir: {out}
  max_steps: 3
  per_device_train_batch_size: 8
  learning_rate: 1.0e-3
  save_strategy: 'no'
  report_to: none
  disable_tqdm: true
"""

SENTIMENT_RECIPE = """\
task: text-classification
seed: 0
model:
  name_or_path: {mlm_run}
data:
  train: {train}
  encoding: gb18030
  columns: {{text: review, label: label}}
  validation_split: 0.25
  max_length: 32
training:
  output_dir: {out}
  max_steps: 3
  per_device_train_batch_size: 8
  learning_rate: 1.0e-3
  save_strategy: 'no'
  report_to: none
  disable_tqdm: true
"""


def csv_rows(path, count: int) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [row for _, row in zip(range(count), csv.DictReader(handle))]


def write_csv(path, rows: list[dict[str, str]], encoding: str):
    with open(path, "w", encoding=encoding, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def zh_tokenizer_dir():
    return shared_path("chinese", "tokenizers", "bert-base-chinese")


@pytest.fixture(scope="module")
def gbk_reviews(tmp_path_factory):
    """40 ChnSentiCorp rows written in GB18030, as Chinese Windows tools save them."""
    rows = csv_rows(shared_path("chinese", "chnsenticorp_htl", "train.csv"), 40)
    return write_csv(tmp_path_factory.mktemp("gbk") / "reviews_gbk.csv", rows, "gb18030")


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory, zh_tokenizer_dir):
    tmp = tmp_path_factory.mktemp("zh-mlm")
    reviews = write_csv(tmp / "reviews.csv", csv_rows(shared_path("chinese", "online_shopping_9_cats", "reviews.csv"), 200), "utf-8")
    finetune(write(tmp / "mlm.yaml", MLM_RECIPE.format(tokenizer=zh_tokenizer_dir, reviews=reviews, out=tmp / "run")))
    return tmp / "run"


def test_gb18030_bytes_are_told_from_utf8_and_latin1():
    assert looks_like_gb18030(CHINESE.encode("gbk")) and looks_like_gb18030(("label,review\n1," + CHINESE).encode("gb18030"))
    assert looks_like_gb18030(CHINESE.encode("gbk")[:-1])  # a character cut at the end of the sample
    for text, encoding in (("Le café était très bon, déjà vu. Über straße", "latin-1"),
                           ("“Smart quotes” – and an em dash — cost €5", "cp1252"), (CHINESE, "utf-8"), ("plain ascii", "ascii")):
        assert not looks_like_gb18030(text.encode(encoding)), (text, encoding)


def test_a_gbk_file_read_as_utf8_says_gb18030_and_reads_with_it(cli, gbk_reviews, mlm_run, tmp_path):
    recipe = write(tmp_path / "s.yaml", SENTIMENT_RECIPE.format(mlm_run=mlm_run, train=gbk_reviews, out=tmp_path / "run")
                   .replace("  encoding: gb18030\n", ""))
    result = cli("finetune", recipe, "--dry-run")
    assert result.exit_code == 2 and "not utf-8 text" in result.stderr, result
    assert "look like Chinese in GB18030/GBK: set data.encoding to the file's encoding, gb18030" in result.stderr
    assert "latin-1 or cp1252 would read them as mojibake" in result.stderr


def test_sentiment_from_the_chinese_mlm_run_on_a_gb18030_file(cli, gbk_reviews, mlm_run, tmp_path):
    """The zh-mlm-reviews -> zh-sentiment-offline shape: a classifier starts from the masked-LM run."""
    out = tmp_path / "run"
    finetune(write(tmp_path / "s.yaml", SENTIMENT_RECIPE.format(mlm_run=mlm_run, train=gbk_reviews, out=out)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["eval_accuracy"] <= 1
    result = cli("predict", "--model", out, "--text", "房间干净，服务周到。", "--json")
    assert result.exit_code == 0, result
    [record] = json.loads(result.stdout)
    assert record["text"] == "房间干净，服务周到。" and record["label"] in ("0", "1", 0, 1)
    scored = cli("eval", "--model", out, "--data", gbk_reviews, "--json")  # read in the run's data.encoding
    assert scored.exit_code == 0 and 0 <= json.loads(scored.stdout)["accuracy"] <= 1, scored
    predicted = cli("predict", "--model", out, "--file", gbk_reviews, "--json")
    assert predicted.exit_code == 0 and len(json.loads(predicted.stdout)) == 40, predicted
    wrong = cli("predict", "--model", out, "--file", gbk_reviews, "--encoding", "utf-8")
    assert wrong.exit_code == 2 and "GB18030/GBK: give the file's encoding with --encoding ENCODING, gb18030" in wrong.stderr


CONTINUED_RECIPE = """\
task: masked-lm
seed: 0
model:
  name_or_path: {mlm_run}
data:
  train: {{path: csv, data_files: {train}, split: "train[:75%]"}}
  columns: {{text: review}}
  validation_split: 0.2
  block_size: 32
training:
  output_dir: {out}
  max_steps: 2
  per_device_train_batch_size: 8
  save_strategy: 'no'
  report_to: none
  disable_tqdm: true
"""


def test_masked_lm_continues_from_the_chinese_mlm_run_on_the_first_part_of_a_csv_file(cli, mlm_run, tmp_path):
    """Only the first 75% of the file's rows are read (the rest stay held out); a ModernBERT run saves and loads back."""
    rows = csv_rows(shared_path("chinese", "chnsenticorp_htl", "train.csv"), 40)
    train = write_csv(tmp_path / "hotels.csv", rows, "utf-8")
    recipe = write(tmp_path / "c.yaml", CONTINUED_RECIPE.format(mlm_run=mlm_run, train=train, out=tmp_path / "run"))
    dry = cli("finetune", recipe, "--dry-run")
    assert dry.exit_code == 0, dry
    said = dry.stdout + dry.stderr
    assert "train: 24 rows" in said and "validation: 6 rows" in said, said[-3000:]  # 30 of the 40 rows, split 24/6
    finetune(recipe)
    import hashlib

    card = (tmp_path / "run" / "README.md").read_text(encoding="utf-8")
    assert "load_dataset('csv', None, data_files=" in card and "split='train[:75%]')" in card, card
    assert hashlib.sha256(train.read_bytes()).hexdigest() in card, "the card knows the file by its content"
    again = cli("finetune", recipe, "--dry-run", "--set", f"training.output_dir={tmp_path / 'again'}")
    assert "preprocessing cache: hit (" in again.stdout + again.stderr, "its splits and blocks came from the cache"
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "run")
    assert type(model).__name__ == "ModernBertForMaskedLM" and len(model.config.layer_types) == 2


def test_fill_mask_of_the_chinese_mlm_run_reads_as_chinese(cli, mlm_run):
    result = cli("predict", "--model", mlm_run, "--text", "这家酒店的服务很[MASK]。", "--top-k", "3", "--json")
    assert result.exit_code == 0, result
    fills = json.dumps(json.loads(result.stdout), ensure_ascii=False)
    assert "这家酒店的服务很" in fills and "这 家" not in fills


def test_an_english_vocabulary_on_chinese_text_is_warned_about_with_the_share_and_an_example(cli, tmp_path, zh_tokenizer_dir):
    from transformers import AutoTokenizer

    english = AutoTokenizer.from_pretrained(shared_path("tokenizers", "bert-base-uncased"))
    warning = unknown_token_warning(english, [CHINESE] * 3)
    assert warning and "of the training tokens" in warning and "[UNK]" in warning and "e.g. '" in warning
    assert unknown_token_warning(AutoTokenizer.from_pretrained(zh_tokenizer_dir), [CHINESE] * 3) is None
    assert unknown_token_warning(english, ["the hotel was clean and quiet"]) is None
    reviews = write_csv(tmp_path / "r.csv", csv_rows(shared_path("chinese", "online_shopping_9_cats", "reviews.csv"), 100), "utf-8")
    recipe = write(tmp_path / "mlm.yaml", MLM_RECIPE.format(tokenizer=shared_path("tokenizers", "bert-base-uncased"),
                                                            reviews=reviews, out=tmp_path / "run"))
    result = cli("finetune", recipe, "--dry-run")
    assert result.exit_code == 0, result
    assert "of the training tokens" in result.stderr and "unknown token [UNK]" in result.stderr, result.stderr[-3000:]


def test_the_sentiment_bar_is_measured_on_the_recipes_own_held_out_rows_before_any_run_exists(tmp_path):
    """benchmarks/zh_sentiment_baseline.py reads the recipe's splits without needing runs/zh-mlm-reviews."""
    import subprocess
    import sys

    from conftest import REPO

    shared_path("chinese", "chnsenticorp_htl", "validation.csv")
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "zh_sentiment_baseline.py")], cwd=REPO,
                            capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout)
    assert (scores["held_out_rows"], scores["validation_csv_rows"]) == (544, 776), scores
    assert 0.85 < scores["held_out_accuracy"] < 0.95 and 0.85 < scores["validation_csv_accuracy"] < 0.95, scores
