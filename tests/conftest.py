"""Shared test setup: offline hub, paths to ../shared/data, a CLI runner and tiny-model helpers.

Tests never touch the network: HF_HUB_OFFLINE / HF_EVALUATE_OFFLINE are set before anything
imports huggingface_hub. Data from the sibling ``../shared/data`` folder is used where it exists;
tests that need it skip with a clear reason when it is absent.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/data/{'/'.join(parts)} (the shared test data beside the repo), which is absent")
    return path


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture(scope="session", autouse=True)
def preprocessing_cache(tmp_path_factory):
    """Every run of the session (CLI in-process or subprocess alike) uses a preprocessing cache of its
    own, never the user's ~/.cache/hftk; tests of the cache itself point HFTK_CACHE elsewhere."""
    folder = tmp_path_factory.mktemp("hftk-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HFTK_CACHE", str(folder))
        yield folder


class Result:
    def __init__(self, exit_code: int, stdout: str, stderr: str):
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr

    def __repr__(self) -> str:
        return f"Result(exit_code={self.exit_code}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


@pytest.fixture
def cli():
    """Run `hftk ARGS...` in-process; returns exit code, stdout and stderr separately."""
    from hf_toolkit.cli import app

    def run(*args: str) -> Result:
        result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    return run


def finetune(recipe: Path):
    """Train a recipe in-process through the real CLI (module-scoped fixtures build their runs so)."""
    from hf_toolkit.cli import app

    result = CliRunner().invoke(app, ["finetune", str(recipe)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def tiny_lm_recipe(path: Path, corpus: Path, out: Path, *, seed: int | None = 0, data: dict | None = None,
                   training: dict | None = None, extra: str = "") -> Path:
    """Write a causal-LM recipe that trains a one-layer GPT-2 from scratch on `corpus` with its own
    300-token tokenizer: the smallest real run (seconds on a CPU), into `out`.

    `data` and `training` add keys to those sections, one a line in the order given (so the line of
    each is known: tests assert errors by line); values are written as JSON, which YAML reads as is.
    `extra` is YAML text added at the end (a sweep section, say). No `seed` (None): the default seed.
    """
    lines = ["task: causal-lm", *([f"seed: {seed}"] if seed is not None else []),
             "model:",
             "  init: scratch",
             "  train_tokenizer: {vocab_size: 300}",
             "  config: {model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 16, n_positions: 64}",
             "data:",
             f"  train: {json.dumps(str(corpus))}",
             *(f"  {key}: {json.dumps(value)}" for key, value in (data or {}).items()),
             "training:",
             f"  output_dir: {json.dumps(str(out))}",
             *(f"  {key}: {json.dumps(value)}" for key, value in (training or {}).items()),
             "  disable_tqdm: true"]
    return write(path, "\n".join(lines) + "\n" + extra)


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    return shared_path("tokenizers", "gpt2")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A small text file (the project's own demo corpus) for tiny causal-LM runs."""
    from hf_toolkit.recipe.paths import resolve_path

    return resolve_path("pkg://hf_toolkit/demo/tiny_stories.txt")
