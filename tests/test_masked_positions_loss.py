"""Masked-LM training computes vocabulary logits at the masked positions only
(:class:`hf_toolkit.tasks.trainers.MaskedPositionsTrainer`): the same loss and gradients as the
model's full-logits loss, the Trainer's own path wherever that cannot be promised, and full
logits for evaluation. Tiny models built from config, CPU, seconds."""

from __future__ import annotations

import pytest
import torch

from hf_toolkit import compat
from hf_toolkit.tasks import TASKS
from hf_toolkit.tasks.trainers import MaskedPositionsTrainer, masked_positions_only

VOCAB = 97


def tiny(class_name: str):
    import transformers

    configs = {
        "BertForMaskedLM": transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        "RobertaForMaskedLM": transformers.RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                                         max_position_embeddings=40),
        "XLMRobertaForMaskedLM": transformers.XLMRobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                               intermediate_size=64, max_position_embeddings=40),
        "DistilBertForMaskedLM": transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64),
    }
    config = configs[class_name]
    config.vocab_size = VOCAB
    torch.manual_seed(0)
    return getattr(transformers, class_name)(config)


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (3, 16), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 11:] = 0  # a padded row
    labels = torch.full_like(input_ids, -100)
    chosen = (torch.rand(input_ids.shape, generator=generator) < 0.3) & attention_mask.bool()
    labels[chosen] = input_ids[chosen]
    input_ids[chosen] = 4  # the "mask token"
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def trainer(tmp_path, model, **args) -> MaskedPositionsTrainer:
    from transformers import TrainingArguments

    from hf_toolkit.training.train import pass_loss_kwargs_only_to_losses_that_read_them

    training = TrainingArguments(str(tmp_path), per_device_train_batch_size=3, report_to="none", use_cpu=True, **args)
    built = MaskedPositionsTrainer(model=model, args=training)
    pass_loss_kwargs_only_to_losses_that_read_them(built)  # as hftk builds it: BERT's loss ignores the item count
    return built


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_the_masked_lm_task_trains_with_it():
    assert TASKS["masked-lm"].trainer_class() is MaskedPositionsTrainer


@pytest.mark.parametrize("class_name", sorted(compat.MASKED_LM_HEADS))
def test_the_loss_and_gradients_equal_the_full_logits_loss(tmp_path, class_name):
    model = tiny(class_name).train()
    inputs = batch()
    torch.manual_seed(1)  # the same dropout masks in both forwards
    full = model(**inputs).loss
    full.backward()
    expected = gradients(model)
    model.zero_grad()

    calls = []
    head = compat.masked_lm_head(model)
    handle = head.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    built = trainer(tmp_path, model)
    try:
        torch.manual_seed(1)
        sparse = built.compute_loss(model, inputs)
    finally:
        handle.remove()
    sparse.backward()
    assert calls == [torch.Size([int((inputs["labels"] != -100).sum()), 32])], "the head saw only the masked positions"
    assert sparse.item() == pytest.approx(full.item(), abs=1e-5)
    got = gradients(model)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=1e-5), name
    assert not head._forward_pre_hooks, "the restriction ends with the step"


def test_evaluation_and_prediction_get_full_logits(tmp_path):
    model = tiny("BertForMaskedLM")
    built = trainer(tmp_path, model)
    inputs = batch()
    model.eval()
    loss, logits, _ = built.prediction_step(model, inputs, prediction_loss_only=False)
    assert logits.shape == (3, 16, VOCAB)
    assert loss.item() == pytest.approx(model(**inputs).loss.item(), abs=1e-6)
    model.train()  # return_outputs (distillation, evaluation) asks for the model's outputs: full logits
    loss, outputs = built.compute_loss(model, inputs, return_outputs=True)
    assert outputs.logits.shape == (3, 16, VOCAB)


def test_the_trainers_own_path_runs_where_the_loss_could_differ(tmp_path):
    from transformers import ElectraConfig, ElectraForMaskedLM

    electra = ElectraForMaskedLM(ElectraConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=64)).train()
    assert compat.masked_lm_head(electra) is None
    assert trainer(tmp_path / "a", electra).sparse_head(electra, batch(), return_outputs=False) is None

    bert = tiny("BertForMaskedLM").train()
    smoothed = trainer(tmp_path / "b", bert, label_smoothing_factor=0.1)
    assert smoothed.sparse_head(bert, batch(), return_outputs=False) is None
    plain = trainer(tmp_path / "c", bert)
    assert plain.sparse_head(bert, batch(), return_outputs=False) is compat.masked_lm_head(bert)
    assert plain.sparse_head(bert, {k: v for k, v in batch().items() if k != "labels"}, return_outputs=False) is None


def test_lora_wrapped_models_take_the_full_path(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny("BertForMaskedLM"), LoraConfig(r=2, target_modules=["query", "value"])).train()
    assert trainer(tmp_path, model).sparse_head(model, batch(), return_outputs=False) is None


def test_the_selection_works_on_any_leading_shape():
    head = torch.nn.Linear(4, 2)
    hidden = torch.randn(2, 3, 4)
    chosen = torch.tensor([[True, False, True], [False, False, True]])
    with masked_positions_only(head, chosen):
        out = head(hidden)
    assert torch.allclose(out, head(hidden)[chosen])
