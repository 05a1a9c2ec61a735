"""hftk serve's playground page in a real headless Chromium, driven over the Chrome DevTools protocol.

For a generative, a classifier, a QA, a fill-mask run and a run of a task no hftk module knows
(tests/test_architecture.py's): load ``/``, fill the form, submit, and find the answer in the page
(the streamed text equals the API's completion; the label is the API's; the answer is highlighted
in the context; the fills are the API's; the new task's form has a box per role of its own and its
records are the API's). The server is the real app under uvicorn on a thread of the
test process; the browser is Debian's ``chromium`` (``apt-get install chromium``), skipped with a
reason where it is not installed.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import shared_path, write
from test_serve import build_bert, build_gpt2, free_port

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium with the DevTools protocol on a free port; yields the page's websocket."""
    websocket = pytest.importorskip("websocket", reason="the browser test drives Chromium with websocket-client (dev extra)")
    binary = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if binary is None:
        pytest.skip("no Chromium binary found (apt-get install chromium): the playground page is not tested in a browser")
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert process.poll() is None, f"{binary} exited with status {process.returncode}"
            assert time.monotonic() < deadline, f"{binary} did not open its DevTools port in 30 s"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        connection = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        yield Page(connection)
        connection.close()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


class Page:
    """The few DevTools protocol calls the test needs: navigate, evaluate, wait for a condition."""

    def __init__(self, connection):
        self.connection, self.ids = connection, itertools.count(1)

    def call(self, method: str, **params):
        number = next(self.ids)
        self.connection.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.connection.recv())
            if message.get("id") == number:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}; page: {self.evaluate('document.body.innerText')}"
            time.sleep(0.1)
        return value

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && document.body && document.body.dataset.state === 'ready'")

    def fill_and_submit(self, values: dict[str, str], button: str) -> None:
        assignments = "".join(f"document.getElementById({json.dumps(k)}).value = {json.dumps(v)};" for k, v in values.items())
        self.evaluate(assignments + f"document.getElementById({json.dumps(button)}).click(); true")
        state = self.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
        assert state == "done", self.evaluate("document.getElementById('error').textContent")


def serving(path: Path):
    """The real app for the run at `path` under uvicorn on a thread; yields its URL."""
    import uvicorn

    from hf_toolkit.core.rundir import open_run
    from hf_toolkit.serving.app import create_app
    from hf_toolkit.serving.engine import Engine
    from hf_toolkit.serving.limits import Limits

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Engine.from_run(open_run(str(path)), Limits())), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def serve(tmp_path):
    running = []

    def start(path: Path) -> str:
        running.append(serving(path))
        return running[-1][2]

    yield start
    for server, thread, _ in running:
        server.should_exit = True
        thread.join(10)


