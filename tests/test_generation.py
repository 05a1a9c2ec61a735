"""hftk generate: how it merges a model's saved decoding settings with the user's options, and
what it does with prompts that do not fit (empty, past the context, longer than --max-length)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from hf_toolkit.apply.generation import DEFAULT_MAX_NEW_TOKENS, generation_config
from hf_toolkit.errors import HftkError


def saved(**settings):
    """A run's saved generation config and a stand-in tokenizer (only its pad token matters here)."""
    from transformers import GenerationConfig

    return GenerationConfig(**settings), SimpleNamespace(pad_token_id=0)


def test_greedy_turns_off_the_saved_sampling_settings():
    base, tokenizer = saved(do_sample=True, temperature=0.8, top_k=40, max_new_tokens=60)
    config = generation_config(base, tokenizer, {"do_sample": False})
    assert config.do_sample is False
    assert config.temperature is None and config.top_k is None
    assert config.max_new_tokens == 60  # everything else stays as saved
    assert base.temperature == 0.8  # the run's own config is not touched


def test_max_length_replaces_the_saved_max_new_tokens():
    base, tokenizer = saved(max_new_tokens=60)
    config = generation_config(base, tokenizer, {"max_length": 5, "max_new_tokens": None})
    assert config.max_length == 5 and config.max_new_tokens is None


def test_default_length_when_neither_model_nor_user_sets_one():
    base, tokenizer = saved()
    assert generation_config(base, tokenizer, {}).max_new_tokens == DEFAULT_MAX_NEW_TOKENS


def test_impossible_combinations_are_user_errors():
    base, tokenizer = saved()
    with pytest.raises(HftkError, match="num_return_sequences"):
        generation_config(base, tokenizer, {"num_return_sequences": 3})


# --------------------------------------------------------------------------------------------
# `hftk generate` on prompts that do not fit: a tiny GPT-2 (random weights, 128 positions) with
# the real GPT-2 tokenizer, saved as a plain model directory.

