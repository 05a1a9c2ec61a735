"""The Trainer subclasses tasks train with where transformers' own would do the wrong thing.

:class:`PromptSeq2SeqTrainer` (summarization and translation) evaluates a decoder-only model by
generating from each row's prompt; :class:`WindowOrderTrainer` (question answering) evaluates in
dataset order, so that each window's logits meet their window. A task's ``trainer_class`` hook
returns one of them.

Imports torch and transformers at module level: only a task's ``trainer_class``, i.e. the
training flow, imports this module, never the task table.
"""

from __future__ import annotations

import copy

import torch
from transformers import Seq2SeqTrainer, Trainer

from hf_toolkit import compat
from hf_toolkit.tasks.base import IGNORE_INDEX


class PromptSeq2SeqTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer that, for decoder-only models, evaluates by generating from the prompt.

    Seq2SeqTrainer would generate from the whole evaluation sequence (prompt + target). Here the
    prompt of each row is its prefix whose labels are -100; prompts are left-padded, generated
    from, and only the continuation is returned for scoring. Encoder-decoder models evaluate as in
    Seq2SeqTrainer, with the model's generation config kept as the recipe set it.
    """

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        if self.model.config.is_encoder_decoder or not self.args.predict_with_generate or prediction_loss_only:
            # Seq2SeqTrainer fills every unset generation setting with its default (max_length=20,
            # ...) in the model's own config, which would then be saved; keep the recipe's.
            kept = copy.deepcopy(self.model.generation_config)
            try:
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)
            finally:
                self.model.generation_config = kept
        inputs = compat.prepare_inputs(self, inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = model(**inputs).loss.detach()
        prompt_ids, prompt_mask = left_padded_prompts(inputs["input_ids"], inputs["labels"], self.processing_class.pad_token_id)
        with torch.no_grad():
            generated = self.model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **gen_kwargs)
        return loss, generated[:, prompt_ids.shape[1] :], inputs["labels"]


def left_padded_prompts(input_ids, labels, pad_id: int):
    """(ids, attention mask) of each row's prompt (the tokens before its first label), left-padded."""
    starts = [int((row != IGNORE_INDEX).nonzero()[0]) for row in labels]
    width = max(starts)
    ids = torch.full((len(starts), width), pad_id, dtype=input_ids.dtype, device=input_ids.device)
    mask = torch.zeros((len(starts), width), dtype=torch.long, device=input_ids.device)
    for i, start in enumerate(starts):
        ids[i, width - start :] = input_ids[i, :start]
        mask[i, width - start :] = 1
    return ids, mask


class WindowOrderTrainer(compat.EvalInDatasetOrder, Trainer):
    """A Trainer that evaluates and predicts in dataset order.

    QA post-processing pairs each window's logits with the window at the same position. Under
    ``train_sampling_strategy: group_by_length`` transformers 5 length-groups evaluation too
    (:class:`hf_toolkit.compat.EvalInDatasetOrder`), which would pair logits with the wrong windows.
    """
