"""Chinese text reads as Chinese: ids decoded through hf_toolkit.core.readable join CJK characters
(WordPiece spaces every token) while Latin words keep their spaces and byte-level BPE is untouched;
checked on hftk generate, streaming, chat, serve and the dry run with the shared bert-base-chinese
vocabulary and a tiny GPT-2 trained on Tang poems (the shape of recipes/zh-tang-poems.yaml)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import finetune, shared_path, write

from hf_toolkit.core.readable import Readable, batch_decode, decode, join_cjk, spaces_cjk

HAN = "\u4e00-\u9fff"
SPACED_CJK = re.compile(f"[{HAN}，。] | [{HAN}，。]")  # a space touching a Chinese character

POEMS_RECIPE = """\
task: causal-lm
seed: 0
model:
  init: scratch
  tokenizer: {tokenizer}
  config: {{model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 32, n_positions: 64, bos_token_id: 101, eos_token_id: 102,
           resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}}
data:
  train: {poems}
  columns: {{text: text}}
  block_size: 32
  packing: padding_free
training:
  output_dir: {out}
  max_steps: 3
  per_device_train_batch_size: 8
  learning_rate: 1.0e-2
  save_strategy: 'no'
  report_to: none
  disable_tqdm: true
generation:
  do_sample: true
  max_new_tokens: 12