CONTEXT = 128
LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 223  # 2,007 words, far past 128 tokens


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory, gpt2_tokenizer_dir):
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    config = GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=CONTEXT, vocab_size=len(tokenizer))
    path = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_gpt2_without_bos(tiny_gpt2, tmp_path_factory):
    """The same model whose tokenizer has no BOS token."""
    import shutil

    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tiny-gpt2-no-bos")
    shutil.copytree(tiny_gpt2, path, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.bos_token = None
    tokenizer.save_pretrained(path)
    assert AutoTokenizer.from_pretrained(path).bos_token is None
    return path


def token_ids(run, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(run)(text).input_ids


def plain_greedy(run, ids: list[int], new_tokens: int) -> str:
    """The greedy continuation of `ids` in plain transformers, decoded as hftk decodes it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(run), AutoTokenizer.from_pretrained(run)
    with torch.inference_mode():
        output = model.generate(
            torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    return tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True)


def assert_user_error(result, *named: str) -> None:
    """Exit 2 with one error line, last on stderr, that names each of `named`; nothing on stdout."""
    assert result.exit_code == 2, result
    assert result.stdout == "" and "Traceback" not in result.stderr, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("hftk: error: ")]
    assert len(errors) == 1 and result.stderr.rstrip("\n").endswith(errors[0]), result
    for text in named:
        assert text in errors[0], (text, result)


def test_empty_prompt_generates_from_bos(tiny_gpt2, cli):
    from transformers import AutoTokenizer

    bos = AutoTokenizer.from_pretrained(tiny_gpt2).bos_token_id
    expected = plain_greedy(tiny_gpt2, [bos], 6)
    as_json = cli("generate", "--model", tiny_gpt2, "--prompt", "", "--max-new-tokens", "6", "--json")
    assert as_json.exit_code == 0, as_json
    assert json.loads(as_json.stdout) == [{"prompt": "", "text": expected}]
    streamed = cli("generate", "--model", tiny_gpt2, "--prompt", "", "--max-new-tokens", "6")
    assert streamed.exit_code == 0, streamed
    assert streamed.stdout.rstrip("\n") == expected.rstrip("\n")


def test_empty_prompt_in_a_batch_is_generated_from_bos(tiny_gpt2, cli):
    from transformers import AutoTokenizer

    bos = AutoTokenizer.from_pretrained(tiny_gpt2).bos_token_id
    prompts = ["", "Once upon a time there was"]
    args = [a for p in prompts for a in ("--prompt", p)]
    result = cli("generate", "--model", tiny_gpt2, *args, "--max-new-tokens", "6", "--json")
    assert result.exit_code == 0, result
    texts = [row["text"] for row in json.loads(result.stdout)]
    assert texts == [plain_greedy(tiny_gpt2, [bos], 6), plain_greedy(tiny_gpt2, token_ids(tiny_gpt2, prompts[1]), 6)]


def test_empty_prompt_without_bos_token_exits_2(tiny_gpt2_without_bos, cli):
    result = cli("generate", "--model", tiny_gpt2_without_bos, "--prompt", "", "--max-new-tokens", "6")
    assert_user_error(result, "empty", "BOS")


def test_prompt_longer_than_the_context_keeps_its_last_tokens(tiny_gpt2, cli):
    ids = token_ids(tiny_gpt2, LONG_PROMPT)
    kept = CONTEXT - 10
    result = cli("generate", "--model", tiny_gpt2, "--prompt", LONG_PROMPT, "--max-new-tokens", "10", "--json")
    assert result.exit_code == 0, result
    assert json.loads(result.stdout) == [{"prompt": LONG_PROMPT, "text": plain_greedy(tiny_gpt2, ids[-kept:], 10)}]
    assert f"dropped the first {len(ids) - kept} of its {len(ids)} tokens" in result.stderr, result
    assert "Traceback" not in result.stderr
    streamed = cli("generate", "--model", tiny_gpt2, "--prompt", LONG_PROMPT, "--max-new-tokens", "10")
    assert streamed.exit_code == 0, streamed
    assert streamed.stdout.startswith(LONG_PROMPT)


def test_prompt_that_just_fits_is_kept_whole(tiny_gpt2, cli):
    ids = token_ids(tiny_gpt2, LONG_PROMPT)[: CONTEXT - 10]
    from transformers import AutoTokenizer

    prompt = AutoTokenizer.from_pretrained(tiny_gpt2).decode(ids)
    assert token_ids(tiny_gpt2, prompt) == ids
    result = cli("generate", "--model", tiny_gpt2, "--prompt", prompt, "--max-new-tokens", "10", "--json")
    assert result.exit_code == 0, result
    assert json.loads(result.stdout)[0]["text"] == plain_greedy(tiny_gpt2, ids, 10)
    assert "dropped" not in result.stderr


@pytest.mark.parametrize(
    "options, named",
    [
        (["--max-new-tokens", str(CONTEXT)], ["--max-new-tokens", f"context of {CONTEXT} tokens"]),
        (["--max-new-tokens", "500"], ["--max-new-tokens", f"context of {CONTEXT} tokens"]),
        (["--max-length", "500"], ["--max-length", f"context of {CONTEXT} tokens"]),
    ],
)
def test_lengths_past_the_context_exit_2(tiny_gpt2, cli, options, named):
    result = cli("generate", "--model", tiny_gpt2, "--prompt", "Once upon a time", *options)
    assert_user_error(result, *named)


@pytest.mark.parametrize("max_length", ["3", "7"])
def test_max_length_not_longer_than_the_prompt_exits_2_before_printing(tiny_gpt2, cli, max_length):
    prompt = "hello there my friend how are you"
    assert len(token_ids(tiny_gpt2, prompt)) == 7
    streamed = cli("generate", "--model", tiny_gpt2, "--prompt", prompt, "--max-length", max_length)
    assert_user_error(streamed, "--max-length", "--max-new-tokens", "7 tokens")


def test_max_length_is_checked_against_every_prompt_before_generating(tiny_gpt2, cli):
    prompts = ["hi", "hello there my friend how are you"]
    args = [a for p in prompts for a in ("--prompt", p)]
    result = cli("generate", "--model", tiny_gpt2, *args, "--max-length", "5", "--batch-size", "1")
    assert_user_error(result, "--max-length", "--max-new-tokens")


def test_help_says_what_each_output_mode_prints():
    """Plain and streamed output start with the prompt; only --json's text is the continuation alone."""
    from typer.testing import CliRunner

    from hf_toolkit.cli import app

    help_text = " ".join(CliRunner().invoke(app, ["generate", "--help"], terminal_width=2000).stdout.split())
    assert "the output is the continuation only" not in help_text
    assert "each prompt is printed followed by its continuation" in help_text, help_text
    assert re.search(r"--json prints .*continuation only", help_text), help_text


def test_output_modes_print_what_the_readme_says(tiny_gpt2, cli):
    prompts = ["Once upon a time", "The little fox"]
    as_json = cli("generate", "--model", tiny_gpt2, "--prompt", prompts[0], "--prompt", prompts[1], "--max-new-tokens", "4", "--json")
    texts = [row["text"] for row in json.loads(as_json.stdout)]
    streamed = cli("generate", "--model", tiny_gpt2, "--prompt", prompts[0], "--max-new-tokens", "4")
    assert streamed.stdout.rstrip("\n") == prompts[0] + texts[0].rstrip("\n")
    plain = cli("generate", "--model", tiny_gpt2, "--prompt", prompts[0], "--prompt", prompts[1], "--max-new-tokens", "4")
    assert plain.stdout == "".join(f"=== {p}\n{p}{t}\n\n" for p, t in zip(prompts, texts))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    generation = " ".join(readme.split("\n## Generation\n", 1)[1].split("\n## ", 1)[0].split())
    assert "streams to stdout as it is generated, the prompt followed by its continuation" in generation
    assert "a line `=== PROMPT`, then the prompt followed by its continuation" in generation
    assert "`text` is the continuation only" in generation


def test_lengths_from_the_models_generation_config_are_named_as_such():
    from transformers import GenerationConfig

    from hf_toolkit.apply.generation import fit_lengths

    with pytest.raises(HftkError, match=r"max_length 30 \(the model's generation_config.json; --max-length overrides it\)"):
        fit_lengths([[1] * 30], GenerationConfig(max_length=30), 128, {})
    with pytest.raises(HftkError, match=r"max_new_tokens 200 \(the model's generation_config.json.*--max-new-tokens 127"):
        fit_lengths([[1]], GenerationConfig(max_new_tokens=200), 128, {})
    assert fit_lengths([[1] * 500], GenerationConfig(max_new_tokens=200), None, {}) == ([[1] * 500], [])  # no known context


def test_one_generator_starts_every_request_from_the_runs_own_settings(tiny_gpt2):
    """Options of one request (--max-length, sampling) do not leak into the next of the same Generator."""
    from hf_toolkit.apply.generation import Generator
    from hf_toolkit.core import rundir

    generator = Generator(rundir.open_run(tiny_gpt2))
    saved = generator.defaults.to_dict()
    generator.generate(generator.prepare(["Once upon"], {"max_length": 6, "do_sample": True, "temperature": 0.7}, seed=0))
    config = generator.prepare(["Once upon"], {}).config
    assert config.max_length == saved["max_length"] and config.max_new_tokens == DEFAULT_MAX_NEW_TOKENS
    assert not config.do_sample and config.temperature == saved["temperature"]


def test_the_length_bound_told_counts_the_prompt(tiny_gpt2, cli):
    """--max-new-tokens past the context: the bound given is the context less the prompt (4 tokens here)."""
    result = cli("generate", "--model", tiny_gpt2, "--prompt", "Once upon a time", "--max-new-tokens", str(CONTEXT))
    assert_user_error(result, f"give --max-new-tokens {CONTEXT - 4} or fewer to keep the whole prompt (4 tokens)")


def test_a_prompt_cut_to_fit_is_said_once_with_the_length_that_keeps_it_whole(tiny_gpt2, cli):
    prompt = "hello there my friend how are you"  # 7 tokens
    result = cli("generate", "--model", tiny_gpt2, "--prompt", prompt, "--max-new-tokens", str(CONTEXT - 3), "--json")
    assert result.exit_code == 0, result
    warnings = [line for line in result.stderr.splitlines() if line.startswith("hftk: warning:")]
    said = (f"hftk: warning: the prompt and {CONTEXT - 3} new tokens do not fit the model's context of {CONTEXT} "
            f"tokens: dropped the first 4 of its 7 tokens, kept the last 3; --max-new-tokens {CONTEXT - 7} or fewer keeps it whole")
    assert warnings == [said], result.stderr


def test_the_generator_takes_a_prepared_request_and_hands_on_raw_text(tiny_gpt2):
    """Streamed pieces are the continuation itself: no echoed prompt, no line break for a terminal."""
    from hf_toolkit.apply.generation import Generator
    from hf_toolkit.core import rundir

    generator = Generator(rundir.open_run(tiny_gpt2))
    request = generator.prepare(["Once upon a time"], {"max_new_tokens": 8})
    assert request.ids == [token_ids(tiny_gpt2, "Once upon a time")] and request.cuts == [] and request.streamable
    pieces: list[str] = []
    [result] = generator.generate(request, on_text=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == result.text == plain_greedy(tiny_gpt2, request.ids[0], 8)


def test_the_cli_adds_the_echo_and_the_line_break_around_the_stream(tiny_gpt2, cli):
    [row] = json.loads(cli("generate", "--model", tiny_gpt2, "--prompt", "Once upon", "--max-new-tokens", "5", "--json").stdout)
    streamed = cli("generate", "--model", tiny_gpt2, "--prompt", "Once upon", "--max-new-tokens", "5")
    assert streamed.stdout == "Once upon" + row["text"] + "\n"
