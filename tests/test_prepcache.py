"""The preprocessing cache (hf_toolkit.training.prepcache) through the real CLI on tiny models: a second run
reads the datasets the first one prepared (the same datasets, the same losses), anything that
changes them is a miss, each run says which in one line, and what cannot be cached is not."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import shared_path, tiny_lm_recipe, write

LINE = "preprocessing cache: "



class Run:
    """One in-process ``hftk`` command: its exit code and output, and the hftk lines it logged."""

    def __init__(self, result, logged: list[str]):
        self.exit_code, self.stdout, self.stderr, self.logged = result.exit_code, result.stdout, result.stderr, logged

    def __repr__(self) -> str:
        return f"Run(exit_code={self.exit_code}, logged={self.logged[-20:]!r}, stderr={self.stderr[-2000:]!r})"


@pytest.fixture
def hftk(cli, caplog):
    """`cli`, with the hftk lines each command logs (hftk's stderr handler outlives one CliRunner)."""
    def run(*args: str) -> Run:
        caplog.clear()
        with caplog.at_level("INFO", logger="hftk"):
            result = cli(*args)
        return Run(result, [r.getMessage() for r in caplog.records if r.name == "hftk"])

    return run


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """This test's own cache: HFTK_CACHE in a temporary directory; returns its entries' folder."""
    monkeypatch.setenv("HFTK_CACHE", str(tmp_path / "hftk-cache"))
    return tmp_path / "hftk-cache" / "preprocessed"


@pytest.fixture
def recipe(tmp_path, tiny_corpus) -> Path:
    corpus = write(tmp_path / "corpus.txt", tiny_corpus.read_text(encoding="utf-8")[:6000])
    return tiny_lm_recipe(tmp_path / "lm.yaml", corpus, tmp_path / "run", data={"validation_split": 0.2, "block_size": 16},
                          training={"max_steps": 3, "logging_steps": 1, "per_device_train_batch_size": 4,
                                    "learning_rate": 1e-2, "report_to": "none", "save_strategy": "no"})


def cache_line(result) -> str:
    """The run's one preprocessing-cache line (without the 'hftk: preprocessing cache: ' prefix)."""
    lines = [line for line in result.logged if line.startswith(LINE)]
    assert len(lines) == 1, result
    return lines[0][len(LINE):]


def saved_entry(line: str) -> Path:
    assert line.startswith("miss (") and ", saved to " in line, line
    return Path(line.rsplit(", saved to ", 1)[1].rsplit(" (", 1)[0])


def losses(run: Path) -> list[float]:
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def prepared_afresh(recipe_path: Path):
    """What the task's prepare makes of the recipe's data, in this process, without the cache."""
    from transformers import set_seed

    from hf_toolkit.core import data as data_lib
    from hf_toolkit.training.preflight import check_run

    checked = check_run(recipe_path, dry_run=True)
    recipe, task = checked.recipe, checked.task
    set_seed(recipe.seed)
    splits = data_lib.load_splits(recipe.data, task.roles, seed=recipe.seed, optional_roles=task.optional_roles,
                                  read_rows=task.read_rows, text_roles=task.text_roles, nonempty_roles=task.nonempty_roles)
    tokenizer, model = task.build_model(recipe, splits)
    return splits, task.prepare(recipe, splits, tokenizer, model)


def assert_same(cached, fresh) -> None:
    assert sorted(cached) == sorted(fresh)
    for split in fresh:
        assert cached[split].features == fresh[split].features, split
        assert cached[split].to_dict() == fresh[split].to_dict(), split


def test_second_run_reads_the_datasets_the_first_prepared(hftk, cache, recipe, tmp_path):
    from datasets import DatasetDict

    first = hftk("finetune", recipe)
    assert first.exit_code == 0, first
    entry = saved_entry(cache_line(first))
    assert cache_line(first).startswith("miss (") and "loaded and prepared in" in cache_line(first)
    assert entry.parent.parent == cache and (entry / "hftk_cache.json").is_file() and (entry.parent / "splits").is_dir()
    assert not list(cache.rglob(".incomplete-*")), "the write was renamed into place"

    # Another output directory and learning-rate schedule: training settings never reach preprocessing.
    second = hftk("finetune", recipe, "--set", f"training.output_dir={tmp_path / 'run2'}")
    assert second.exit_code == 0, second
    line = cache_line(second)
    assert line.startswith(f"hit ({entry.name[:12]}, {entry}): "), line
    assert "Tokenizing train" in first.stderr and "Tokenizing train" not in second.stderr, "prepare did not run"
    assert losses(tmp_path / "run2") == losses(tmp_path / "run") and len(losses(tmp_path / "run")) == 3

    splits, prepared = prepared_afresh(recipe)
    assert_same(DatasetDict.load_from_disk(str(entry)), prepared)
    assert_same(DatasetDict.load_from_disk(str(entry.parent / "splits")), splits)
    card = (tmp_path / "run2" / "README.md").read_text()
    assert "corpus.txt" in card, "the model card still names the data file and its rows"


def test_what_changes_preprocessing_misses_and_nothing_else_does(hftk, cache, recipe, tmp_path, monkeypatch):
    assert hftk("finetune", recipe).exit_code == 0

    def line(*overrides: str) -> str:
        result = hftk("finetune", recipe, "--dry-run", *[arg for o in overrides for arg in ("--set", o)])
        assert result.exit_code == 0, result
        return cache_line(result)

    assert line().startswith("hit (")
    assert line("training.learning_rate=0.5", "training.max_steps=7").startswith("hit (")
    for change in ("data.block_size=24", "seed=1", "data.validation_split=0.3", "data.max_train_samples=20"):
        assert line(change).startswith("miss ("), change
    tokenizer = line("model.train_tokenizer.vocab_size=320")
    assert tokenizer.startswith("miss (") and "prepared (the loaded splits came from the cache)" in tokenizer, tokenizer
    assert line("model.config.n_positions=128").startswith("miss ("), "the model config is part of the key"
    assert "not saved (--dry-run writes nothing)" in line("data.block_size=24"), "a dry run reads the cache, never writes it"

    from hf_toolkit.core import provenance

    versions = provenance.versions
    monkeypatch.setattr(provenance, "versions", lambda: {**versions(), "transformers": "0.0.1"})
    assert line().startswith("miss ("), "another transformers version"
    monkeypatch.setattr(provenance, "versions", versions)

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus.read_text(encoding="utf-8") + "One more line.\n", encoding="utf-8")
    assert line().startswith("miss ("), "the data file's content changed"

    off = hftk("finetune", recipe, "--dry-run", "--set", "data.cache=false")
    assert cache_line(off) == "off (data.cache: false)"


