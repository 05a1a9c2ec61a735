"""`hftk eval` files mode: numbers equal the reference libraries, bad input exits 2 clearly.

Uses the ``cli`` fixture (in-process Typer runner) from conftest and one real subprocess run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import shared_path, write

TOL = 1e-9


def _lines(path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def _write_lines(path: Path, lines: list[str]) -> Path:
    return write(path, "".join(f"{line}\n" for line in lines))


@pytest.fixture(scope="module")
def wmt(tmp_path_factory):
    """newstest2013 references and a deterministic degraded system, as files."""
    refs_path = shared_path("wmt_en_de_newstest2013_dev", "newstest2013.de")
    refs = _lines(refs_path)
    hyps = [" ".join(w for j, w in enumerate(ref.split()) if (i + j) % 5) for i, ref in enumerate(refs)]
    hyp_path = _write_lines(tmp_path_factory.mktemp("wmt") / "hyp.de", hyps)
    return hyps, refs, hyp_path, refs_path


def _json_scores(result) -> dict:
    assert result.exit_code == 0, result
    return json.loads(result.stdout)


# --- parity through the CLI -------------------------------------------------------------

def test_bleu_chrf_json_equals_sacrebleu(cli, wmt):
    import sacrebleu

    hyps, refs, hyp_path, refs_path = wmt
    scores = _json_scores(cli("eval", "--metric", "bleu", "--metric", "chrf", "--predictions",
                              hyp_path, "--references", refs_path, "--json"))
    assert set(scores) == {"bleu", "chrf"}
    assert abs(scores["bleu"] - sacrebleu.corpus_bleu(hyps, [refs]).score) < TOL
    assert abs(scores["chrf"] - sacrebleu.corpus_chrf(hyps, [refs]).score) < TOL


def test_options_tokenize_chrf_plus_plus_and_two_references(cli, wmt, tmp_path):
    from sacrebleu.metrics import BLEU, CHRF

    hyps, refs, _, _ = wmt
    hyps, refs = hyps[:300], refs[:300]
    second = [" ".join(ref.split()[1:]) for ref in refs]
    paths = [_write_lines(tmp_path / name, lines) for name, lines in
             (("h.txt", hyps), ("r1.txt", refs), ("r2.txt", second))]
    scores = _json_scores(cli("eval", "-m", "bleu", "-m", "chrf", "--tokenize", "intl",
                              "--chrf-plus-plus", "--predictions", paths[0], "-r", paths[1],
                              "-r", paths[2], "--json"))
    assert abs(scores["bleu"] - BLEU(tokenize="intl").corpus_score(hyps, [refs, second]).score) < TOL
    assert abs(scores["chrf"] - CHRF(word_order=2).corpus_score(hyps, [refs, second]).score) < TOL


def test_rouge_jsonl_fields_equal_rouge_score(cli, tmp_path):
    from rouge_score import rouge_scorer

    rows = [json.loads(line) for line in _lines(shared_path("xsum_dev_slice", "xsum_test_slice_100.jsonl"))]
    leads = [row["document"].split(". ")[0] + "." for row in rows]
    preds = write(tmp_path / "preds.jsonl", "".join(json.dumps({"prediction": p}) + "\n" for p in leads))
    refs = shared_path("xsum_dev_slice", "xsum_test_slice_100.jsonl")
    scores = _json_scores(cli("eval", "-m", "rouge", "--stemmer", "--predictions", preds,
                              "--references", refs, "--field", "prediction",
                              "--reference-field", "summary", "--json"))
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    direct = [scorer.score(row["summary"], lead) for row, lead in zip(rows, leads)]
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert abs(scores[key] - sum(d[key].fmeasure for d in direct) / len(direct)) < TOL


def test_chinese_rouge_and_bleu(cli, tmp_path):
    hyp = _write_lines(tmp_path / "hyp.zh", ["我爱北京天安门", "今天天气很好"])
    ref = _write_lines(tmp_path / "ref.zh", ["我爱北京天安门", "今天天气很好"])
    scores = _json_scores(cli("eval", "-m", "rouge", "-m", "bleu", "--tokenize", "zh",
                              "--predictions", hyp, "--references", ref, "--json"))
    assert scores == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "rougeLsum": 1.0,
                      "bleu": pytest.approx(100.0, abs=1e-9)}


def test_chinese_bleu_without_tokenize_uses_zh_and_says_so(cli, tmp_path):
    from sacrebleu.metrics import BLEU

    refs = ["我们今天去北京天安门广场。", "今天天气很好，适合出去散步。", "他在大学学习计算机科学。"]
    hyps = ["我们今天去北京天安门。", "今天天气很好，适合散步。", "他在大学学习计算机。"]
    hyp, ref = _write_lines(tmp_path / "hyp.zh", hyps), _write_lines(tmp_path / "ref.zh", refs)
    result = cli("eval", "-m", "bleu", "-m", "chrf", "--predictions", hyp, "--references", ref, "--json")
    scores = _json_scores(result)
    assert scores["bleu"] == BLEU(tokenize="zh").corpus_score(hyps, [refs]).score
    assert scores["bleu"] > 60 and BLEU().corpus_score(hyps, [refs]).score == 0.0
    assert "hftk: warning: predictions and references are Chinese: BLEU uses sacreBLEU's 'zh' " \
           "tokenizer" in result.stderr
    chosen = cli("eval", "-m", "bleu", "--tokenize", "13a", "--predictions", hyp, "--references", ref, "--json")
    assert _json_scores(chosen) == {"bleu": 0.0} and "warning" not in chosen.stderr


@pytest.mark.parametrize("tokenize, module, command", [
    ("ja-mecab", "MeCab", 'pip install "sacrebleu[ja]"'),
    ("ko-mecab", "mecab_ko", 'pip install "sacrebleu[ko]"'),
])
def test_tokenizer_without_its_extra_exits_2_with_the_pip_command(cli, tmp_path, monkeypatch,
                                                                  tokenize, module, command):
    monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    text = _write_lines(tmp_path / "t.txt", ["猫がいる。"])
    result = cli("eval", "-m", "bleu", "--tokenize", tokenize, "--predictions", text, "--references", text)
    assert result.exit_code == 2, result
    assert f"BLEU tokenizer '{tokenize}' (--tokenize) needs" in result.stderr
    assert f"install it with: {command}" in result.stderr and "Traceback" not in result.stderr


def test_unknown_tokenizer_exits_2_listing_them_before_reading_files(cli, tmp_path):
    result = cli("eval", "-m", "bleu", "--tokenize", "13A", "--predictions", tmp_path / "nope.txt",
                 "--references", tmp_path / "nope.txt")
    assert result.exit_code == 2, result
    assert ("unknown BLEU tokenizer '13A' (did you mean '13a'?); choose one of: 13a, none, zh, intl, "
            "char, ja-mecab, ko-mecab") in result.stderr


def _official_squad(rows: list[dict]) -> dict:
    """The official nested SQuAD layout (data/paragraphs/qas) from HF-layout rows."""
    paragraphs: dict[str, list] = {}
    for row in rows:
        qa = {"id": row["id"], "question": row["question"],
              "answers": [{"text": t, "answer_start": s} for t, s in
                          zip(row["answers"]["text"], row["answers"]["answer_start"])]}
        paragraphs.setdefault(row["context"], []).append(qa)
    return {"version": "1.1", "data": [{"title": "Normans", "paragraphs": [
        {"context": context, "qas": qas} for context, qas in paragraphs.items()]}]}


@pytest.fixture(scope="module")
def normans(tmp_path_factory):
    source = shared_path("squad_v1.1_dev_slice", "normans_dev_slice.jsonl")
    rows = [json.loads(line) for line in _lines(source)]
    folder = tmp_path_factory.mktemp("squad")
    official = write(folder / "dev.json", json.dumps(_official_squad(rows)))
    # Every 3rd answer wrong, every 2nd noisy (case, article, punctuation) but still exact.
    predictions = {row["id"]: ("no idea" if i % 3 == 0 else
                               f"The {row['answers']['text'][0].upper()}!" if i % 2 else
                               row["answers"]["text"][0]) for i, row in enumerate(rows)}
    return rows, source, official, predictions, folder


def test_squad_official_json_and_jsonl(cli, normans):
    from hf_toolkit.metrics import squad

    rows, source, official, predictions, folder = normans
    expected = squad(predictions, {row["id"]: row["answers"]["text"] for row in rows})
    n_wrong = len(range(0, len(rows), 3))
    assert abs(expected["exact_match"] - 100 * (len(rows) - n_wrong) / len(rows)) < TOL
    pred_json = write(folder / "predictions.json", json.dumps(predictions))
    pred_jsonl = write(folder / "predictions.jsonl", "".join(
        json.dumps({"id": qid, "prediction_text": text}) + "\n" for qid, text in predictions.items()))
    for preds, refs in ((pred_json, official), (pred_jsonl, source), (pred_json, source)):
        assert _json_scores(cli("eval", "-m", "squad", "--predictions", preds,
                                "--references", refs, "--json")) == expected


def test_squad_unknown_prediction_ids_exit_2(cli, normans, tmp_path):
    _, _, official, predictions, _ = normans
    bad = write(tmp_path / "p.json", json.dumps({**predictions, "zzz1": "a", "zzz2": "b"}))
    result = cli("eval", "-m", "squad", "--predictions", bad, "--references", official)
    assert result.exit_code == 2
    assert "2 of 114 prediction ids" in result.stderr and "'zzz1'" in result.stderr
    assert str(official) in result.stderr


def test_squad_missing_predictions_warn_and_score_zero(cli, normans, tmp_path):
    rows, _, official, predictions, _ = normans
    first = dict(list(predictions.items())[:10])
    result = cli("eval", "-m", "squad", "--predictions", write(tmp_path / "p.json", json.dumps(first)),
                 "--references", official, "--json")
    assert result.exit_code == 0
    assert f"{len(rows) - 10} of {len(rows)} questions" in result.stderr


def test_readme_key_clash_example_holds_in_files_mode(cli, normans):
    """README's `--json` paragraph names a metric pair whose keys clash: files mode scores it so."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    paragraph = " ".join(readme.split("`--json` prints one object of metric keys")[1].split("\n\n")[0].split())
    example = re.search(r"would produce the same key \(`-m (\w+) -m (\w+)`.*?prefixes the clashing "
                        r"keys \(((?:`\w+`(?:, )?)+)\)", paragraph)
    assert example, paragraph
    first, second, keys = example.group(1), example.group(2), re.findall(r"`(\w+)`", example.group(3))
    _, _, official, predictions, folder = normans
    preds = write(folder / "readme_predictions.json", json.dumps(predictions))
    scores = _json_scores(cli("eval", "-m", first, "-m", second, "--predictions", preds,
                              "--references", official, "--json"))
    assert keys and set(keys) <= set(scores)
    # The pair README says takes two runs is refused in one, saying so.
    refused = re.search(r"so `-m (\w+) -m (\w+)` takes two runs", paragraph)
    assert refused, paragraph
    result = cli("eval", "-m", refused.group(1), "-m", refused.group(2), "--predictions", preds,
                 "--references", official)
    assert result.exit_code == 2 and "score them in two runs" in result.stderr


