"""The data collators tasks batch with where transformers' own need help.

:class:`WordPieceMaskingCollator` (masked-LM) masks whole words of a WordPiece tokenizer, finding
the words from the ``##`` continuation pieces (see :mod:`hf_toolkit.tasks.masked_lm`).

Imports transformers at module level: only a task's ``trainer_kwargs``, i.e. the training flow,
imports this module, never the task table.
"""

from __future__ import annotations

import numpy as np
from transformers import DataCollatorForLanguageModeling

CONTINUATION_PREFIX = "##"


class WordPieceMaskingCollator(DataCollatorForLanguageModeling):
    """DataCollatorForLanguageModeling whose whole-word masking finds words from WordPiece '##' pieces.

    transformers' whole-word masking reads an ``offset_mapping`` column, which the Trainer drops as
    an unused model input; word boundaries are instead recovered from the tokens themselves.
    """

    def torch_mask_tokens(self, inputs, special_tokens_mask=None, offset_mapping=None):
        if self.whole_word_mask and offset_mapping is None:
            offset_mapping = wordpiece_offsets(inputs.tolist(), self.tokenizer)
        return super().torch_mask_tokens(inputs, special_tokens_mask=special_tokens_mask, offset_mapping=offset_mapping)


def wordpiece_offsets(rows: list[list[int]], tokenizer) -> np.ndarray:
    """Synthetic character offsets in which a '##' piece touches the piece before it and a word start does not."""
    offsets = np.zeros((len(rows), len(rows[0]) if rows else 0, 2), dtype=np.int64)
    for r, ids in enumerate(rows):
        end = 0
        for t, token in enumerate(tokenizer.convert_ids_to_tokens(ids)):
            start = end if token.startswith(CONTINUATION_PREFIX) else end + 1
            end = start + 1
            offsets[r, t] = (start, end)
    return offsets