def test_cache_off_neither_reads_nor_writes(hftk, cache, recipe, tmp_path):
    result = hftk("finetune", recipe, "--set", "data.cache=false")
    assert result.exit_code == 0, result
    assert cache_line(result) == "off (data.cache: false)"
    assert not cache.exists()
    assert "cache: false" in (tmp_path / "run" / "hftk_recipe.yaml").read_text(), "the saved recipe keeps the setting"


# --------------------------------------------------------------------------------------------
# Question answering: windows for training, examples for evaluation, both from the cache


def squad_json(path: Path, n: int, seed: int) -> Path:
    """Nested SQuAD layout (read in memory, not through the datasets cache); one question has no text."""
    rng = random.Random(seed)
    words = ["the", "movie", "plot", "was", "and", "really", "quite", "story"]
    names = ["zorb", "quix", "plom", "vrell", "drax"]
    qas, paragraphs = [], []
    for i in range(n):
        before = " ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) + " "
        name = rng.choice(names)
        context = before + f"the secret word is {name} . " + " ".join(rng.sample(words, 3))
        question = "" if i == 3 else "what is the secret word ?"
        qas = [{"id": f"q{seed}-{i}", "question": question,
                "answers": [{"text": name, "answer_start": len(before) + len("the secret word is ")}]}]
        paragraphs.append({"context": context, "qas": qas})
    return write(path, json.dumps({"version": "v1.1", "data": [{"title": "toy", "paragraphs": paragraphs}]}))


