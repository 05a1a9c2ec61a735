"""Shared test setup: offline hub, paths to ../shared/data, a CLI runner and tiny-model helpers.

Tests never touch the network: HF_HUB_OFFLINE / HF_EVALUATE_OFFLINE are set before anything
imports huggingface_hub. Data from the sibling ``../shared/data`` folder is used where it exists;
tests that need it skip with a clear reason when it is absent.
"""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    return shared_path("tokenizers", "gpt2")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A small text file (the project's own demo corpus) for tiny causal-LM runs."""
    from hf_toolkit.recipe.paths import resolve_path

    return resolve_path("pkg://hf_toolkit/demo/tiny_stories.txt")
