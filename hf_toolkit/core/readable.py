"""Token ids back into text for people and programs: the one decode every output of hftk goes through.

WordPiece and character vocabularies (BERT's, bert-base-chinese's) decode with a space between
every two tokens, so Chinese comes back as "春 眠 不 觉 晓 ， 处 处" although it was written
without spaces. Wherever hftk turns ids into text that someone reads or a program consumes
(``hftk generate``/``chat``/``serve``, evaluation predictions, the dry run's examples), it decodes
through :func:`decode`/:func:`batch_decode` (or :class:`Readable`, for transformers' streamers):

- for a tokenizer that puts spaces between Chinese characters (found out once per tokenizer by
  decoding "中文"), a space next to a Chinese or Japanese character or CJK punctuation is dropped
  ("春眠不觉晓，处处", "用skype通话", "第52分钟"), while a space between two Latin words stays;
- every other tokenizer's text is left exactly as it decodes: byte-level BPE (GPT-2's) and
  SentencePiece already give back the spaces that were written, and the model chose them.

Hangul is not joined: Korean is written with spaces between words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from hf_toolkit.metrics.cjk import HAN, KANA

# CJK symbols and punctuation (。、「」《》), full-width forms (，！？：；（）), the middle dot.
CJK_PUNCTUATION = "\u3000-\u303f\uff00-\uffef\u30fb"
_JOINED = f"{HAN}{KANA}{CJK_PUNCTUATION}"
_SPACE_NEXT_TO_CJK = re.compile(f"(?<=[{_JOINED}]) +| +(?=[{_JOINED}])")
_PROBE = "中文"


def join_cjk(text: str) -> str:
    """`text` without the spaces that touch a Chinese/Japanese character or CJK punctuation."""
    return _SPACE_NEXT_TO_CJK.sub("", text)


def spaces_cjk(tokenizer: Any) -> bool:
    """Whether `tokenizer` decodes Chinese with spaces between the characters (WordPiece, character vocabularies)."""
    known = getattr(tokenizer, "_hftk_spaces_cjk", None)
    if known is None:
        decoded = tokenizer.decode(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
        known = decoded != _PROBE and decoded.replace(" ", "") == _PROBE
        try:
            tokenizer._hftk_spaces_cjk = known
        except AttributeError:  # a tokenizer that takes no attributes probes again next time
            pass
    return known


def decode(tokenizer: Any, ids: Iterable[int], **options: Any) -> str:
    """``tokenizer.decode(ids, **options)``, Chinese joined as written (see the module docstring)."""
    text = tokenizer.decode(ids, **options)
    return join_cjk(text) if spaces_cjk(tokenizer) else text


def batch_decode(tokenizer: Any, rows: Any, **options: Any) -> list[str]:
    """``tokenizer.batch_decode(rows, **options)``, Chinese joined as written."""
    texts = tokenizer.batch_decode(rows, **options)
    return [join_cjk(text) for text in texts] if spaces_cjk(tokenizer) else texts


class Readable:
    """A tokenizer's stand-in for code that only decodes (transformers' ``TextStreamer``): same
    ``decode``/``batch_decode``, Chinese joined as written.

    ``streaming=True`` also holds back trailing spaces (of a tokenizer that spaces Chinese): a
    streamer prints the text decoded so far and then only what is added to it, and a space printed
    after "hello" would vanish once a Chinese character follows it.
    """

    def __init__(self, tokenizer: Any, *, streaming: bool = False):
        self.tokenizer, self.streaming = tokenizer, streaming

    def decode(self, ids: Iterable[int], **options: Any) -> str:
        text = decode(self.tokenizer, ids, **options)
        return text.rstrip(" ") if self.streaming and spaces_cjk(self.tokenizer) else text

    def batch_decode(self, rows: Any, **options: Any) -> list[str]:
        return batch_decode(self.tokenizer, rows, **options)
