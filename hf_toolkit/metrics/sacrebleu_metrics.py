"""BLEU, chrF/chrF++ and TER: thin wrappers over sacreBLEU's corpus-level metrics.

sacreBLEU is the reference implementation, so these functions only build the sacreBLEU metric
object, check the input layout (so a user mistake is a clear :class:`DataError`, not a sacreBLEU
``EOFError``) and return ``{"bleu" | "chrf" | "ter": score}`` on sacreBLEU's 0-100 scale.

References use sacreBLEU's layout: ONE LIST PER REFERENCE STREAM, each as long as the
predictions (``[[ref1_for_item1, ref1_for_item2, ...], [ref2_for_item1, ...]]``). A flat list of
strings is accepted as a single stream.

sacreBLEU is imported inside the functions: ``hftk --help`` must not pay for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from hf_toolkit.errors import DataError, HftkError, did_you_mean

# sacreBLEU's BLEU tokenizers (sacrebleu.metrics.bleu._TOKENIZERS); listed here so an unknown
# name is a user error with a suggestion and `hftk --help` can show them without the import.
BLEU_TOKENIZERS = ("13a", "none", "zh", "intl", "char", "ja-mecab", "ko-mecab", "spm",
                   "flores101", "flores200")


def as_streams(predictions: Sequence[str], references) -> list[list[str]]:
    """Return ``references`` as sacreBLEU streams after checking every stream's length."""
    if len(references) and all(isinstance(ref, str) for ref in references):
        references = [list(references)]
    streams = [list(stream) for stream in references]
    if not streams:
        raise DataError("no references given: pass at least one reference stream")
    for number, stream in enumerate(streams, start=1):
        if len(stream) != len(predictions):
            raise DataError(
                f"reference stream {number} has {len(stream)} items but there are "
                f"{len(predictions)} predictions; every stream needs one reference per prediction")
    return streams


def bleu_metric(*, tokenize: str = "13a", lowercase: bool = False, smooth_method: str = "exp",
                smooth_value: float | None = None, max_ngram_order: int = 4,
                effective_order: bool = False):
    """Build the sacreBLEU ``BLEU`` object (validates the tokenizer name)."""
    if tokenize not in BLEU_TOKENIZERS:
        raise HftkError(f"unknown BLEU tokenizer '{tokenize}'{did_you_mean(tokenize, BLEU_TOKENIZERS)};"
                        f" choose one of: {', '.join(BLEU_TOKENIZERS)}")
    from sacrebleu.metrics.bleu import BLEU

    return BLEU(tokenize=tokenize, lowercase=lowercase, smooth_method=smooth_method,
                smooth_value=smooth_value, max_ngram_order=max_ngram_order,
                effective_order=effective_order)


def chrf_metric(*, word_order: int = 0, char_order: int = 6, beta: int = 2,
                lowercase: bool = False, whitespace: bool = False, eps_smoothing: bool = False):
    """Build the sacreBLEU ``CHRF`` object; ``word_order=2`` is chrF++."""
    from sacrebleu.metrics.chrf import CHRF

    return CHRF(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase,
                whitespace=whitespace, eps_smoothing=eps_smoothing)


def ter_metric(*, normalized: bool = False, no_punct: bool = False, asian_support: bool = False,
               case_sensitive: bool = False):
    """Build the sacreBLEU ``TER`` object."""
    from sacrebleu.metrics.ter import TER

    return TER(normalized=normalized, no_punct=no_punct, asian_support=asian_support,
               case_sensitive=case_sensitive)


def bleu(predictions: Sequence[str], references, *, tokenize: str = "13a",
         lowercase: bool = False, smooth_method: str = "exp", smooth_value: float | None = None,
         max_ngram_order: int = 4, effective_order: bool = False) -> dict[str, float]:
    """sacreBLEU corpus BLEU (0-100). ``tokenize``: 13a (default), zh, intl, char, none, ..."""
    metric = bleu_metric(tokenize=tokenize, lowercase=lowercase, smooth_method=smooth_method,
                         smooth_value=smooth_value, max_ngram_order=max_ngram_order,
                         effective_order=effective_order)
    return {"bleu": metric.corpus_score(list(predictions), as_streams(predictions, references)).score}


def chrf(predictions: Sequence[str], references, *, word_order: int = 0, char_order: int = 6,
         beta: int = 2, lowercase: bool = False, whitespace: bool = False,
         eps_smoothing: bool = False) -> dict[str, float]:
    """sacreBLEU corpus chrF (0-100); ``word_order=2`` gives chrF++ (still under key ``chrf``)."""
    metric = chrf_metric(word_order=word_order, char_order=char_order, beta=beta,
                         lowercase=lowercase, whitespace=whitespace, eps_smoothing=eps_smoothing)
    return {"chrf": metric.corpus_score(list(predictions), as_streams(predictions, references)).score}


def ter(predictions: Sequence[str], references, *, normalized: bool = False,
        no_punct: bool = False, asian_support: bool = False,
        case_sensitive: bool = False) -> dict[str, float]:
    """sacreBLEU corpus TER (0-100 and beyond; lower is better)."""
    metric = ter_metric(normalized=normalized, no_punct=no_punct, asian_support=asian_support,
                        case_sensitive=case_sensitive)
    return {"ter": metric.corpus_score(list(predictions), as_streams(predictions, references)).score}
