"""hftk serve: a real HTTP client against tiny models of every kind.

In-process (FastAPI's TestClient over the real app and a loaded Engine): completions plain and
streamed match ``hftk generate``, stop strings, n and seeds, chat completions, the task endpoints
match ``hftk predict --json``, and mistakes get a 4xx naming the field or limit. A real
``hftk serve`` subprocess (uvicorn): the ``openai`` client (plain and streamed), 20 concurrent
requests, a client that leaves mid-stream, and SIGTERM.

The models are built from configs (random weights, 1-2 layers) with the shared GPT-2 and BERT
tokenizers, in well under a second each.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import shared_path

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")
TINY_BERT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
DEFAULT_NEW_TOKENS = 12  # the tiny GPT-2's generation_config.json


# --------------------------------------------------------------------------------------------
# Tiny models


def build_gpt2(path: Path) -> Path:
    """A 1-layer GPT-2 with the real GPT-2 tokenizer, a chat template and max_new_tokens 12 saved as its default."""
    import torch
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        GPT2Config,
        GPT2LMHeadModel,
    )

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "gpt2"))
    tokenizer.chat_template = CHAT_TEMPLATE
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=128, vocab_size=len(tokenizer)))
    model.generation_config = GenerationConfig(max_new_tokens=DEFAULT_NEW_TOKENS, bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_bert(path: Path, head: str) -> Path:
    """A 1-layer BERT with the real bert-base-uncased tokenizer: head classifier, qa or mlm."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForMaskedLM,
        BertForQuestionAnswering,
        BertForSequenceClassification,
    )

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "bert-base-uncased"))
    extra = {"id2label": {0: "neg", 1: "pos", 2: "neutral"}, "label2id": {"neg": 0, "pos": 1, "neutral": 2}} if head == "classifier" else {}
    config = BertConfig(vocab_size=len(tokenizer), **TINY_BERT, **extra)
    auto = {"classifier": BertForSequenceClassification, "qa": BertForQuestionAnswering, "mlm": BertForMaskedLM}[head]
    auto(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_bart(path: Path) -> Path:
    """A 1-layer BART (encoder-decoder) with the GPT-2 tokenizer: its output answers the prompt, not continues it."""
    import torch
    from transformers import (
        AutoTokenizer,
        BartConfig,
        BartForConditionalGeneration,
        GenerationConfig,
    )

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(shared_path("tokenizers", "gpt2"))
    eos = tokenizer.eos_token_id
    config = BartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
                        pad_token_id=eos, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, decoder_start_token_id=eos)
    model = BartForConditionalGeneration(config)
    model.generation_config = GenerationConfig(max_new_tokens=8, decoder_start_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def client_for(path: Path, **limits):
    from fastapi.testclient import TestClient

    from hf_toolkit.cli import serve_limits
    from hf_toolkit.core.rundir import open_run
    from hf_toolkit.serving.app import create_app
    from hf_toolkit.serving.engine import Engine

    return TestClient(create_app(Engine.from_run(open_run(str(path)), serve_limits(**limits))))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return build_gpt2(tmp_path_factory.mktemp("serve") / "tiny-gpt2")


@pytest.fixture(scope="module")
def gpt2(gpt2_dir):
    with client_for(gpt2_dir, max_tokens=40, max_prompt_tokens=64, max_body_bytes=20_000) as client:
        yield client


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return build_bert(tmp_path_factory.mktemp("serve") / "tiny-classifier", "classifier")


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory):
    return build_bert(tmp_path_factory.mktemp("serve") / "tiny-qa", "qa")


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    return build_bert(tmp_path_factory.mktemp("serve") / "tiny-mlm", "mlm")


def events(response) -> list:
    """The data of each server-sent event; the stream must end with data: [DONE]."""
    body = "".join(response.iter_text())
    data = [block[len("data: "):] for block in body.split("\n\n") if block.strip()]
    assert all(block.startswith("data: ") for block in body.split("\n\n") if block.strip()), body
    assert data[-1] == "[DONE]", body
    return [json.loads(item) for item in data[:-1]]


