"""``hftk chat RUN`` through a real pseudo-terminal (pexpect) on a tiny GPT-2 run: a message gets a
streamed reply, ``/reset`` clears the history, ``/exit`` ends with status 0, Ctrl-C at the prompt
with 130. Plus the prompt it
builds (plain text that fits the context, or the tokenizer's chat template), streaming in pieces,
and a classifier exiting 2 with a pointer to ``hftk predict`` before its weights load.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import finetune, write

pexpect = pytest.importorskip("pexpect", reason="pexpect is not installed (pip install -e '.[dev]')")

RECIPE = """\
task: causal-lm
seed: 0
model:
  init: scratch
  train_tokenizer: {{vocab_size: 300}}
  config: {{model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 32, n_positions: 64}}
data:
  train: {corpus}
  block_size: 32
training:
  output_dir: {out}
  max_steps: 10
  per_device_train_batch_size: 8
  learning_rate: 1.0e-2
  save_strategy: 'no'
  report_to: none
  disable_tqdm: true
generation:
  max_new_tokens: 12
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_corpus):
    tmp = tmp_path_factory.mktemp("chat")
    corpus = write(tmp / "corpus.txt", tiny_corpus.read_text()[:8000])
    recipe = write(tmp / "tiny.yaml", RECIPE.format(corpus=corpus, out=tmp / "run"))
    finetune(recipe)
    return tmp / "run"


def hftk_command() -> list[str]:
    script = Path(sys.executable).with_name("hftk")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hf_toolkit"]


def test_chat_in_a_terminal_streams_replies_resets_and_exits_0(run_dir):
    command = hftk_command()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TERM": "dumb"}
    child = pexpect.spawn(command[0], [*command[1:], "chat", str(run_dir), "--do-sample", "--seed", "0"], env=env, encoding="utf-8", timeout=90)
    try:
        child.expect("using plain prompts \\(the tokenizer has no chat template\\)")
        child.expect_exact("you> ")
        child.sendline("Once upon a time")
        child.expect_exact("bot> ")
        child.expect_exact("you> ")
        reply = child.before.strip()
        assert reply and "Once upon a time" not in reply, f"a reply of its own, not the prompt echoed: {reply!r}"
        child.sendline("/reset")
        child.expect_exact("(history cleared)")
        child.expect_exact("you> ")
        child.sendline("/nonsense")
        child.expect_exact("(unknown command /nonsense; /reset, /exit)")
        child.expect_exact("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before


def test_ctrl_c_at_the_prompt_exits_130(run_dir):
    command = hftk_command()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TERM": "dumb"}
    child = pexpect.spawn(command[0], [*command[1:], "chat", str(run_dir)], env=env, encoding="utf-8", timeout=90)
    try:
        child.expect_exact("you> ")
        child.sendintr()  # Ctrl-C, through the terminal as a user presses it
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus, child.before)


@pytest.fixture(scope="module")
def chat(run_dir):
    from hf_toolkit.apply.chat import open_chat

    return open_chat(str(run_dir), {"max_new_tokens": 12, "do_sample": True}, seed=0)  # a barely trained model: sample


def test_reply_streams_in_pieces_and_keeps_the_history(chat):
    chat.reset()
    pieces: list[str] = []
    text = chat.reply("The little dog", on_text=pieces.append)
    assert len(pieces) > 1, "streamed as it is generated, not at once"
    assert "".join(pieces).strip() == text and text
    assert chat.history == [{"role": "user", "content": "The little dog"}, {"role": "assistant", "content": text}]
    assert chat.prompt("Then") == f"The little dog\n{text}\nThen\n", "plain prompts: the turns joined by newlines"
    chat.reset()
    assert chat.prompt("Then") == "Then\n" and chat.history == []


def test_plain_prompt_drops_the_oldest_turns_to_fit_the_context(chat):
    chat.reset()
    long = "Tom and Sue went to the park to play with a ball. " * 3  # about 40 tokens each (context 64 - 12 new)
    chat.history = [{"role": "user", "content": long}, {"role": "assistant", "content": "ok"}] * 3
    prompt = chat.prompt("hi")
    assert chat.dropped >= 4 and prompt.endswith("hi\n")
    assert len(chat.tokenizer(prompt)["input_ids"]) <= 64 - 12
    chat.reset()


def test_a_chat_template_shapes_the_prompt(chat):
    # short, as the tiny run's context is 64 tokens of a 300-token vocabulary
    template = ("{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}|{% endfor %}"
                "{% if add_generation_prompt %}a:{% endif %}")
    chat.reset()
    chat.tokenizer.chat_template = template
    try:
        from hf_toolkit.apply.chat import Chat

        templated = Chat(chat.generator, chat.options, system="be", seed=0)
        assert templated.mode == "the tokenizer's chat template"
        templated.history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]
        assert templated.prompt("how are you") == "s:be|u:hello|a:hi there|u:how are you|a:"
        assert templated.reply("how are you"), "it generates from the templated prompt"
    finally:
        chat.tokenizer.chat_template = None


def test_a_classifier_exits_2_pointing_at_predict(tmp_path, cli):
    from transformers import BertConfig, BertForSequenceClassification

    model_dir = tmp_path / "classifier"
    BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32, vocab_size=100)).save_pretrained(model_dir)
    result = cli("chat", model_dir)
    assert result.exit_code == 2, result
    assert "predicts rather than generates text" in result.stderr and "hftk predict --model" in result.stderr
