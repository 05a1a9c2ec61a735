"""The Trainer subclasses tasks train with where transformers' own would do the wrong thing.

:class:`PromptSeq2SeqTrainer` (summarization and translation) evaluates a decoder-only model by
generating from each row's prompt; :class:`WindowOrderTrainer` (question answering) evaluates in
dataset order, so that each window's logits meet their window; :class:`MaskedPositionsTrainer` (masked-LM) computes the
training loss from vocabulary logits at the masked positions only. A task's ``trainer_class`` hook
returns one of them.

Imports torch and transformers at module level: only a task's ``trainer_class``, i.e. the
training flow, imports this module, never the task table.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
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


class MaskedPositionsTrainer(Trainer):
    """A Trainer whose training loss computes vocabulary logits only where a label is set.

    A masked-LM head turns every position's hidden state into logits over the whole vocabulary,
    though the loss reads only the masked ~15% (labels != -100). With a small model and a large
    vocabulary that is most of the step: a 4-layer, 128-wide BERT with bert-base-chinese's 21,128
    ids spends about two thirds of a training step there. While training, the head's first module
    (:func:`hf_toolkit.compat.masked_lm_head`) is handed the masked positions' hidden states only
    and the loss is the same mean cross-entropy the model computes (as fairseq's RoBERTa and
    transformers' ModernBERT ``sparse_prediction`` do): the same loss and gradients, far less work.
    The model's own ``forward`` still runs (through any DDP or autocast wrapper around it).

    Anything else takes the Trainer's own path, with full logits: evaluation and prediction
    (``return_outputs``), models not in :data:`hf_toolkit.compat.MASKED_LM_HEADS` or wrapped
    (LoRA, compiled), label smoothing or a custom loss function, and a loss that reads the
    Trainer's item count.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        head = self.sparse_head(model, inputs, return_outputs)
        if head is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        labels = inputs["labels"]
        chosen = labels != IGNORE_INDEX
        with masked_positions_only(head, chosen):
            logits = model(**{key: value for key, value in inputs.items() if key != "labels"}).logits
        return F.cross_entropy(logits.float(), labels[chosen].to(logits.device))

    def sparse_head(self, model, inputs, return_outputs: bool):
        """The head module to restrict, or None when the Trainer's own path must run."""
        if return_outputs or not model.training or "labels" not in inputs:
            return None
        if self.label_smoother is not None or self.compute_loss_func is not None or self.model_accepts_loss_kwargs:
            return None
        return compat.masked_lm_head(self.accelerator.unwrap_model(model, keep_torch_compile=True))


@contextlib.contextmanager
def masked_positions_only(head, chosen):
    """Within the block, `head` is called with the hidden states at the `chosen` positions only
    (a (batch, length) bool mask): (n_chosen, hidden) instead of (batch, length, hidden)."""

    def select(module, args):
        return (args[0][chosen.to(args[0].device)], *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()