def test_classification_labels_from_text(cli, tmp_path):
    from sklearn.metrics import accuracy_score, f1_score

    gold, pred = [0, 1, 2, 2, 1, 0, 1], [0, 2, 2, 2, 1, 0, 0]
    g = _write_lines(tmp_path / "gold.txt", [str(x) for x in gold])
    p = _write_lines(tmp_path / "pred.txt", [str(x) for x in pred])
    scores = _json_scores(cli("eval", "-m", "accuracy", "-m", "f1", "--average", "macro",
                              "--predictions", p, "--references", g, "--json"))
    assert scores == {"accuracy": accuracy_score(gold, pred), "f1": f1_score(gold, pred, average="macro")}
    binary = cli("eval", "-m", "f1", "--predictions", p, "--references", g)
    assert binary.exit_code == 2 and "macro" in binary.stderr


def test_ci_and_compare_table_and_json(cli, wmt, tmp_path):
    hyps, refs, _, _ = wmt
    h = _write_lines(tmp_path / "h.txt", hyps[:200])
    r = _write_lines(tmp_path / "r.txt", refs[:200])
    base = _write_lines(tmp_path / "b.txt", [" ".join(reversed(x.split())) for x in hyps[:200]])
    scores = _json_scores(cli("eval", "-m", "bleu", "-m", "rouge", "--ci", "--compare", base,
                              "--predictions", h, "--references", r, "--json"))
    for key in ("bleu", "rouge1", "rougeLsum"):
        assert {f"{key}_mean", f"{key}_ci95", f"{key}_baseline", f"{key}_p_value"} <= set(scores)
    assert scores["bleu_p_value"] < 0.01
    table = cli("eval", "-m", "bleu", "--ci", "--compare", base, "--predictions", h, "--references", r)
    assert table.exit_code == 0
    assert "95% CI" in table.stdout and "p-value" in table.stdout and "+/-" in table.stdout