def test_question_answering_evaluates_the_same_from_the_cache(hftk, cache, tmp_path):
    tokenizer = shared_path("tokenizers", "bert-base-uncased")
    recipe = write(tmp_path / "qa.yaml", f"""\
task: question-answering
seed: 0
model:
  init: scratch
  tokenizer: {tokenizer}
  config: {{model_type: bert, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}}
data:
  train: {squad_json(tmp_path / "train.json", 60, 0)}
  validation: {squad_json(tmp_path / "dev.json", 12, 1)}
  max_length: 32
  doc_stride: 8
  drop_empty: true
training:
  output_dir: {tmp_path / "run"}
  max_steps: 4
  logging_steps: 1
  per_device_train_batch_size: 8
  report_to: none
  disable_tqdm: true
  save_strategy: "no"
""")
    first = hftk("finetune", recipe)
    assert first.exit_code == 0, first
    entry = saved_entry(cache_line(first))
    second = hftk("finetune", recipe, "--set", f"training.output_dir={tmp_path / 'run2'}")
    assert second.exit_code == 0, second
    assert cache_line(second).startswith(f"hit ({entry.name[:12]}"), second
    for result in (first, second):  # a warning of loading is said again when the splits come from the cache
        assert any("dropped 1 row(s) with an empty question" in line for line in result.logged), result

    def metrics(run: str) -> dict:
        return json.loads((tmp_path / run / "metrics.json").read_text())

    scores = ("eval_loss", "eval_exact_match", "eval_f1")
    assert [metrics("run")[k] for k in scores] == [metrics("run2")[k] for k in scores]
    assert losses(tmp_path / "run2") == losses(tmp_path / "run")

    from datasets import DatasetDict

    splits, prepared = prepared_afresh(recipe)
    assert_same(DatasetDict.load_from_disk(str(entry)), prepared)
    assert_same(DatasetDict.load_from_disk(str(entry.parent / "splits")), splits)
    assert len(prepared["train"]) > len(splits["train"]), "long contexts are cut into several windows"


# --------------------------------------------------------------------------------------------
# What cannot be cached, is not


def transform_task(*, cache_prepared: bool = True, on_the_fly: bool = True):
    """A test-only causal LM whose prepare hands the Trainer datasets with an on-the-fly transform."""
    from hf_toolkit.tasks.causal_lm import CausalLM

    class OnTheFly(CausalLM):
        name = "on-the-fly-lm"

        def prepare(self, recipe, splits, tokenizer, model):
            prepared = super().prepare(recipe, splits, tokenizer, model)
            return type(prepared)({k: v.with_transform(lambda batch: batch) for k, v in prepared.items()}) if on_the_fly else prepared

    OnTheFly.cache_prepared = cache_prepared
    return OnTheFly()


@pytest.mark.parametrize("cache_prepared", [True, False])
def test_prepared_data_the_cache_cannot_keep_is_not_cached(hftk, cache, recipe, monkeypatch, cache_prepared):
    from hf_toolkit import tasks

    task = transform_task(cache_prepared=cache_prepared, on_the_fly=cache_prepared)
    monkeypatch.setitem(tasks.TASKS, task.name, task)
    for _ in range(2):
        result = hftk("finetune", recipe, "--dry-run", "--set", f"task={task.name}")
        assert result.exit_code == 0, result
        line = cache_line(result)
        if cache_prepared:
            assert line == ("prepared data not cached (task on-the-fly-lm's prepared data transforms train on the fly "
                            "(set_transform / with_transform), which cannot be saved)"), line
        else:
            assert line.startswith("not used (task on-the-fly-lm sets cache_prepared = False"), line
    assert not list(cache.glob("*/*-*")) and not [p for p in cache.glob("*/*") if p.name != "splits"]


def test_a_failed_write_is_said_and_the_run_goes_on(hftk, cache, recipe, monkeypatch):
    from datasets import DatasetDict

    def disk_full(self, path, **kwargs):
        Path(path).mkdir(parents=True)
        (Path(path) / "half-written").write_text("x")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DatasetDict, "save_to_disk", disk_full)
    result = hftk("finetune", recipe)
    assert result.exit_code == 0, result
    assert "not saved (OSError: [Errno 28] No space left on device)" in cache_line(result)
    assert not list(cache.rglob("hftk_cache.json")) and not list(cache.rglob(".incomplete-*")), "no entry, no leftovers"


