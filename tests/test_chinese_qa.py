"""Chinese extractive QA: CMRC 2018's metric against its official script, its automatic choice for
Chinese references, and answers mapped back to character spans on Chinese contexts."""

from __future__ import annotations

import json
import random
import sys
import types
import warnings

import pytest
from conftest import shared_path

from hf_toolkit.metrics import cmrc2018, compute, qa_metric, squad
from hf_toolkit.metrics.cmrc2018 import exact_match_score, f1_score, mixed_segmentation


def official_script():
    """The official cmrc2018_evaluate.py (Python 2) run under Python 3 with the few py2-only lines
    shimmed: ``reload(sys)``/``setdefaultencoding`` do nothing, ``ur''`` is ``r''`` (re reads the
    same \\u escapes), and ``str(x).decode('utf-8')`` of a unicode string is that string. nltk is the
    real one; without its punkt data, word_tokenize tokenizes a run as one sentence (as hftk does)."""
    import nltk

    source = shared_path("chinese", "cmrc2018_trial", "cmrc2018_evaluate.py").read_text(encoding="utf-8")
    replacements = [("reload(sys)\n", ""), ("sys.setdefaultencoding('utf8')\n", ""), ("import pdb\n", ""),
                    ("ur'[", "r'["), ("str(in_str).decode('utf-8')", "in_str"),
                    ("str(prediction_file[query_id]).decode('utf-8')", "str(prediction_file[query_id])")]
    for old, new in replacements:
        assert old in source, old
        source = source.replace(old, new)
    fake_nltk = types.SimpleNamespace(word_tokenize=nltk.word_tokenize)
    try:
        nltk.word_tokenize("a. B")
    except LookupError:
        fake_nltk.word_tokenize = lambda text: nltk.word_tokenize(text, preserve_line=True)
    module = types.ModuleType("cmrc2018_evaluate")
    module.__dict__.update(nltk=fake_nltk)
    saved = sys.modules.get("nltk")
    sys.modules["nltk"] = fake_nltk  # the script's `import nltk` binds the shim
    try:
        exec(compile(source, "cmrc2018_evaluate.py", "exec"), module.__dict__)
    finally:
        sys.modules["nltk"] = saved
    return module


@pytest.fixture(scope="module")
def trial():
    path = shared_path("chinese", "cmrc2018_trial", "cmrc2018_trial.json")
    return json.loads(path.read_text(encoding="utf-8"))


def questions(data):
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield paragraph["context"], qa


