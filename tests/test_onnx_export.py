"""``hftk export --format onnx [--quantize int8]``: the graph matches PyTorch (fp32 within 1e-4 on
shapes it was not traced with), int8 is an onnxruntime graph (no pickle), and predict / eval run
the exported directory with onnxruntime. Tiny untrained models: the numbers, not the answers, matter."""

from __future__ import annotations

import json

import pytest
from conftest import shared_path

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'hf_toolkit[onnx]'")
pytest.importorskip("onnxscript", reason="needs the onnx extra: pip install 'hf_toolkit[onnx]'")


def save_tiny(directory, auto_class: str, tokenizer_name: str = "bert-base-uncased", **config):
    import torch
    import transformers
    from transformers import AutoTokenizer, BertConfig, GPT2Config

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", tokenizer_name))
    if tokenizer_name == "gpt2":
        model_config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, **config)
    else:
        model_config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=48, **config)
    getattr(transformers, auto_class).from_config(model_config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("cls"), "AutoModelForSequenceClassification", num_labels=2,
                     id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})


@pytest.fixture(scope="module")
def exported(classifier, tmp_path_factory):
    """The classifier exported in fp32 and in int8, with each export's printed numbers."""
    from typer.testing import CliRunner

    from hf_toolkit.cli import app

    out, printed = tmp_path_factory.mktemp("exports"), {}
    for kind, extra in (("fp32", []), ("int8", ["--quantize", "int8"])):
        result = CliRunner().invoke(app, ["export", str(classifier), str(out / kind), "--format", "onnx", *extra])
        assert result.exit_code == 0, result.output
        printed[kind] = result.stdout
    return out, printed


def number(printed: str, key: str) -> float:
    return float(next(line.split(":")[1] for line in printed.splitlines() if line.strip().startswith(key + ":")))


def test_fp32_graph_matches_pytorch_and_int8_is_onnx_not_pickle(exported, classifier):
    out, printed = exported
    assert number(printed["fp32"], "max_abs_logit_diff") < 1e-4
    assert {"model.onnx", "config.json", "tokenizer.json", "hftk_onnx.json"} <= {p.name for p in (out / "fp32").iterdir()}
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.bin"))
    int8 = out / "int8"
    assert not list(int8.glob("model_fp32*"))  # the intermediate fp32 graph is not left behind
    assert json.loads((int8 / "hftk_onnx.json").read_text())["quantized"] == "int8"
    assert number(printed["int8"], "size_int8_mb") < number(printed["int8"], "size_fp32_mb")
    assert number(printed["int8"], "max_abs_logit_diff_int8") < 0.05  # int8 rounds; it does not break the model
    import onnx

    graph = onnx.load(str(int8 / "model.onnx"))
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for node in graph.graph.node)


def test_predict_runs_the_export_with_the_pytorch_answers(exported, classifier, cli):
    out, _ = exported
    texts = ["a gorgeous, witty movie", "dull", "the plot was really quite awful and the actors were bad"]
    args = [arg for text in texts for arg in ("--text", text)]
    torch_records = json.loads(cli("predict", "--model", classifier, *args, "--json").stdout)
    onnx_records = json.loads(cli("predict", "--model", out / "fp32", *args, "--json").stdout)
    for a, b in zip(torch_records, onnx_records):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-5)


@pytest.mark.slow  # three exports, ~10 s of CPU each (the classifier's parity runs in the default suite)
@pytest.mark.parametrize("auto_class, tokenizer", [("AutoModelForQuestionAnswering", "bert-base-uncased"),
                                                   ("AutoModelForMaskedLM", "bert-base-uncased"),
                                                   ("AutoModelForCausalLM", "gpt2")])
def test_qa_fill_mask_and_causal_lm_graphs_match_pytorch(auto_class, tokenizer, cli, tmp_path):
    source = save_tiny(tmp_path / "source", auto_class, tokenizer)
    result = cli("export", source, tmp_path / "onnx", "--format", "onnx")
    assert result.exit_code == 0, result
    assert number(result.stdout, "max_abs_logit_diff") < 1e-4
    if auto_class == "AutoModelForQuestionAnswering":
        answer = cli("predict", "--model", tmp_path / "onnx", "--question", "where?", "--context", "in paris", "--json")
        assert json.loads(answer.stdout)[0]["answer"] in "in paris"
    if auto_class == "AutoModelForCausalLM":  # scores text as PyTorch does, refuses to generate (no KV cache)
        generated = cli("generate", "--model", tmp_path / "onnx", "--prompt", "hi")
        assert generated.exit_code == 2 and "has no KV cache" in generated.stderr
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from hf_toolkit.core.onnx_model import OnnxModel
        from hf_toolkit.metrics.lm_perplexity import perplexity

        texts, tok = ["Once upon a time there was a fox.", "It ran into the woods."], AutoTokenizer.from_pretrained(source)
        graph = OnnxModel(tmp_path / "onnx", AutoConfig.from_pretrained(tmp_path / "onnx"))
        expected = perplexity(texts, AutoModelForCausalLM.from_pretrained(source), tok, max_length=8, stride=4)
        assert perplexity(texts, graph, tok, max_length=8, stride=4)["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)


def test_the_traced_module_takes_positional_inputs_and_returns_the_task_outputs():
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    from hf_toolkit.apply.export import graph_module
    from hf_toolkit.apply.onnx_graph import Graph

    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                intermediate_size=32)).eval()
    graph = graph_module(model, "question-answering", ["input_ids", "attention_mask"])
    assert isinstance(graph, Graph) and not graph.training
    ids, mask = torch.tensor([[2, 5, 7, 3], [2, 9, 3, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    start, end = graph(ids, mask)
    expected = model(input_ids=ids, attention_mask=mask)
    assert torch.equal(start, expected.start_logits) and torch.equal(end, expected.end_logits)
    assert not torch.equal(start, model(input_ids=ids).start_logits), "the mask given by position reaches the model"
    assert graph_module(model, "causal-lm", ["input_ids"]).extra == {"use_cache": False}


@pytest.mark.parametrize("args, message", [
    (["--quantize", "int8"], "--quantize int8 writes an ONNX graph quantized by onnxruntime: add --format onnx"),
    (["--format", "tflite"], "--format: 'tflite' is not supported"),
    ([], "nothing to do: give --merge"),
])
def test_export_mistakes_exit_2(args, message, classifier, cli, tmp_path):
    result = cli("export", classifier, tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.stderr, result


def test_seq2seq_is_refused_before_loading(cli, tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    T5ForConditionalGeneration(T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=50)).save_pretrained(tmp_path / "t5")
    result = cli("export", tmp_path / "t5", tmp_path / "out", "--format", "onnx")
    assert result.exit_code == 2 and "--format onnx exports text-classification, question-answering" in result.stderr
