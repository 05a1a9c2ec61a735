"""ROUGE-1/2/L/Lsum: a thin wrapper over Google's ``rouge-score`` that also scores CJK text.

Scores are the MEAN OVER PAIRS of rouge-score's F-measures (0-1), with no bootstrap aggregator,
so they are deterministic. ``rougeL`` is the LCS over the whole text; ``rougeLsum`` is the
summary-level LCS over sentences split on newlines, as in rouge-score. ``split_sentences=True``
first puts each sentence on its own line (see :func:`split_into_sentences`), which is what
``rougeLsum`` expects when texts come as one line each.

Why a tokenizer: rouge-score's default tokenizer keeps only ``[a-z0-9]`` and so drops every
Chinese, Japanese and Korean character; Chinese text would score 0. :class:`CJKTokenizer`
makes each CJK character a token and tokenizes everything else exactly as rouge-score does; a
text without CJK characters goes through rouge-score's own tokenizer unchanged, so English
scores are identical to rouge-score's defaults.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from hf_toolkit.errors import DataError
from hf_toolkit.metrics.cjk import CJK, CJK_RE

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# rouge-score keeps lowercase [a-z0-9] runs; CJK characters (Han, kana, Hangul: see .cjk)
# become one token each.
_TOKEN_RE = re.compile(f"[a-z0-9]+|[{CJK}]")
# A sentence ends at . ! ? followed by whitespace, or at CJK 。！？ (no space needed there);
# closing quotes and brackets stay with their sentence.
_LATIN_END_RE = re.compile(r"([.!?][\"'”’)\]]*)\s+")
_CJK_END_RE = re.compile(r"([。！？][”’」』）]*)")


class CJKTokenizer:
    """rouge-score tokenizer that keeps CJK characters (one token each).

    Latin text is handled exactly like ``rouge_score.tokenize.tokenize``: lowercase, keep
    ``[a-z0-9]+`` runs, Porter-stem tokens longer than 3 characters when ``use_stemmer``.
    """

    def __init__(self, use_stemmer: bool = False):
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        from rouge_score import tokenize as rouge_tokenize

        if not CJK_RE.search(text):
            return rouge_tokenize.tokenize(text, self._stemmer)
        tokens = _TOKEN_RE.findall(text.lower())
        if self._stemmer is None:
            return tokens
        # Same rule as rouge-score: only stem (Latin) words longer than 3 characters.
        return [self._stemmer.stem(tok) if len(tok) > 3 else tok for tok in tokens]


def split_into_sentences(text: str) -> str:
    """Put each sentence on its own line (rougeLsum's sentence boundaries).

    A regex splitter rather than nltk's punkt, whose model cannot be downloaded offline.
    It splits after . ! ? followed by whitespace and after Chinese/Japanese 。！？; existing
    newlines are kept.
    """
    marked = _CJK_END_RE.sub("\\1\n", _LATIN_END_RE.sub("\\1\n", text))
    return "\n".join(line.strip() for line in marked.split("\n") if line.strip())


def rouge_items(predictions: Sequence[str], references, *, use_stemmer: bool = False,
                split_sentences: bool = False, tokenizer=None) -> dict[str, list[float]]:
    """Per-pair rouge-score F-measures, ``{rouge_type: [f for each pair]}``.

    ``references``: one string per prediction, or one list of strings per prediction (several
    references: rouge-score's ``score_multi`` keeps the best reference per rouge type).
    ``tokenizer``: any object with ``.tokenize(text)``; default :class:`CJKTokenizer`.
    """
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise DataError(f"{len(predictions)} predictions but {len(references)} references;"
                        " ROUGE needs one reference (or one list of references) per prediction")
    splitter = split_into_sentences if split_sentences else (lambda text: text)
    scorer = rouge_scorer.RougeScorer(
        list(ROUGE_TYPES), tokenizer=tokenizer or CJKTokenizer(use_stemmer=use_stemmer))
    items: dict[str, list[float]] = {key: [] for key in ROUGE_TYPES}
    for prediction, reference in zip(predictions, references):
        if isinstance(reference, str):
            scores = scorer.score(splitter(reference), splitter(prediction))
        else:
            scores = scorer.score_multi([splitter(ref) for ref in reference], splitter(prediction))
        for key in ROUGE_TYPES:
            items[key].append(scores[key].fmeasure)
    return items


def rouge(predictions: Sequence[str], references, *, use_stemmer: bool = False,
          split_sentences: bool = False, tokenizer=None) -> dict[str, float]:
    """Mean rouge-score F-measure over pairs: ``{"rouge1", "rouge2", "rougeL", "rougeLsum"}``.

    Same arguments as :func:`rouge_items`. Empty input raises :class:`DataError`.
    """
    if not predictions:
        raise DataError("no predictions to score with ROUGE")
    items = rouge_items(predictions, references, use_stemmer=use_stemmer,
                        split_sentences=split_sentences, tokenizer=tokenizer)
    # fsum: the mean must not depend on float summation order.
    return {key: math.fsum(values) / len(values) for key, values in items.items()}


def per_item_references(references) -> list:
    """sacreBLEU streams -> one reference (or list of references) per prediction, for ROUGE."""
    if len(references) and all(isinstance(ref, str) for ref in references):
        return list(references)
    if len(references) == 1:
        return list(references[0])
    lengths = {len(stream) for stream in references}
    if len(lengths) > 1:
        raise DataError(f"reference streams differ in length: {sorted(lengths)}")
    return [list(refs) for refs in zip(*references)]