def perturb(context: str, answer: str, start: int, rng: random.Random) -> str:
    """A wrong, partly right or differently written answer, the kinds a model gives."""
    end = start + len(answer)
    kind = rng.randrange(9)
    if kind == 0:
        return answer
    if kind == 1:  # too long on both sides
        return context[max(0, start - rng.randint(1, 4)) : end + rng.randint(1, 4)]
    if kind == 2:  # too short
        return answer[: max(1, len(answer) // 2)]
    if kind == 3:  # punctuation the script drops, and upper case it lowers
        return "《" + answer.upper() + "》。"
    if kind == 4:  # somewhere else in the context
        other = rng.randrange(len(context))
        return context[other : other + len(answer)]
    if kind == 5:
        return ""
    if kind == 6:  # Latin words and numbers between Chinese characters
        return answer + " the U.S. Army, 1,024 km (it's 3.5%)"
    if kind == 7:  # a lone ellipsis character, which the script keeps ("……" is its item)
        return answer + "…" + answer[:1]
    return " " + answer[::-1] + "\n"


def test_cmrc2018_equals_the_official_script_on_the_trial_set_with_perturbed_predictions(trial):
    script = official_script()
    rng = random.Random(2018)
    predictions = {}
    for context, qa in questions(trial):
        gold = qa["answers"][0]
        if rng.random() < 0.03:
            continue  # unanswered: scores 0 and counts in the total
        predictions[qa["id"]] = perturb(context, gold["text"], gold["answer_start"], rng)
    references = {qa["id"]: [a["text"] for a in qa["answers"]] for _, qa in questions(trial)}
    f1, em, total, skipped = script.evaluate(trial, predictions)
    ours = cmrc2018(predictions, references)
    assert (total, skipped) == (1002, 1002 - len(predictions))
    assert ours["f1"] == pytest.approx(f1, abs=1e-9) and ours["exact_match"] == pytest.approx(em, abs=1e-9)
    assert ours["average"] == pytest.approx((f1 + em) / 2)
    assert 0 < em < f1 < 100  # the perturbations really score in between
    for qid, prediction in list(predictions.items())[:300]:  # question by question, too
        assert f1_score(references[qid], prediction) == pytest.approx(script.calc_f1_score(references[qid], prediction))
        assert exact_match_score(references[qid], prediction) == script.calc_em_score(references[qid], prediction)
        assert mixed_segmentation(prediction) == script.mixed_segmentation(prediction)


def test_cmrc2018_scores_a_partly_right_chinese_answer_where_squad_gives_0():
    references = {"q": ["北京"]}
    assert squad({"q": "北京大学"}, references)["f1"] == 0.0
    scores = cmrc2018({"q": "北京大学"}, references)
    assert scores["exact_match"] == 0.0 and scores["f1"] == pytest.approx(100 * 2 * 0.5 * 1 / 1.5)
    assert mixed_segmentation("NBA总决赛1989年") == ["nba", "总", "决", "赛", "1989", "年"]
    assert cmrc2018({"q": "《北京》。"}, references)["exact_match"] == 100.0  # its punctuation list is dropped
    assert cmrc2018({"q": "北京."}, references)["exact_match"] == 0.0  # an ASCII full stop is not in it


def test_chinese_references_choose_cmrc2018_and_say_so():
    chinese = {"a": ["北京大学"], "b": ["1989年"]}
    with pytest.warns(UserWarning, match="Chinese: scored with CMRC 2018"):
        assert qa_metric(chinese) == "cmrc2018"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert qa_metric({"a": ["Normandy"]}) == "squad"
        assert qa_metric(chinese, version_2=True) == "squad_v2"
    with pytest.warns(UserWarning, match="--metric cmrc2018"):  # asked for by name: kept, with advice
        compute(["squad"], {"a": "北京"}, chinese)


def test_eval_files_mode_scores_cmrc2018_by_name(cli, tmp_path, trial):
    references = tmp_path / "refs.json"
    references.write_text(json.dumps(trial, ensure_ascii=False), encoding="utf-8")
    predictions = {qa["id"]: qa["answers"][0]["text"][:-1] or "x" for _, qa in questions(trial)}
    (tmp_path / "preds.json").write_text(json.dumps(predictions, ensure_ascii=False), encoding="utf-8")
    result = cli("eval", "-m", "cmrc2018", "--predictions", tmp_path / "preds.json", "--references", references, "--json")
    assert result.exit_code == 0, result
    scores = json.loads(result.stdout)
    references = {qa["id"]: [a["text"] for a in qa["answers"]] for _, qa in questions(trial)}
    assert scores == pytest.approx(cmrc2018(predictions, references))
    assert scores["exact_match"] < scores["f1"] < 100


def test_gold_logits_give_back_the_gold_answers_on_chinese_contexts(trial):
    """Gold start/end logits through hftk's windows and post-processing, with the bert-base-chinese
    vocabulary (a fast WordPiece tokenizer): the gold answer text comes back for >= 99% of questions."""
    from transformers import BertTokenizerFast

    from hf_toolkit.tasks.qa_postprocess import Feature, best_answers
    from hf_toolkit.tasks.question_answering import answer_positions, context_offsets, encode, settings

    vocab = shared_path("chinese", "tokenizers", "bert-base-chinese", "vocab.txt")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=False, tokenize_chinese_chars=True)
    rows = list(questions(trial))
    contexts = [context for context, _ in rows]
    golds = [qa["answers"][0] for _, qa in rows]
    s = settings(None).model_copy(update={"max_length": 512, "doc_stride": 128})
    encoding = encode(tokenizer, [qa["question"] for _, qa in rows], contexts, s)
    features, starts, ends = [], [], []
    for i, example in enumerate(encoding["overflow_to_sample_mapping"]):
        offsets = context_offsets(encoding, i)
        gold = golds[example]
        start, end = answer_positions(offsets, gold["answer_start"], gold["answer_start"] + len(gold["text"]))
        start_logits, end_logits = [0.0] * len(offsets), [0.0] * len(offsets)
        if (start, end) != (0, 0):
            start_logits[start] = end_logits[end] = 10.0
        features.append(Feature(example, offsets))
        starts.append(start_logits)
        ends.append(end_logits)
    answers = best_answers(contexts, features, starts, ends, max_answer_length=512)
    recovered = sum(answer.text == gold["text"] for answer, gold in zip(answers, golds))
    assert recovered / len(golds) >= 0.99, f"{recovered} of {len(golds)}"


QA_RECIPE = """\
task: question-answering
seed: 0
model:
  init: scratch
  tokenizer: {tokenizer}
  config: {{model_type: bert, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 128}}
data:
  train: {train}
  validation_split: 0.3
  max_length: 128
  doc_stride: 32
training:
  output_dir: {out}
  max_steps: 2
  per_device_train_batch_size: 8
  save_strategy: 'no'
  report_to: none
  disable_tqdm: true
"""


def test_a_chinese_qa_run_is_scored_with_cmrc2018_and_says_so(cli, tmp_path, trial):
    """The shape of recipes/bert-chinese-cmrc2018.yaml, offline: a tiny BERT with the bert-base-chinese
    vocabulary on CMRC trial questions; its evaluation picks cmrc2018 because the answers are Chinese."""
    subset = {"version": trial["version"], "data": trial["data"][:6]}
    train = tmp_path / "cmrc_subset.json"
    train.write_text(json.dumps(subset, ensure_ascii=False), encoding="utf-8")
    tokenizer = shared_path("chinese", "tokenizers", "bert-base-chinese")
    recipe = tmp_path / "qa.yaml"
    recipe.write_text(QA_RECIPE.format(tokenizer=tokenizer, train=train, out=tmp_path / "run"), encoding="utf-8")
    with pytest.warns(UserWarning, match="Chinese: scored with CMRC 2018"):
        result = cli("finetune", recipe)
    assert result.exit_code == 0, result
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"eval_exact_match", "eval_f1", "eval_average"} <= set(metrics)
    scored = cli("eval", "--model", tmp_path / "run", "--data", train, "--json")
    assert scored.exit_code == 0 and "average" in json.loads(scored.stdout), scored
