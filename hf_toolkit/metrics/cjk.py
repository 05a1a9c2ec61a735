"""Chinese, Japanese and Korean text: the character classes and language checks metrics share.

ROUGE's tokenizer (:mod:`.rouge_metrics`) uses :data:`CJK` to keep CJK characters as tokens;
BLEU and TER (:mod:`.sacrebleu_metrics`) use :func:`cjk_language` and :func:`spaced` to pick
sacreBLEU's ``zh`` tokenizer for Chinese or warn when their default tokenization scores CJK
text poorly. The checks are counts of Unicode blocks, nothing learned:

- Han: CJK Unified Ideographs (with extension A and plane 2) and compatibility ideographs;
- kana: hiragana, katakana and katakana phonetic extensions;
- Hangul: syllables, jamo and compatibility jamo.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
KANA = "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff"
HANGUL = "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
CJK = HAN + KANA + HANGUL
CJK_RE = re.compile(f"[{CJK}]")

_HAN_RE = re.compile(f"[{HAN}]")
_KANA_RE = re.compile(f"[{KANA}]")
_HANGUL_RE = re.compile(f"[{HANGUL}]")
_LETTER_RE = re.compile(r"[^\W\d_]")  # letters of any script (CJK characters included)
_CJK_WORD_RE = re.compile(f"\\S*[{CJK}]\\S*")

# Japanese prose is mostly kana; Chinese has none, bar a stray katakana middle dot.
_JAPANESE_KANA_SHARE = 0.1
# Words of Chinese and Japanese have 1-2 characters on average (3-4 at most); a sentence
# without spaces is one "word" of dozens.
_MAX_SPACED_WORD = 4


def cjk_language(texts: Iterable[str]) -> str | None:
    """``"zh"``, ``"ja"`` or ``"ko"`` when more than half of the letters in ``texts`` are CJK.

    Korean when Hangul outnumbers Han and kana together; Japanese when at least 10% of the Han
    and kana characters are kana; Chinese otherwise. ``None`` for other text (and no text).
    Items that are not strings are ignored.
    """
    letters = han = kana = hangul = 0
    for text in texts:
        if not isinstance(text, str):
            continue
        letters += len(_LETTER_RE.findall(text))
        if not CJK_RE.search(text):
            continue
        han += len(_HAN_RE.findall(text))
        kana += len(_KANA_RE.findall(text))
        hangul += len(_HANGUL_RE.findall(text))
    cjk = han + kana + hangul
    if not cjk or 2 * cjk <= letters:
        return None
    if hangul > han + kana:
        return "ko"
    return "ja" if kana >= _JAPANESE_KANA_SHARE * (han + kana) else "zh"


def spaced(texts: Iterable[str]) -> bool:
    """Whether the CJK text in ``texts`` is split into words by spaces (segmented).

    True when the whitespace-separated tokens holding CJK characters have at most 4 CJK
    characters on average (Korean is written so; Chinese and Japanese only after a word
    segmenter), or when there is no CJK text at all.
    """
    characters = words = 0
    for text in texts:
        if isinstance(text, str) and CJK_RE.search(text):
            for word in _CJK_WORD_RE.findall(text):
                characters += len(CJK_RE.findall(word))
                words += 1
    return not words or characters <= _MAX_SPACED_WORD * words
