"""Every private or fragile library behaviour hftk relies on (:mod:`hf_toolkit.compat`), pinned: each
test fails loudly when the library changes under it (the attribute is gone, the method renamed,
the behaviour fixed upstream: then the item, and its workaround, can go)."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import pytest
import torch

from hf_toolkit import compat


def tiny_trainer(tmp_path, trainer_class=None, **args):
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=50))
    rows = Dataset.from_dict({"input_ids": [[1] * n for n in (3, 9, 5, 7, 2, 8)], "labels": [[1] * n for n in (3, 9, 5, 7, 2, 8)]})
    training = TrainingArguments(str(tmp_path), per_device_train_batch_size=2, per_device_eval_batch_size=2, max_steps=5,
                                 report_to="none", use_cpu=True, **args)
    return (trainer_class or Trainer)(model=model, args=training, train_dataset=rows, eval_dataset=rows)


# --- transformers' Trainer ----------------------------------------------------------------------


def test_the_trainer_still_decides_loss_kwargs_by_signature_and_only_source_tells_which_losses_read_the_count(tmp_path):
    from transformers import BertForSequenceClassification, GPT2LMHeadModel

    trainer = tiny_trainer(tmp_path)
    assert trainer.model_accepts_loss_kwargs is True, "the Trainer's flag (which hftk turns off) is still set from **kwargs"
    assert compat.forward_hands_item_count_to_loss(GPT2LMHeadModel) is True
    assert compat.forward_hands_item_count_to_loss(BertForSequenceClassification) is False
    assert not hasattr(BertForSequenceClassification, "accepts_loss_kwargs"), "models declare it now: read that instead"


def test_evaluation_is_still_length_grouped_with_training_and_the_mixin_keeps_dataset_order(tmp_path):
    from torch.utils.data import SequentialSampler
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from hf_toolkit.tasks import TASKS
    from hf_toolkit.tasks.trainers import WindowOrderTrainer

    grouped = tiny_trainer(tmp_path, train_sampling_strategy="group_by_length")
    assert isinstance(grouped._get_eval_sampler(grouped.eval_dataset), LengthGroupedSampler), \
        "transformers evaluates in dataset order again: EvalInDatasetOrder can go"
    assert TASKS["question-answering"].trainer_class() is WindowOrderTrainer  # the mixin's user
    ordered = tiny_trainer(tmp_path, WindowOrderTrainer, train_sampling_strategy="group_by_length")
    assert isinstance(ordered.get_eval_dataloader().sampler, SequentialSampler), "the Trainer no longer asks _get_eval_sampler"


def test_prepare_inputs_and_the_step_arithmetic_keep_their_shape(tmp_path):
    import inspect

    from transformers import Seq2SeqTrainer

    trainer = tiny_trainer(tmp_path)
    batch = compat.prepare_inputs(trainer, {"input_ids": torch.ones(2, 3, dtype=torch.long)})
    assert batch["input_ids"].device == trainer.args.device
    assert list(inspect.signature(Seq2SeqTrainer.prediction_step).parameters) == [
        "self", "model", "inputs", "prediction_loss_only", "ignore_keys", "gen_kwargs"]
    values = compat.initial_training_values(trainer, trainer.get_train_dataloader())
    assert values == {"epochs": 2, "steps_per_epoch": 3, "total_batch_size": 2, "max_steps": 5}


# --- what the libraries print -----------------------------------------------------------------


def transformers_source() -> str:
    import transformers

    return "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in Path(transformers.__file__).parent.rglob("*.py"))


def test_the_library_notes_and_bars_hftk_matches_by_text_still_exist():
    source = transformers_source()
    for text in (*compat.TRANSFORMERS_NOTES, *compat.TRANSFORMERS_BARS, compat.LOAD_REPORT, compat.MISSING_KEYS_WARNING):
        pieces = [piece.strip() for piece in re.split(r"[`.]", text) if len(piece.strip()) > 8]  # messages span source lines
        assert all(piece in source for piece in pieces), f"transformers no longer prints {text!r}: drop it from compat"
    from transformers.utils import logging as hf_logging

    assert callable(hf_logging.set_tqdm_hook)


def test_a_load_report_still_has_the_rows_console_shortens(tmp_path, caplog):
    from transformers import BertConfig, BertForSequenceClassification, BertModel
    from transformers.utils import logging as hf_logging

    from hf_toolkit.core import console
    from hf_toolkit.core.console import summarize_load_report

    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                         vocab_size=30)).save_pretrained(tmp_path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # other tests may have quieted transformers
    hf_logging.enable_propagation()
    handlers = logging.getLogger("transformers").handlers
    filtered = [handler for handler in handlers if console._TRANSFORMERS_NOTES in handler.filters]
    for handler in filtered:  # a command run earlier in this process shortens the report already
        handler.removeFilter(console._TRANSFORMERS_NOTES)
    try:
        with caplog.at_level(logging.WARNING, logger="transformers"):
            BertForSequenceClassification.from_pretrained(tmp_path)
    finally:
        hf_logging.disable_propagation()
        hf_logging.set_verbosity(verbosity)
        for handler in filtered:
            handler.addFilter(console._TRANSFORMERS_NOTES)
    reports = [r.getMessage() for r in caplog.records if compat.LOAD_REPORT in r.getMessage()]
    assert reports, "transformers no longer logs a LOAD REPORT"
    assert "classifier.weight" in summarize_load_report(reports[0])


def test_a_removed_warning_filter_applies_no_more():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message="compat probe")
        warnings.warn("compat probe")
        warnings.filters.pop(0)
        compat.warning_filters_changed()
        warnings.warn("compat probe")
    assert [str(w.message) for w in caught] == ["compat probe"]


# --- the hub, torch, sacreBLEU, uvicorn ----------------------------------------------------------


def test_cache_only_sets_both_libraries_offline_and_restores_them():
    import datasets
    from huggingface_hub import constants, hf_hub_download

    before = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    with compat.hub_cache_only():
        assert compat.hub_offline() and datasets.config.HF_HUB_OFFLINE is True
        with pytest.raises(Exception, match="(?i)offline|cannot find|local"):
            hf_hub_download("hftk/no-such-repo", "config.json")
    assert (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == before


def test_torch_still_says_which_attention_kernel_it_picks():
    from torch.nn.attention import SDPBackend

    query = torch.zeros(1, 2, 8, 64)  # fp32 on CPU: flash where this torch has the fused CPU kernel
    mask = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    assert compat.sdpa_backend(query, mask, 0.0).name in ("FLASH_ATTENTION", "MATH")
    assert compat.sdpa_backend(query, mask, 0.1) == SDPBackend.MATH, "CPU's fused kernel takes dropout now"


def test_sacrebleu_still_keeps_the_bootstrap_estimate_on_the_score():
    from sacrebleu.metrics import BLEU

    score = BLEU().corpus_score(["the cat sat on the mat", "a dog"], [["the cat sat on a mat", "a dog ran"]], n_bootstrap=20)
    mean, half_width = compat.bootstrap_estimate(score)
    assert mean > 0 and half_width >= 0


def test_uvicorn_still_captures_signals_through_the_method_the_mixin_overrides():
    import inspect

    import uvicorn

    assert "self.capture_signals()" in inspect.getsource(uvicorn.Server.serve)
    assert callable(uvicorn.Server.handle_exit)


def test_public_apis_replace_what_was_private():
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    from transformers import AttentionInterface

    assert {"sdpa", "flash_attention_2"} <= set(AttentionInterface().valid_keys())
    assert TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["gpt2"] == ["c_attn"]


# --- transformers' models -----------------------------------------------------------------------


def test_the_masked_lm_heads_are_still_where_hftk_looks_and_work_position_by_position():
    import transformers

    from hf_toolkit.tasks.trainers import masked_positions_only

    configs = {
        "BertForMaskedLM": transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
        "RobertaForMaskedLM": transformers.RobertaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                         intermediate_size=32, max_position_embeddings=20),
        "XLMRobertaForMaskedLM": transformers.XLMRobertaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                               intermediate_size=32, max_position_embeddings=20),
        "DistilBertForMaskedLM": transformers.DistilBertConfig(dim=16, n_layers=1, n_heads=2, hidden_dim=32),
    }
    assert configs.keys() == compat.MASKED_LM_HEADS.keys()
    for name, config in configs.items():
        config.vocab_size = 50
        model = getattr(transformers, name)(config).eval()
        head = compat.masked_lm_head(model)
        assert isinstance(head, torch.nn.Module), f"{name}.{compat.MASKED_LM_HEADS[name]} is gone"
        ids = torch.randint(5, 50, (2, 7))
        labels = torch.full_like(ids, -100)
        labels[0, 2], labels[1, 5] = 7, 9
        seen = []
        handle = head.register_forward_pre_hook(lambda module, args, seen=seen: seen.append(args[0]))
        try:
            with torch.no_grad():
                out = model(input_ids=ids, labels=labels)
        finally:
            handle.remove()
        [hidden] = seen
        assert hidden.shape == (2, 7, 16), f"{name}: the head's first module no longer takes the last hidden states"
        chosen = labels != -100
        with torch.no_grad(), masked_positions_only(head, chosen):
            sparse_logits = model(input_ids=ids).logits
        assert torch.allclose(sparse_logits, out.logits[chosen], atol=1e-6), f"{name}: the head no longer works position by position"
        plain_mean = torch.nn.functional.cross_entropy(out.logits[chosen], labels[chosen])
        assert out.loss.item() == pytest.approx(plain_mean.item(), abs=1e-6), f"{name}: the loss is no longer a plain mean"