"""


@pytest.fixture(scope="module")
def zh_tokenizer_dir():
    return shared_path("chinese", "tokenizers", "bert-base-chinese")


@pytest.fixture(scope="module")
def zh_tokenizer(zh_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(zh_tokenizer_dir)


@pytest.fixture(scope="module")
def poems_recipe(tmp_path_factory, zh_tokenizer_dir):
    tmp = tmp_path_factory.mktemp("zh-poems")
    source = shared_path("chinese", "tang_poems", "tang_poems_30k.jsonl")
    rows = source.read_text(encoding="utf-8").splitlines()[:200]
    poems = write(tmp / "poems.jsonl", "\n".join(rows) + "\n")
    return write(tmp / "poems.yaml", POEMS_RECIPE.format(tokenizer=zh_tokenizer_dir, poems=poems, out=tmp / "run"))


@pytest.fixture(scope="module")
def poems_run(poems_recipe):
    finetune(poems_recipe)
    return poems_recipe.parent / "run"


def reads_as_chinese(text: str) -> bool:
    return bool(re.search(f"[{HAN}]", text)) and not SPACED_CJK.search(text)


def test_join_cjk_drops_spaces_next_to_chinese_and_keeps_them_between_latin_words():
    assert join_cjk("春 眠 不 觉 晓 ， 处 处 闻 啼 鸟 。") == "春眠不觉晓，处处闻啼鸟。"
    assert join_cjk("用 skype 通 话 ， 第 52 分 钟") == "用skype通话，第52分钟"
    assert join_cjk("the u . s . army and 北 京") == "the u . s . army and北京"
    assert join_cjk("「 你 好 」 hello world") == "「你好」hello world"
    assert join_cjk("안녕 하세요") == "안녕 하세요"  # Korean is written with spaces


def test_wordpiece_chinese_is_joined_and_byte_level_bpe_is_untouched(zh_tokenizer, gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    text = "春眠不觉晓，处处闻啼鸟。用skype通话hello world"
    ids = zh_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert zh_tokenizer.decode(ids).startswith("春 眠 不 觉 晓 ，")  # the problem
    assert spaces_cjk(zh_tokenizer) and decode(zh_tokenizer, ids) == text
    assert batch_decode(zh_tokenizer, [ids, ids[:3]]) == [text, "春眠不"]
    gpt2 = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    spaced = "Hello 世界 and 你 好 ,  two  spaces"
    gpt2_ids = gpt2(spaced)["input_ids"]
    assert not spaces_cjk(gpt2) and decode(gpt2, gpt2_ids) == gpt2.decode(gpt2_ids) == spaced


def test_streamed_text_is_the_decoded_text_piece_by_piece(zh_tokenizer):
    """A space streamed after a Latin word would vanish once a Chinese character follows: held back."""
    import torch

    from hf_toolkit.apply.generation import text_streamer

    ids = zh_tokenizer("hello world 春眠不觉晓，abc 处处 ok", add_special_tokens=False)["input_ids"]
    pieces: list[str] = []
    streamer = text_streamer(zh_tokenizer, pieces.append)
    streamer.put(torch.tensor([[zh_tokenizer.cls_token_id]]))  # the prompt: skipped
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert "".join(pieces) == decode(zh_tokenizer, ids) == "hello world春眠不觉晓，abc处处ok"
    assert len(pieces) > 3
    assert Readable(zh_tokenizer).decode(ids[:2]) == "hello world"


def test_generate_encodes_the_prompt_as_training_did_and_writes_chinese(poems_run, cli, zh_tokenizer):
    from hf_toolkit.apply.generation import Generator
    from hf_toolkit.core import rundir

    generator = Generator(rundir.open_run(str(poems_run)))
    assert generator.encode(["春眠"]) == [zh_tokenizer.convert_tokens_to_ids(["春", "眠"])]  # no [CLS] ... [SEP]
    result = cli("generate", "--model", poems_run, "--prompt", "春眠", "--seed", "0", "--json")
    assert result.exit_code == 0, result
    [row] = json.loads(result.stdout)
    assert reads_as_chinese(row["text"]), row["text"]
    pieces: list[str] = []
    [streamed] = generator.generate(generator.prepare(["春眠"], {}, seed=0), on_text=pieces.append)
    assert "".join(pieces) == streamed.text and reads_as_chinese(streamed.text)


def test_chat_replies_in_chinese(poems_run):
    from hf_toolkit.apply.chat import open_chat

    chat = open_chat(str(poems_run), {"max_new_tokens": 12, "do_sample": True}, seed=0)
    pieces: list[str] = []
    text = chat.reply("春眠不觉晓", on_text=pieces.append)
    assert reads_as_chinese(text), text
    assert "".join(pieces).strip() == text
    assert chat.history[0] == {"role": "user", "content": "春眠不觉晓"}


def test_serve_completes_chinese_plain_and_streamed(poems_run):
    from fastapi.testclient import TestClient

    from hf_toolkit.core import rundir
    from hf_toolkit.serving.app import create_app
    from hf_toolkit.serving.engine import Engine
    from hf_toolkit.serving.limits import Limits

    with TestClient(create_app(Engine.from_run(rundir.open_run(str(poems_run)), Limits()))) as client:
        body = {"prompt": "春眠", "max_tokens": 10, "seed": 0}
        response = client.post("/v1/completions", json=body)
        assert response.status_code == 200, response.text
        text = response.json()["choices"][0]["text"]
        assert reads_as_chinese(text), text
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as stream:
            chunks = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: {")]
        assert "".join(c["choices"][0]["text"] for c in chunks) == text


def test_dry_run_shows_the_training_text_as_written(poems_recipe, cli):
    result = cli("finetune", poems_recipe, "--dry-run")
    assert result.exit_code == 0, result
    examples = [line for line in result.stdout.splitlines() if re.match(r"\s+\[\d\] input:", line)]
    assert examples and all(reads_as_chinese(line.split("input:", 1)[1].strip()) for line in examples), examples


def test_hftk_chat_in_a_terminal_takes_and_writes_chinese(poems_run):
    pexpect = pytest.importorskip("pexpect", reason="pexpect is not installed (pip install -e '.[dev]')")
    import os
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("hftk")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "hf_toolkit"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TERM": "dumb"}
    child = pexpect.spawn(command[0], [*command[1:], "chat", str(poems_run), "--seed", "0"], env=env, encoding="utf-8", timeout=120)
    try:
        child.expect_exact("you> ")
        child.sendline("春眠不觉晓")
        child.expect_exact("bot> ")
        child.expect_exact("you> ")
        reply = child.before.strip()
        assert reads_as_chinese(reply), reply
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
