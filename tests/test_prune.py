"""``hftk prune``: the pruned model is a plain transformers directory whose outputs equal the
source model's with only the kept layers (and kept feed-forward neurons); mistakes exit 2 before
any weights load."""

from __future__ import annotations

import pytest
from conftest import shared_path


def save_tiny(directory, kind: str):
    """A tiny untrained BERT classifier (3 labels) or GPT-2 LM with a real tokenizer, saved to `directory`."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
    )

    torch.manual_seed(0)
    if kind == "bert":
        tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "bert-base-uncased"))
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=48, num_labels=3, id2label={0: "neg", 1: "mid", 2: "pos"},
                            label2id={"neg": 0, "mid": 1, "pos": 2})
        model = BertForSequenceClassification(config)
    else:
        tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "gpt2"))
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=4, n_head=2, n_inner=48))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model.eval(), tokenizer


def reference_outputs(model, keep, dropped_neurons_of, inputs):
    """The source model run with only the layers `keep`, and each kept layer's dropped feed-forward
    neurons silenced (the weights that read them zeroed): what the pruned model must compute."""
    import copy

    import torch

    from hf_toolkit.apply.prune import ffn_pair, layer_list

    model = copy.deepcopy(model)
    base = model.base_model
    kept = torch.nn.ModuleList([layer_list(model)[i] for i in keep])
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
        dropped = dropped_neurons_of(layer)
        reader = ffn_pair(layer, model.config.model_type)[1]
        with torch.no_grad():
            if model.config.model_type == "gpt2":
                reader.weight[dropped, :] = 0
            else:
                reader.weight[:, dropped] = 0
    if model.config.model_type == "gpt2":
        base.h = kept
    else:
        base.encoder.layer = kept
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_pruned_model_computes_the_kept_layers_and_neurons(kind, cli, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from hf_toolkit.apply.prune import ffn_pair, importance

    source, tokenizer = save_tiny(tmp_path / "source", kind)
    result = cli("prune", tmp_path / "source", tmp_path / "pruned", "--keep-layers", "0,2", "--ffn-keep", "0.5")
    assert result.exit_code == 0, result
    assert "layers: 4 -> 2; feed-forward width: 48 -> 24" in result.stdout
    assert "parameters:" in result.stdout and "weights on disk:" in result.stdout

    auto = AutoModelForSequenceClassification if kind == "bert" else AutoModelForCausalLM
    pruned = auto.from_pretrained(tmp_path / "pruned").eval()  # plain transformers: no hftk involved
    layers_key, width_key = ("num_hidden_layers", "intermediate_size") if kind == "bert" else ("n_layer", "n_inner")
    assert (getattr(pruned.config, layers_key), getattr(pruned.config, width_key)) == (2, 24)
    if kind == "bert":
        assert pruned.config.id2label == {0: "neg", 1: "mid", 2: "pos"}
    assert (tmp_path / "pruned" / "tokenizer.json").is_file() and (tmp_path / "pruned" / "README.md").is_file()

    def dropped(layer):
        writer, reader = ffn_pair(layer, kind)
        scores = importance(writer, reader, kind)
        return scores.argsort()[:24]  # the 24 least important

    texts = ["a gorgeous, witty movie", "a tedious mess of a film"]
    inputs = tokenizer(texts, return_tensors="pt", padding=True) if kind == "bert" else tokenizer(texts[:1], return_tensors="pt")
    inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    expected = reference_outputs(source, [0, 2], dropped, inputs)
    with torch.no_grad():
        got = pruned(**inputs).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_layers_only_keeps_layer_outputs_exactly(cli, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    source, tokenizer = save_tiny(tmp_path / "source", "bert")
    assert cli("prune", tmp_path / "source", tmp_path / "pruned", "--keep-layers", "1,3").exit_code == 0
    pruned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned").eval()
    inputs = dict(tokenizer(["one more"], return_tensors="pt"))
    expected = reference_outputs(source, [1, 3], lambda layer: [], inputs)
    with torch.no_grad():
        torch.testing.assert_close(pruned(**inputs).logits, expected)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "nothing to prune: give --keep-layers"),
        (["--keep-layers", "0,a"], "--keep-layers: '0,a' is not a comma-separated list"),
        (["--keep-layers", "0,7"], "--keep-layers: the model has layers 0..3; [7] do not exist"),
        (["--keep-layers", "2,0"], "give each layer once, in increasing order"),
        (["--ffn-keep", "1.5"], "--ffn-keep: a share of neurons in (0, 1]"),
    ],
)
def test_mistakes_exit_2_with_one_message(args, message, cli, tmp_path, monkeypatch):
    save_tiny(tmp_path / "source", "bert")
    from hf_toolkit.core import rundir

    monkeypatch.setattr(rundir, "load_model", lambda *a, **k: pytest.fail("weights loaded before the checks"))
    result = cli("prune", tmp_path / "source", tmp_path / "pruned", *args)
    assert result.exit_code == 2, result
    assert message in result.stderr
    assert not (tmp_path / "pruned").exists()


def test_unsupported_architecture_and_busy_output_exit_2(cli, tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    T5ForConditionalGeneration(T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=50)).save_pretrained(tmp_path / "t5")
    result = cli("prune", tmp_path / "t5", tmp_path / "out", "--keep-layers", "0")
    assert result.exit_code == 2 and "hftk prune cuts BERT-family encoders" in result.stderr and "'t5'" in result.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("not hftk's")
    result = cli("prune", tmp_path / "t5", tmp_path / "busy", "--keep-layers", "0")
    assert result.exit_code == 2 and "is not empty; choose a new one" in result.stderr
    assert (tmp_path / "busy" / "mine.txt").read_text() == "not hftk's"