# --- user errors: exit 2 with a clear message -------------------------------------------

def test_line_count_mismatch_exits_2(cli, wmt, tmp_path):
    _, _, _, refs_path = wmt
    short = _write_lines(tmp_path / "short.txt", ["a", "b"])
    result = cli("eval", "-m", "bleu", "--predictions", short, "--references", refs_path)
    assert result.exit_code == 2
    assert "2 lines" in result.stderr and "3000 lines" in result.stderr
    assert "short.txt" in result.stderr and "newstest2013.de" in result.stderr


@pytest.mark.parametrize("problem", ["empty", "missing", "unknown_metric", "bad_option", "bad_word_order",
                                     "bad_stemmer", "jsonl_without_field", "model_mode", "perplexity_on_files"])
def test_user_errors_exit_2(cli, tmp_path, problem):
    good = _write_lines(tmp_path / "good.txt", ["a b c"])
    args = {"empty": ["-m", "bleu", "--predictions", write(tmp_path / "e.txt", ""), "-r", good],
            "missing": ["-m", "bleu", "--predictions", tmp_path / "nope.txt", "-r", good],
            "unknown_metric": ["-m", "blue", "--predictions", good, "-r", good],
            "bad_option": ["-m", "rouge", "--tokenize", "zh", "--predictions", good, "-r", good],
            "bad_word_order": ["-m", "bleu", "--chrf-word-order", "2", "--predictions", good, "-r", good],
            "bad_stemmer": ["-m", "bleu", "-m", "ter", "--stemmer", "--predictions", good, "-r", good],
            "jsonl_without_field": ["-m", "rouge", "--predictions",
                                    write(tmp_path / "p.jsonl", '{"text": "a"}\n'), "-r", good],
            "model_mode": ["-m", "accuracy", "--model", tmp_path, "--data", good],
            "perplexity_on_files": ["-m", "perplexity", "--predictions", good, "-r", good]}[problem]
    expected = {"empty": "e.txt: file is empty", "missing": "nope.txt: file not found",
                "unknown_metric": "unknown metric 'blue' (did you mean 'bleu'?)",
                "bad_option": "--tokenize does not apply to rouge",
                "bad_word_order": "--chrf-word-order does not apply to bleu; it is an option of chrf",
                "bad_stemmer": "--stemmer does not apply to bleu, ter; it is an option of rouge",
                "jsonl_without_field": "needs --field", "model_mode": "has no hftk_recipe.yaml",
                "perplexity_on_files": "run `hftk eval --model RUN --data FILE -m perplexity`"}[problem]
    result = cli("eval", *args)
    assert result.exit_code == 2, result
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