def test_an_interrupted_write_leaves_no_entry_and_a_damaged_one_is_replaced(cache, recipe, monkeypatch):
    from datasets import DatasetDict

    from hf_toolkit.training import prepcache
    from hf_toolkit.training.preflight import check_run

    checked = check_run(recipe, dry_run=True)
    splits, _ = prepared_afresh(recipe)
    save = DatasetDict.save_to_disk

    def interrupted(self, path, **kwargs):
        save(self, path, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(DatasetDict, "save_to_disk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepcache.open_cache(checked.recipe, checked.task).splits(lambda: splits)
    assert not list(cache.rglob("hftk_cache.json")) and not list(cache.rglob(".incomplete-*"))
    monkeypatch.setattr(DatasetDict, "save_to_disk", save)

    prepcache.open_cache(checked.recipe, checked.task).splits(lambda: splits)
    (entry,) = cache.glob("*/splits")
    (arrow,) = entry.glob("train/*.arrow")
    arrow.write_bytes(b"damaged")
    again = prepcache.open_cache(checked.recipe, checked.task)
    assert again.splits(lambda: splits) is splits, "a damaged entry is a miss"
    assert not again.splits_hit
    reread = prepcache.open_cache(checked.recipe, checked.task)
    assert_same(reread.splits(lambda: pytest.fail("the entry was replaced")), splits)
    assert reread.splits_hit


def test_where_the_cache_lives(monkeypatch, tmp_path):
    from hf_toolkit.training.prepcache import cache_root

    monkeypatch.setenv("HFTK_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "mine" / "preprocessed"
    monkeypatch.delenv("HFTK_CACHE")
    assert cache_root() == tmp_path / "xdg" / "hftk" / "preprocessed"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "hftk" / "preprocessed"


def test_a_resume_may_turn_the_cache_off():
    from hf_toolkit.training.checkpoints import _harmless

    assert _harmless("data.cache")


def test_the_key_covers_the_code_that_cleans_and_reads_data(monkeypatch, tmp_path):
    """Issue 21.6: a changed cleaning function (core/htmltext.py, core/data.py) is a miss. The code digest
    read the modules from training/ after the layout change, where they are not, so it never changed."""
    from pathlib import Path

    from hf_toolkit.tasks import TASKS
    from hf_toolkit.training import prepcache

    package = Path(prepcache.__file__).resolve().parents[1]
    assert all((package / name).is_file() for name in prepcache.CODE), prepcache.CODE
    task = TASKS["text-classification"]
    before = prepcache._code_digest(task)
    copy = tmp_path / "hf_toolkit"
    for name in prepcache.CODE:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((package / name).read_bytes())
    (copy / "core" / "htmltext.py").write_text("# another way to clean\n", encoding="utf-8")
    monkeypatch.setattr(prepcache, "__file__", str(copy / "training" / "prepcache.py"))
    assert prepcache._code_digest(task) != before


def test_the_caches_bars_go_off_through_consoles_one_switch_and_come_back(monkeypatch):
    import datasets

    from hf_toolkit.core import console

    was_off = datasets.are_progress_bars_disabled()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_DISABLE_PROGRESS_BARS", None)
    datasets.enable_progress_bars()
    try:
        with console.datasets_bars_off():
            assert datasets.are_progress_bars_disabled()
        assert not datasets.are_progress_bars_disabled()
        monkeypatch.setattr(datasets.config, "HF_DATASETS_DISABLE_PROGRESS_BARS", False)  # the variable decides for good
        with console.datasets_bars_off():
            assert not datasets.are_progress_bars_disabled()
    finally:
        (datasets.disable_progress_bars if was_off else datasets.enable_progress_bars)()
    package = Path(console.__file__).parents[1]
    switches = [path.name for path in package.rglob("*.py") if "_progress_bars()" in path.read_text(encoding="utf-8")]
    assert switches == ["console.py"], "one switch for datasets' bars"


def test_a_builder_over_named_local_files_is_cached_by_their_content(hftk, cache, tmp_path, tiny_corpus, monkeypatch):
    """``{path: text, data_files: FILE, split: "train[:80%]"}`` (how a user trains on part of a file and
    keeps the rest out) is cached like a local file: by the file's content and the builder's arguments."""
    monkeypatch.chdir(tmp_path)  # load_dataset reads data_files relative to the working directory
    write(tmp_path / "corpus.txt", tiny_corpus.read_text(encoding="utf-8")[:6000])
    recipe = tiny_lm_recipe(tmp_path / "lm.yaml", Path("corpus.txt"), tmp_path / "run", data={"block_size": 16},
                            training={"max_steps": 2, "report_to": "none", "save_strategy": "no"})
    recipe.write_text(recipe.read_text().replace('train: "corpus.txt"',
                                                 'train: {path: text, data_files: corpus.txt, split: "train[:80%]"}'))

    def line(*overrides: str) -> str:
        result = hftk("finetune", recipe, "--dry-run", *[arg for o in overrides for arg in ("--set", o)])
        assert result.exit_code == 0, result
        return cache_line(result)

    first = hftk("finetune", recipe)
    assert first.exit_code == 0, first
    assert cache_line(first).startswith("miss (") and ", saved to " in cache_line(first)
    assert line().startswith("hit ("), "the same file and arguments"
    assert line('data.train.split="train[:50%]"').startswith("miss ("), "another part of the file"
    with open(tmp_path / "corpus.txt", "a", encoding="utf-8") as corpus:
        corpus.write("One more line.\n")
    assert line().startswith("miss ("), "the file's content changed"
    pattern = line('data.train.data_files="*.txt"')
    assert pattern.startswith("not used (data.train is load_dataset('text', None, data_files='*.txt', split='train[:80%]'), "
                              "not local files named one by one"), pattern