def post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def test_playground_streams_a_completion(browser, serve, tmp_path):
    url = serve(build_gpt2(tmp_path / "tiny-gpt2"))
    browser.open(url + "/")
    assert browser.evaluate("document.body.dataset.form") == "generate-form"
    browser.fill_and_submit({"prompt": "Once upon a time", "max_tokens": "10"}, "generate-submit")
    expected = post(url + "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 10})["choices"][0]["text"]
    assert browser.evaluate("document.getElementById('generated').textContent") == expected and expected
    assert browser.evaluate("document.querySelector('#result .prompt').textContent") == "Once upon a time"


def test_playground_classifies_a_text_with_label_scores(browser, serve, tmp_path):
    url = serve(build_bert(tmp_path / "tiny-classifier", "classifier"))
    browser.open(url + "/")
    browser.fill_and_submit({"text": "a gorgeous, witty movie"}, "task-submit")
    [record] = post(url + "/v1/classify", {"text": "a gorgeous, witty movie"})["data"]
    assert browser.evaluate("document.getElementById('label').textContent").startswith(record["label"] + " ")
    assert browser.evaluate("document.querySelectorAll('#result .bar').length") == 3


def test_playground_highlights_the_answer_in_the_context(browser, serve, tmp_path):
    url = serve(build_bert(tmp_path / "tiny-qa", "qa"))
    context = "Normandy is a region in France. It was named after the Normans."
    browser.open(url + "/")
    browser.fill_and_submit({"question": "Where is Normandy?", "context": context}, "task-submit")
    [record] = post(url + "/v1/answer", {"question": "Where is Normandy?", "context": context})["data"]
    assert browser.evaluate("document.querySelector('#highlighted mark').textContent") == record["answer"] != ""
    assert browser.evaluate("document.getElementById('highlighted').textContent") == context


def test_playground_fills_masks_with_the_top_k_option(browser, serve, tmp_path):
    url = serve(build_bert(tmp_path / "tiny-mlm", "mlm"))
    browser.open(url + "/")
    assert browser.evaluate("[...document.querySelectorAll('#fields textarea, #fields input')].map(e => e.id)") == ["text", "top_k"]
    assert browser.evaluate("document.getElementById('top_k').value") == "5", "the option's default, from /info"
    browser.fill_and_submit({"text": "paris is the [MASK] of france .", "top_k": "3"}, "task-submit")
    [record] = post(url + "/v1/fill-mask", {"text": "paris is the [MASK] of france .", "top_k": 3})["data"]
    shown = browser.evaluate("[...document.querySelectorAll('#result .fills td:first-child')].map(e => e.textContent)")
    assert shown == [fill["token"] for fill in record["fills"][0]] and len(shown) == 3


def test_a_new_task_gets_its_form_from_its_roles(browser, serve, tmp_path, cli, monkeypatch, tiny_corpus):
    """tests/test_architecture.py's test-only task (role passage, endpoint /v1/before): no page edit."""
    from test_architecture import RECIPE, reversed_lm_task

    from hf_toolkit import tasks

    task = reversed_lm_task()
    monkeypatch.setitem(tasks.TASKS, task.name, task)
    lines = [line for line in tiny_corpus.read_text().splitlines() if line.strip()][:60]
    corpus = write(tmp_path / "passages.jsonl", "".join(json.dumps({"passage": line}) + "\n" for line in lines))
    trained = cli("finetune", write(tmp_path / "r.yaml", RECIPE.format(corpus=corpus, out=tmp_path / "run", extra="")))
    assert trained.exit_code == 0, trained
    url = serve(tmp_path / "run")
    browser.open(url + "/")
    assert browser.evaluate("document.body.dataset.form") == "task-form"
    assert browser.evaluate("[...document.querySelectorAll('#fields textarea, #fields input')].map(e => e.id)") == ["passage"]
    assert "Passage(s) to find the token before." in browser.evaluate("document.querySelector('label[for=passage]').textContent")
    assert browser.evaluate("document.getElementById('task-submit').textContent") == "Before"
    browser.fill_and_submit({"passage": "the king"}, "task-submit")
    [record] = post(url + "/v1/before", {"passage": "the king"})["data"]
    assert json.loads(browser.evaluate("document.querySelector('#result pre.record').textContent")) == record


def build_chinese(path: Path, head: str) -> Path:
    """A 1-layer GPT-2 (head "gpt2") or BERT QA model (head "qa") with the real bert-base-chinese vocabulary,
    whose WordPiece decoding spaces every character ("春 眠"): the page must show Chinese as written."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForQuestionAnswering,
        GenerationConfig,
        GPT2Config,
        GPT2LMHeadModel,
    )

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(shared_path("chinese", "tokenizers", "bert-base-chinese"))
    if head == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=128, vocab_size=len(tokenizer),
                                           bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id))
        # Untrained weights: keep them to Chinese characters, so the page has Chinese to show.
        latin = [i for token, i in tokenizer.get_vocab().items() if not re.fullmatch("[\u4e00-\u9fff]", token)]
        model.generation_config = GenerationConfig(max_new_tokens=10, pad_token_id=tokenizer.pad_token_id, suppress_tokens=latin)
    else:
        model = BertForQuestionAnswering(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_playground_shows_a_chinese_prompt_and_completion_as_written(browser, serve, tmp_path):
    url = serve(build_chinese(tmp_path / "tiny-zh-gpt2", "gpt2"))
    browser.open(url + "/")
    browser.fill_and_submit({"prompt": "春眠不觉晓", "max_tokens": "10"}, "generate-submit")
    expected = post(url + "/v1/completions", {"prompt": "春眠不觉晓", "max_tokens": 10})["choices"][0]["text"]
    shown = browser.evaluate("document.getElementById('generated').textContent")
    assert shown == expected and re.search("[\u4e00-\u9fff]", shown), shown
    assert not re.search("[\u4e00-\u9fff] [\u4e00-\u9fff]", shown), f"Chinese shown with spaces between characters: {shown!r}"
    assert browser.evaluate("document.querySelector('#result .prompt').textContent") == "春眠不觉晓"


def test_playground_highlights_a_chinese_answer_in_its_context(browser, serve, tmp_path):
    url = serve(build_chinese(tmp_path / "tiny-zh-qa", "qa"))
    context = "北京大学创办于1898年，初名京师大学堂，是中国近现代第一所国立综合性大学。"
    browser.open(url + "/")
    browser.fill_and_submit({"question": "北京大学创办于哪一年？", "context": context}, "task-submit")
    [record] = post(url + "/v1/answer", {"question": "北京大学创办于哪一年？", "context": context})["data"]
    assert record["answer"] and record["answer"] in context  # a span of the context, no spaces added
    assert browser.evaluate("document.querySelector('#highlighted mark').textContent") == record["answer"]
    assert browser.evaluate("document.getElementById('highlighted').textContent") == context


# --------------------------------------------------------------------------------------------
# The page itself (no browser needed)


def page_tags() -> list[tuple[str, dict[str, str]]]:
    """Every start tag of page.html with its attributes."""
    from html.parser import HTMLParser
    from importlib import resources

    tags: list[tuple[str, dict[str, str]]] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append((tag, {name: value or "" for name, value in attrs}))

    Tags().feed(resources.files("hf_toolkit.serving").joinpath("page.html").read_text(encoding="utf-8"))
    return tags


def accepts(attrs: dict[str, str], value: float) -> bool:
    """Whether a browser's number input with these attributes takes `value` (HTML's step rule)."""
    step = attrs.get("step", "1")
    low = float(attrs.get("min", "0"))
    if step == "any":
        return True
    steps = (value - low) / float(step)
    return abs(steps - round(steps)) < 1e-9


def test_the_temperature_box_takes_two_decimals_and_the_page_asks_for_no_favicon():
    inputs = {attrs["id"]: attrs for tag, attrs in page_tags() if tag == "input"}
    assert all(accepts(inputs["temperature"], value) for value in (0.75, 0.05, 1.3, 2))
    icons = [attrs for tag, attrs in page_tags() if tag == "link" and attrs.get("rel") == "icon"]
    assert icons and icons[0]["href"].startswith("data:")  # an inline icon: no request for /favicon.ico (a 404)