# --- the real command -------------------------------------------------------------------

def _hftk() -> list[str]:
    script = Path(sys.executable).with_name("hftk")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hf_toolkit"]


def test_subprocess_hftk_eval(tmp_path):
    hyp = _write_lines(tmp_path / "hyp.txt", ["the cat sat on the mat today", "a b c"])
    ref = _write_lines(tmp_path / "ref.txt", ["the cat sat on a mat today", "a b c"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    done = subprocess.run([*_hftk(), "eval", "-m", "bleu", "-m", "rouge", "--predictions", hyp,
                           "--references", ref, "--json"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    from hf_toolkit.metrics import bleu, rouge

    assert scores == {**bleu(_lines(hyp), [_lines(ref)]), **rouge(_lines(hyp), _lines(ref))}
    mismatch = subprocess.run([*_hftk(), "eval", "-m", "bleu", "--predictions", hyp,
                               "--references", write(tmp_path / "one.txt", "x\n")],
                              capture_output=True, text=True, env=env, timeout=120)
    assert mismatch.returncode == 2 and "2 lines" in mismatch.stderr


def test_cli_import_stays_light():
    """`hftk --help` must not import the metric libraries (or torch): it has to stay instant."""
    code = ("import sys, hf_toolkit.cli, hf_toolkit.apply.evaluation, hf_toolkit.metrics; "
            "heavy = {'sacrebleu', 'rouge_score', 'sklearn', 'evaluate', 'torch', 'transformers', 'numpy'}; "
            "print(sorted(heavy & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- model mode: the predictions file of a seq2seq run ------------------------------------

def test_model_mode_seq2seq_rows_hold_source_prediction_reference(cli, tmp_path):
    """A tiny summarization run (two training steps): each row of the predictions file holds the
    source text, the generated text and the reference; files mode scores the file the same."""
    rows = [{"document": f"red blue cat {i}", "summary": f"cat {i}"} for i in range(6)]
    data = write(tmp_path / "copy.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    t5 = ("{model_type: t5, d_model: 32, d_ff: 64, num_layers: 1, num_decoder_layers: 1, num_heads: 2, "
          "d_kv: 16, dropout_rate: 0.0}")
    recipe = write(tmp_path / "r.yaml", f"""
task: summarization
model:
  init: scratch
  config: {t5}
  train_tokenizer: {{vocab_size: 300, min_frequency: 1}}
data:
  train: {data}
  columns: {{source: document, target: summary}}
  max_target_length: 6
training:
  output_dir: {tmp_path / 'run'}
  max_steps: 2
  per_device_train_batch_size: 4
  eval_strategy: "no"
  save_strategy: "no"
  report_to: none
  disable_tqdm: true
""")
    trained = cli("finetune", recipe)
    assert trained.exit_code == 0, trained
    run = tmp_path / "run"
    scored = cli("eval", "-m", "rouge", "--model", run, "--data", data, "--json")
    assert scored.exit_code == 0, scored
    scores = json.loads(scored.stdout.strip().splitlines()[-1])
    [path] = (run / "eval").glob("copy*.predictions.jsonl")
    out = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(set(r) == {"source", "prediction", "reference"} for r in out), out
    assert [(r["source"], r["reference"]) for r in out] == [(r["document"], r["summary"]) for r in rows]
    assert all(isinstance(r["prediction"], str) for r in out)
    files_mode = _json_scores(cli("eval", "-m", "rouge", "--predictions", path, "--references", path,
                                  "--field", "prediction", "--reference-field", "reference", "--json"))
    assert files_mode == scores


def test_blank_lines_ending_a_file_are_not_items_and_bleu_prints_rounded(cli, tmp_path):
    """Issue 21.21: an editor's trailing blank line is not a prediction; an empty line between items is one.
    The table rounds sacreBLEU's 100.00000000000004; --json keeps the number as sacreBLEU computed it."""
    from hf_toolkit.metrics import bleu

    lines = ["the cat sat on the mat", "a dog ran in the park", "hello world once again"]
    refs = _write_lines(tmp_path / "ref.txt", lines)
    hyp = write(tmp_path / "hyp.txt", "\n".join(lines) + "\n\n \n")
    table = cli("eval", "-m", "bleu", "--predictions", hyp, "--references", refs)
    assert table.exit_code == 0, table
    assert table.stdout.splitlines()[-1].split() == ["bleu", "100.0000"]
    exact = bleu(lines, [lines])["bleu"]
    assert json.loads(cli("eval", "-m", "bleu", "--predictions", hyp, "--references", refs, "--json").stdout) == {"bleu": exact}
    middle = write(tmp_path / "middle.txt", "the cat sat on the mat\n\nhello world once again\n")
    scored = cli("eval", "-m", "bleu", "--predictions", middle, "--references", refs, "--json")
    assert scored.exit_code == 0, scored
    assert json.loads(scored.stdout)["bleu"] == bleu([lines[0], "", lines[2]], [lines])["bleu"]
    short = write(tmp_path / "short.txt", "a\nb\n\n")
    mismatch = cli("eval", "-m", "bleu", "--predictions", short, "--references", refs)
    assert mismatch.exit_code == 2 and "has 2 lines" in mismatch.stderr
    assert "blank lines at the end of a file are not counted" in mismatch.stderr