def generate_json(cli, model: Path, *args: str) -> list[dict]:
    result = cli("generate", "--model", model, *args, "--json")
    assert result.exit_code == 0, result
    return json.loads(result.stdout)


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


# --------------------------------------------------------------------------------------------
# Completions (in-process)


def test_completion_is_what_hftk_generate_writes_with_the_runs_defaults(gpt2, gpt2_dir, cli):
    prompt = "Once upon a time"
    [expected] = generate_json(cli, gpt2_dir, "--prompt", prompt)
    response = gpt2.post("/v1/completions", json={"model": "tiny-gpt2", "prompt": prompt})
    assert response.status_code == 200, response.text
    completion = response.json()
    assert completion["object"] == "text_completion" and completion["model"] == "tiny-gpt2"
    [choice] = completion["choices"]
    assert choice["text"] == expected["text"] and choice["text"]
    # the run's generation_config.json says 12 new tokens; nothing else stops a random model
    assert choice["finish_reason"] == "length"
    assert completion["usage"] == {"prompt_tokens": 4, "completion_tokens": DEFAULT_NEW_TOKENS, "total_tokens": 16}


def test_streamed_completion_sends_the_same_text_in_openai_chunks(gpt2):
    prompt = {"prompt": "The little fox", "max_tokens": 10}
    whole = gpt2.post("/v1/completions", json=prompt).json()["choices"][0]["text"]
    with gpt2.stream("POST", "/v1/completions", json={**prompt, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        chunks = events(response)
    assert len(chunks) > 2  # streamed in pieces, then the closing chunk
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and "usage" not in chunks[-1]  # not asked for
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole  # no echoed prompt, no trailing line break
    # stream_options.include_usage: OpenAI's last chunk, no choices, the usage of the whole request
    with gpt2.stream("POST", "/v1/completions", json={**prompt, "stream": True, "stream_options": {"include_usage": True}}) as response:
        counted = events(response)
    assert counted[-1]["choices"] == [] and counted[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 10,
                                                                      "total_tokens": 13}
    assert "".join(c["choices"][0]["text"] for c in counted[:-1]) == whole


def test_stop_strings_end_the_text_before_them_plain_and_streamed(gpt2):
    full = gpt2.post("/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 20}).json()["choices"][0]["text"]
    stop = full[4:7]
    expected = full[: full.index(stop)]
    plain = gpt2.post("/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 20, "stop": [stop, "\u2603"]})
    assert plain.json()["choices"][0] == {"text": expected, "index": 0, "finish_reason": "stop"}
    with gpt2.stream("POST", "/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 20, "stop": stop,
                                                       "stream": True}) as response:
        chunks = events(response)
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_n_sampled_sequences_for_a_batch_of_prompts_repeat_with_the_seed(gpt2):
    request = {"prompt": ["Once upon a time", "The cat"], "max_tokens": 5, "temperature": 0.9, "top_p": 0.95, "n": 2, "seed": 3}
    first, again = (gpt2.post("/v1/completions", json=request).json() for _ in range(2))
    assert [c["index"] for c in first["choices"]] == [0, 1, 2, 3]
    assert first["choices"] == again["choices"]
    other = gpt2.post("/v1/completions", json={**request, "seed": 4}).json()
    assert other["choices"] != first["choices"]
    # streaming several sequences sends each whole, then their finish reasons
    with gpt2.stream("POST", "/v1/completions", json={**request, "stream": True}) as response:
        chunks = events(response)
    texts = [c["choices"][0]["text"] for c in chunks if c["choices"][0]["finish_reason"] is None]
    assert texts == [c["text"] for c in first["choices"]]


def test_a_request_is_encoded_and_configured_once_and_streams_raw_text(gpt2, monkeypatch, capsys):
    from hf_toolkit.apply import generation

    generator = gpt2.app.state.engine.generator
    calls = {"encode": 0, "config": 0}
    encode, config = generator.encode, generation.generation_config

    def counted(name, function):
        def call(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return call

    monkeypatch.setattr(generator, "encode", counted("encode", encode))
    monkeypatch.setattr(generation, "generation_config", counted("config", config))
    plain = gpt2.post("/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 6})
    assert plain.status_code == 200 and calls == {"encode": 1, "config": 1}
    with gpt2.stream("POST", "/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 6, "stream": True}) as response:
        text = "".join(c["choices"][0]["text"] for c in events(response))
    assert calls == {"encode": 2, "config": 2} and text == plain.json()["choices"][0]["text"]  # no echo, no line break
    assert capsys.readouterr().err == ""  # nothing said twice on the server's stderr (or at all)


def test_the_length_bound_counts_the_prompt_and_a_cut_prompt_is_said(gpt2_dir):
    prompt = " ".join(["word"] * 100)  # 100 tokens
    with client_for(gpt2_dir, max_tokens=200, max_prompt_tokens=500) as client:
        refused = error_of(client.post("/v1/completions", json={"prompt": "Hi there", "max_tokens": 128}), 400)
        assert "max_tokens 128 leaves no room for the prompt in the model's context of 128 tokens" in refused
        assert "give max_tokens 126 or fewer to keep the whole prompt (2 tokens)" in refused
        whole = client.post("/v1/completions", json={"prompt": "Hi there", "max_tokens": 126}).json()
        assert whole["usage"]["prompt_tokens"] == 2 and "truncated_prompts" not in whole
        cut = client.post("/v1/completions", json={"prompt": ["Hi", prompt], "max_tokens": 40}).json()
        assert cut["usage"]["prompt_tokens"] == 1 + 88
        [said] = cut["truncated_prompts"]
        assert (said["index"], said["dropped_tokens"], said["kept_tokens"]) == (1, 12, 88)
        assert "dropped the first 12 of its 100 tokens, kept the last 88; max_tokens 28 or fewer keeps it whole" in said["message"]
        with client.stream("POST", "/v1/completions", json={"prompt": prompt, "max_tokens": 40, "stream": True}) as response:
            chunks = events(response)
        assert chunks[-1]["choices"][0]["finish_reason"] and chunks[-1]["truncated_prompts"][0]["dropped_tokens"] == 12


def test_options_of_one_request_do_not_leak_into_the_next(gpt2):
    greedy = gpt2.post("/v1/completions", json={"prompt": "Hello"}).json()["choices"][0]["text"]
    gpt2.post("/v1/completions", json={"prompt": "Hello", "temperature": 1.5, "max_tokens": 3, "seed": 1})
    assert gpt2.post("/v1/completions", json={"prompt": "Hello"}).json()["choices"][0]["text"] == greedy


def test_chat_completions_apply_the_chat_template(gpt2):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    prompt = "system: Be brief.\nuser: Hi there\nassistant:"
    expected = gpt2.post("/v1/completions", json={"prompt": prompt, "max_tokens": 8}).json()["choices"][0]["text"]
    chat = gpt2.post("/v1/chat/completions", json={"model": "tiny-gpt2", "messages": messages, "max_tokens": 8}).json()
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": expected}
    with gpt2.stream("POST", "/v1/chat/completions", json={"messages": messages, "max_completion_tokens": 8, "stream": True}) as response:
        chunks = events(response)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[-1]["object"] == "chat.completion.chunk"


def test_models_health_info_and_the_playground_page(gpt2):
    models = gpt2.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny-gpt2"] and models["object"] == "list"
    assert gpt2.get("/health").json()["status"] == "ok"
    info = gpt2.get("/info").json()
    assert info["task"] == "causal-lm" and info["endpoint"] == "/v1/completions" and info["chat"] is True
    assert info["generation_defaults"]["max_new_tokens"] == DEFAULT_NEW_TOKENS and info["limits"]["max_tokens"] == 40
    page = gpt2.get("/")
    assert page.status_code == 200 and "<form" in page.text and "http" not in page.text.split("<script>")[1]
    assert gpt2.get("/docs").status_code == 404  # FastAPI's docs page would fetch scripts from a CDN
    for path in ("/load_model", "/reset"):
        assert gpt2.post(path, json={"model": "gpt2"}).status_code == 404


@pytest.mark.parametrize(("body", "status", "named"), [
    ('{"prompt": "Hi", ', 400, "not valid JSON"),
    ('[1, 2]', 400, "valid dictionary"),
    ('{"prompt": "Hi", "max_tokens": "many"}', 400, "max_tokens"),
    ('{"prompt": "Hi", "colour": "red"}', 400, "colour: unknown field"),
    ('{"prompt": "Hi", "logprobs": 2}', 400, "logprobs: OpenAI field not supported"),
    ('{"prompt": [1, 2, 3]}', 400, "prompt: prompts given as token ids are not supported by hftk serve"),
    ('{"prompt": [[1, 2], [3]]}', 400, "prompt: prompts given as token ids are not supported by hftk serve"),
    ('{"prompt": "Hi", "max_tokens": "3"}', 400, 'max_tokens: Input should be a valid integer, got "3"'),
    ('{"prompt": "Hi", "stream": "yes"}', 400, 'stream: Input should be a valid boolean, got "yes"'),
    ('{"prompt": "Hi", "temperature": NaN}', 400, "temperature: Input should be a finite number, got NaN"),
    ('{"prompt": "Hi", "stream_options": {"include_usage": true}}', 400, 'stream_options: only allowed with "stream": true'),
    ('{}', 400, "prompt: required field missing"),
    ('{"prompt": "Hi", "max_tokens": 41}', 400, "max_tokens: 41 is over this server's limit of 40 (hftk serve --max-tokens-limit"),
    ('{"prompt": "Hi", "n": 9, "temperature": 1}', 400, "n: 9 is over this server's limit of 8 (hftk serve --max-n"),
    ('{"prompt": "Hi", "n": 2}', 400, "need sampling"),
    ('{"prompt": "Hi", "temperature": 3}', 400, "temperature"),
    ('{"prompt": "Hi", "stop": ["a", "b", "c", "d", "e"]}', 400, "at most 4 stop strings"),
    ('{"prompt": "' + "word " * 80 + '"}', 400, "prompt: 81 tokens is over this server's limit of 64 (hftk serve --max-prompt-tokens"),
    ('{"prompt": "' + "x" * 30_000 + '"}', 413, "limit of 20000 bytes (hftk serve --max-body-bytes"),
    ('{"prompt": "Hi", "model": "gpt2-xl"}', 404, "only (GET /v1/models) and loads no other model"),
])
def test_malformed_and_over_limit_requests_get_a_4xx_naming_the_problem(gpt2, body, status, named):
    response = gpt2.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert named in error_of(response, status)


def test_bodies_that_are_not_utf8_json_are_refused_saying_why(gpt2):
    plain = gpt2.post("/v1/completions", content='{"prompt": "Hi"}', headers={"content-type": "text/plain"})
    assert "sent as Content-Type text/plain; hftk serve reads JSON" in error_of(plain, 415)
    latin1 = gpt2.post("/v1/completions", content='{"prompt": "caf\u00e9"}'.encode("latin-1"),
                       headers={"content-type": "application/json"})
    assert "not UTF-8 text (byte 0xe9 at position 15)" in error_of(latin1, 400)
    assert latin1.json()["error"]["type"] == "invalid_request_error"  # OpenAI's error shape


def test_models_retrieve_and_head_of_the_playground(gpt2):
    model = gpt2.get("/v1/models/tiny-gpt2")
    assert model.status_code == 200 and model.json()["id"] == "tiny-gpt2" and model.json()["object"] == "model"
    other = gpt2.get("/v1/models/org/gpt2-xl")
    assert "model 'org/gpt2-xl' is not served here" in error_of(other, 404)
    assert other.json()["error"]["type"] == "not_found_error"
    assert gpt2.head("/").status_code == 200


def test_after_bad_requests_the_server_still_answers(gpt2):
    for body in ('{"prompt": ', '{"prompt": "Hi", "max_tokens": 0}', "null"):
        assert 400 <= gpt2.post("/v1/completions", content=body, headers={"content-type": "application/json"}).status_code < 500
    assert gpt2.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_a_generative_run_points_task_endpoints_to_completions(gpt2):
    message = error_of(gpt2.post("/v1/classify", json={"text": "good"}), 404)
    assert "tiny-gpt2 is a causal-lm model" in message and "POST /v1/completions" in message


def test_a_seq2seq_model_answers_rather_than_continues_as_hftk_generate(tmp_path, cli):
    model = build_bart(tmp_path / "tiny-bart")
    [expected] = generate_json(cli, model, "--prompt", "a long article about fishing")
    with client_for(model) as client:
        assert client.get("/info").json()["continues_prompt"] is False
        plain = client.post("/v1/completions", json={"prompt": "a long article about fishing"}).json()
        assert plain["choices"][0]["text"] == expected["text"] and expected["text"]
        with client.stream("POST", "/v1/completions", json={"prompt": "a long article about fishing", "stream": True}) as response:
            chunks = events(response)
        assert "".join(c["choices"][0]["text"] for c in chunks) == expected["text"]  # the prompt is not echoed


# --------------------------------------------------------------------------------------------
# Task endpoints (in-process)


def same_records(actual, expected, tolerance: float = 1e-5) -> bool:
    """Records equal but for float noise (a batch of one pads differently than a batch of three)."""
    if isinstance(expected, float) and isinstance(actual, (int, float)):
        return abs(actual - expected) <= tolerance
    if isinstance(expected, dict):
        return isinstance(actual, dict) and actual.keys() == expected.keys() and all(
            same_records(actual[k], expected[k], tolerance) for k in expected)
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(
            same_records(a, e, tolerance) for a, e in zip(actual, expected))
    return actual == expected


def predict_json(cli, model: Path, *args: str) -> list[dict]:
    result = cli("predict", "--model", model, *args, "--json")
    assert result.exit_code == 0, result
    return json.loads(result.stdout)


def test_classify_answers_what_hftk_predict_json_prints(classifier_dir, cli):
    texts = ["a gorgeous, witty movie", "a tedious mess", "fine"]
    expected = predict_json(cli, classifier_dir, *[arg for text in texts for arg in ("--text", text)])
    with client_for(classifier_dir, max_batch=3) as client:
        batch = client.post("/v1/classify", json={"model": "tiny-classifier", "text": texts}).json()
        assert batch["object"] == "list" and same_records(batch["data"], expected)
        assert [r["label"] for r in batch["data"]] == [r["label"] for r in expected]
        assert set(batch["data"][0]["probabilities"]) == {"neg", "pos", "neutral"}
        single = client.post("/v1/classify", json={"text": texts[0]}).json()["data"]
        assert same_records(single, expected[:1])
        pairs = client.post("/v1/classify", json={"text": ["a", "b"], "text_pair": ["c", "d"]}).json()["data"]
        assert [r["text_pair"] for r in pairs] == ["c", "d"]
        assert "2 text but 1 text_pair" in error_of(client.post("/v1/classify", json={"text": ["a", "b"], "text_pair": "c"}), 400)
        assert "limit of 3 (hftk serve --max-batch" in error_of(client.post("/v1/classify", json={"text": ["a"] * 4}), 400)
        assert "text: give at least one" in error_of(client.post("/v1/classify", json={"text": []}), 400)
        assert "text: the text is empty" in error_of(client.post("/v1/classify", json={"text": ""}), 400)
        assert "text[1]: the text is empty" in error_of(client.post("/v1/classify", json={"text": ["good", " "]}), 400)
        wrong = error_of(client.post("/v1/completions", json={"prompt": "Hi"}), 404)
        assert "text-classification model" in wrong and "POST /v1/classify" in wrong
        assert "POST /v1/classify" in error_of(client.post("/v1/answer", json={"question": "q", "context": "c"}), 404)


def test_answer_gives_spans_of_the_context_as_hftk_predict(qa_dir, cli):
    context = "Normandy is a region in France. It was named after the Normans."
    questions = ["Where is Normandy?", "Who named it?"]
    expected = predict_json(cli, qa_dir, "--question", questions[0], "--question", questions[1], "--context", context)
    with client_for(qa_dir) as client:
        records = client.post("/v1/answer", json={"question": questions, "context": context}).json()["data"]
        assert same_records(records, expected)
        assert all(r["context"][r["start"]:r["end"]] == r["answer"] and r["answer"] for r in records)
        empty = client.post("/v1/answer", json={"question": "Where?", "context": " "}).json()["data"][0]
        assert empty["no_answer_reason"] == "empty context" and empty["start"] is None
        assert "2 question but 3 context" in error_of(client.post("/v1/answer", json={"question": ["a", "b"], "context": ["x", "y", "z"]}), 400)


def test_fill_mask_gives_the_top_k_fills_as_hftk_predict(mlm_dir, cli):
    text = "paris is the [MASK] of france."
    expected = predict_json(cli, mlm_dir, "--text", text, "--top-k", "3")
    with client_for(mlm_dir, top_k=10) as client:
        records = client.post("/v1/fill-mask", json={"text": [text], "top_k": 3}).json()["data"]
        assert same_records(records, expected) and len(records[0]["fills"][0]) == 3
        assert "[MASK]" in error_of(client.post("/v1/fill-mask", json={"text": "no mask here"}), 400)
        assert "top_k: 11 is over this server's limit of 10" in error_of(client.post("/v1/fill-mask", json={"text": text, "top_k": 11}), 400)
        info = client.get("/info").json()
        assert info["mask_token"] == "[MASK]" and [i["role"] for i in info["inputs"]] == ["text"]
        assert info["options"] == [{"name": "top_k", "type": "integer", "default": 5, "minimum": 1,
                                    "description": "Candidates per mask token."}]


# --------------------------------------------------------------------------------------------
# A real hftk serve process (uvicorn)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "hf_toolkit", "serve", str(model), "--port", str(port), *options],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"hftk serve exited {process.returncode}: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if json.load(response)["status"] == "ok":
                    return process, url
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError(f"hftk serve did not answer /health in 90 s: {process.stdout.read()}")


@pytest.fixture(scope="module")
def server(gpt2_dir):
    process, url = start_server(gpt2_dir, "--max-tokens-limit", "64")
    yield process, url
    if process.poll() is None:
        process.kill()
        process.wait()


def post(url: str, payload: dict, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_the_openai_client_completes_plain_and_streamed(server, gpt2_dir, cli):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server[1] + "/v1", api_key="unused", max_retries=0)
    [expected] = generate_json(cli, gpt2_dir, "--prompt", "Once upon a time", "--max-new-tokens", "9")
    started = time.perf_counter()
    completion = client.completions.create(model="tiny-gpt2", prompt="Once upon a time", max_tokens=9)
    print(f"\ncompletion of 9 tokens over HTTP: {1000 * (time.perf_counter() - started):.0f} ms")
    assert completion.choices[0].text == expected["text"] and completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 9
    stream = client.completions.create(model="tiny-gpt2", prompt="Once upon a time", max_tokens=9, stream=True)
    chunks = list(stream)
    assert len(chunks) > 2 and "".join(c.choices[0].text for c in chunks) == expected["text"]
    assert chunks[-1].choices[0].finish_reason == "length"
    chat = client.chat.completions.create(model="tiny-gpt2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="hftk serve --max-tokens-limit"):
        client.completions.create(model="tiny-gpt2", prompt="Hi", max_tokens=65)
    assert [m.id for m in client.models.list()] == ["tiny-gpt2"]
    assert client.models.retrieve("tiny-gpt2").id == "tiny-gpt2"
    counted = list(client.chat.completions.create(model="tiny-gpt2", messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=4, stream=True, stream_options={"include_usage": True}))
    assert counted[-1].choices == [] and counted[-1].usage.total_tokens == counted[-1].usage.prompt_tokens + \
        counted[-1].usage.completion_tokens > counted[-1].usage.prompt_tokens
    assert counted[0].choices[0].delta.role == "assistant"


def test_twenty_concurrent_requests_all_succeed(server):
    url = server[1]
    results: list = [None] * 20

    def one(i: int) -> None:
        if i % 4 == 3:  # some streamed
            request = urllib.request.Request(url + "/v1/completions", json.dumps(
                {"prompt": f"Story {i}:", "max_tokens": 8, "stream": True}).encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                results[i] = (response.status, response.read().decode().rstrip().endswith("data: [DONE]"))
        else:
            status, body = post(url + "/v1/completions", {"prompt": f"Story {i}:", "max_tokens": 8}, timeout=120)
            results[i] = (status, len(body["choices"]) == 1)

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    print(f"\n20 concurrent requests: {time.perf_counter() - started:.2f} s")
    assert results == [(200, True)] * 20


def test_a_client_leaving_mid_stream_does_not_stop_the_server(server):
    import http.client

    host, port = server[1].removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/v1/completions", json.dumps({"prompt": "Once", "max_tokens": 64, "stream": True}),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.read(20).startswith(b"data: ")
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()
    status, body = post(server[1] + "/v1/completions", {"prompt": "Hello", "max_tokens": 3})
    assert status == 200 and body["choices"][0]["text"]
    deadline = time.monotonic() + 10
    while post(server[1] + "/v1/completions", {"prompt": "x", "max_tokens": 1})[0] != 200 or \
            json.load(urllib.request.urlopen(server[1] + "/health"))["queued"] != 0:
        assert time.monotonic() < deadline, "the abandoned generation still holds the model"
        time.sleep(0.2)


def test_sigterm_stops_the_server_cleanly(server):
    process, url = server
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0, process.stdout.read()
    print(f"\nSIGTERM to exit: {time.monotonic() - started:.2f} s")
    output = process.stdout.read()
    assert "serving tiny-gpt2 (causal-lm)" in output and "Traceback" not in output


def test_sigterm_ends_an_open_stream_cleanly_within_the_grace_period(gpt2_dir, caplog):
    """The signal's handler (uvicorn's handle_exit, as SIGTERM calls it) with a stream longer than the grace
    period open: the stream ends with an error event and [DONE] before uvicorn would cancel it, the server exits."""
    import http.client
    import logging

    import uvicorn

    from hf_toolkit.core.rundir import open_run
    from hf_toolkit.serving.app import create_app
    from hf_toolkit.serving.engine import Engine
    from hf_toolkit.serving.limits import Limits
    from hf_toolkit.serving.server import GRACE_SECONDS
    from hf_toolkit.serving.uvicorn_server import Server

    engine = Engine.from_run(open_run(str(gpt2_dir)), Limits(max_tokens=100))
    turn = engine.worker.turn
    engine.worker.turn = lambda: (time.sleep(0.1), turn())  # 100 tokens take 10 s: longer than the grace period
    port = free_port()
    server = Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_config=None,
                                  timeout_graceful_shutdown=GRACE_SECONDS), engine)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/v1/completions", json.dumps({"prompt": "Once", "max_tokens": 100, "stream": True}),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    with caplog.at_level(logging.INFO):
        started = time.monotonic()
        server.handle_exit(signal.SIGTERM, None)
        rest = response.read().decode()
        ended = time.monotonic() - started
        thread.join(GRACE_SECONDS + 5)
    print(f"\nSIGTERM with a stream open: stream ended after {ended:.2f} s")
    assert not thread.is_alive() and ended < GRACE_SECONDS
    assert "the server is stopping" in rest and rest.rstrip().endswith("data: [DONE]"), rest[-500:]
    assert "Cancel" not in caplog.text and "Traceback" not in caplog.text, caplog.text


def test_serve_mistakes_exit_2_before_any_model_loads(cli, tmp_path, gpt2_dir):
    missing = cli("serve", tmp_path / "no-such-run", "--port", free_port())
    assert missing.exit_code == 2 and "no-such-run" in missing.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = cli("serve", gpt2_dir, "--port", taken.getsockname()[1])
    assert busy.exit_code == 2 and "give another --port" in busy.stderr
    bad_host = cli("serve", gpt2_dir, "--host", "no-such-host.invalid")
    assert bad_host.exit_code == 2 and "--host no-such-host.invalid" in bad_host.stderr
