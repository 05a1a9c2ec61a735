"""Never lose a run (issue 12): bad data caught before training with file and line, no silent
overwrite, the run lock, exact resume after a kill, refusal of a changed recipe, graceful stop on
SIGTERM / Ctrl-C (one process and ``--nproc 2``), NaN loss, safe loading.

The training tests run real ``hftk finetune`` processes on a tiny scratch GPT-2 (one layer, 16-wide,
a 300-token BPE) for a few steps, so the whole file takes well under two minutes on two cores. The
SIGKILL-and-resume and ``--nproc 2`` SIGTERM runs are marked slow (``pytest -m slow``); the default
run stops one process with SIGTERM and resumes it exactly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------
# Bad data: exit 2 with the file and the line or row, before any model loads

CLASSIFIER = """\
task: text-classification
model:
  init: scratch
  train_tokenizer: {{vocab_size: 300}}
  config: {{model_type: bert, num_hidden_layers: 1, hidden_size: 16, num_attention_heads: 2, intermediate_size: 32}}
data:
  train: {train}
{data}training:
  output_dir: out
  max_steps: 1
  save_strategy: 'no'
"""


def classifier(tmp_path: Path, train: str, data: str = "") -> Path:
    return write(tmp_path / "recipe.yaml", CLASSIFIER.format(train=train, data=data))


def assert_user_error(result, *expected: str, out: Path | None = None) -> None:
    assert result.exit_code == 2, result
    for text in expected:
        assert text in result.stderr, (text, result.stderr)
    assert "Traceback" not in result.stderr
    if out is not None:
        assert not out.exists(), "nothing may be written before the data is known to be good"


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_malformed_jsonl_names_its_line(here, cli):
    write(here / "train.jsonl", '{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"\n{"text": "x", "label": "neg"}\n')
    result = cli("finetune", classifier(here, "train.jsonl"))
    assert_user_error(result, "train.jsonl:2: not valid JSON", out=here / "out")


def test_malformed_json_document_names_its_line(here, cli):
    write(here / "train.json", '[{"text": "good", "label": "pos"},\n {"text": "bad" "label": "neg"}]\n')
    result = cli("finetune", classifier(here, "train.json"))
    assert_user_error(result, "train.json:2: not valid JSON")


def test_non_utf8_bytes_name_the_line_and_the_encoding_option(here, cli):
    (here / "train.csv").write_bytes(b"text,label\ngood,pos\ncaf\xe9 au lait,neg\n")
    result = cli("finetune", classifier(here, "train.csv"))
    assert_user_error(result, "train.csv:3: not utf-8 text", "data.encoding", out=here / "out")

    from hf_toolkit.core.data import load_splits
    from hf_toolkit.tasks import TASKS

    data = TASKS["text-classification"].Data.model_validate({"train": "train.csv", "encoding": "latin-1"})
    assert load_splits(data, ("text", "label"), seed=0)["train"]["text"] == ["good", "café au lait"]


def test_ragged_csv_and_tsv_rows_name_their_line(here, cli):
    write(here / "train.csv", "text,label\ngood,pos\nbad,neg,extra\nok,pos\n")
    assert_user_error(cli("finetune", classifier(here, "train.csv")), "train.csv:3: 3 fields where the header has 2 (text, label)")
    write(here / "train.tsv", "text\tlabel\ngood\tpos\nbad\tneg\nshort\n")
    assert_user_error(cli("finetune", classifier(here, "train.tsv")), "train.tsv:4: 1 fields where the header has 2")


def test_empty_texts_after_cleaning_are_counted_and_can_be_dropped(here, cli):
    rows = [{"text": "good film", "label": "pos"}, {"text": "<br/>", "label": "neg"}, {"text": "bad", "label": "neg"},
            {"text": "   ", "label": "pos"}, {"text": "fine", "label": "pos"}]
    write(here / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    recipe = classifier(here, "train.jsonl", "  strip_html: true\n  normalize_whitespace: true\n")
    assert_user_error(cli("finetune", recipe), "data.train (train.jsonl): 2 of 5 rows have an empty text (after cleaning), rows 2, 4",
                      "data.drop_empty: true", out=here / "out")

    from hf_toolkit.core.data import load_splits
    from hf_toolkit.tasks import TASKS

    data = TASKS["text-classification"].Data.model_validate(
        {"train": "train.jsonl", "strip_html": True, "normalize_whitespace": True, "drop_empty": True})
    assert load_splits(data, ("text", "label"), seed=0)["train"]["text"] == ["good film", "bad", "fine"]


def test_labels_outside_the_declared_set_name_their_rows(here, cli):
    rows = [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}, {"text": "c", "label": "neutral"}]
    write(here / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    result = cli("finetune", classifier(here, "train.jsonl", "  labels: [neg, pos]\n"))
    assert_user_error(result, "data.train (train.jsonl): 1 row(s) with a label outside data.labels [neg, pos]: row 3 ('neutral')",
                      out=here / "out")
    twice = cli("finetune", classifier(here, "train.jsonl", "  labels: [neg, neg]\n"), "--check")
    assert_user_error(twice, "recipe.yaml:8: data.labels: labels are listed twice")


def test_declared_labels_fix_the_ids(here):
    from datasets import Dataset, DatasetDict

    from hf_toolkit.recipe.checks import validate_recipe
    from hf_toolkit.tasks import TASKS

    recipe = validate_recipe({"task": "text-classification", "model": {"name_or_path": "./m"},
                              "data": {"train": "t.jsonl", "labels": ["pos", "neg"]}})
    config = TASKS["text-classification"].model_config(recipe, DatasetDict(train=Dataset.from_list([{"text": "a", "label": "neg"}] * 2)))
    assert config["id2label"] == {0: "pos", 1: "neg"}  # the recipe's order, even for a label the data lacks


def test_empty_validation_split_is_named(here, cli):
    write(here / "train.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", "label": "neg"}\n')
    write(here / "dev.jsonl", "\n\n")
    result = cli("finetune", classifier(here, "train.jsonl", "  validation: dev.jsonl\n"))
    assert_user_error(result, "dev.jsonl: no rows (the file holds only blank lines)", out=here / "out")
    write(here / "test.csv", "text,label\n")
    result = cli("finetune", classifier(here, "train.jsonl", "  test: test.csv\n"))
    assert_user_error(result, "test.csv: no rows, only the header line", out=here / "out")


# --------------------------------------------------------------------------------------------
# Real runs: a tiny scratch GPT-2, 30 steps, checkpoints every 2

TINY = """\
task: causal-lm
seed: 0
model:
  init: scratch
  train_tokenizer: {vocab_size: 300}
  config: {model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 16, n_positions: 64}
data: {train: a.txt, block_size: 32}
training:
  output_dir: full
  max_steps: 30
  per_device_train_batch_size: 4
  logging_steps: 1
  save_strategy: steps
  save_steps: 2
  disable_tqdm: true
"""
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def hftk(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hf_toolkit", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


def start(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hf_toolkit", *map(str, args)], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "model.safetensors")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def stories(tmp_path_factory, tiny_corpus) -> Path:
    """A work directory with the recipe, its data and one uninterrupted run (``full``)."""
    work = tmp_path_factory.mktemp("stories")
    (work / "a.txt").write_text(tiny_corpus.read_text()[:6000])
    write(work / "tiny.yaml", TINY)
    result = hftk("finetune", "tiny.yaml", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.slow  # a kill and a resume, ~1 min; the SIGTERM test below resumes exactly in the default run
def test_sigkill_after_the_second_checkpoint_then_resume_ends_with_the_uninterrupted_weights(stories, cli, monkeypatch):
    process = start("finetune", "tiny.yaml", "--set", "training.output_dir=killed", cwd=stories)
    wait_for(stories / "killed" / "checkpoint-4" / "trainer_state.json", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = stories / "killed"
    assert not (killed / "hftk_recipe.yaml").exists() and not (killed / "checkpoint-30").exists(), "killed too late to test"
    assert json.loads((killed / ".hftk.lock").read_text())["pid"] == process.pid  # the lock the kill left behind

    # No flag: the unfinished run is not overwritten; both ways forward are named.
    again = hftk("finetune", "tiny.yaml", "--set", "training.output_dir=killed", cwd=stories)
    assert again.returncode == 2
    assert "'killed' already holds an unfinished run (" in again.stderr and "--resume" in again.stderr and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr

    # A change that matters is refused with the keys listed; a harmless one is allowed (and said).
    monkeypatch.chdir(stories)
    changed = cli("finetune", "tiny.yaml", "--resume", "--set", "training.output_dir=killed",
                  "--set", "training.learning_rate=1e-3", "--set", "data.block_size=16")
    assert changed.exit_code == 2
    assert "data.block_size: 32 when checkpoint-" in changed.stderr and "now 16" in changed.stderr
    assert "training.learning_rate: '(not set)' when checkpoint-" in changed.stderr and "now 0.001" in changed.stderr

    resumed = hftk("finetune", "tiny.yaml", "--resume", "--set", "training.output_dir=killed", "--set", "training.logging_steps=3",
                   cwd=stories)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "cleared a stale lock of pid" in resumed.stderr
    assert "resuming with a harmless change since the checkpoint: training.logging_steps: 1 -> 3" in resumed.stderr
    assert "resuming from killed/checkpoint-" in resumed.stderr
    # Same seed, restored optimizer, scheduler and RNG states, same batches: bit-identical on CPU.
    assert max_difference(weights(stories / "full"), weights(killed)) == 0.0
    assert not (killed / ".hftk.lock").exists()
    # The figures are the whole run's: the loss over all 30 steps (the uninterrupted run's), the time of both parts.
    whole, full = json.loads((killed / "metrics.json").read_text()), json.loads((stories / "full" / "metrics.json").read_text())
    assert whole["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)
    last_part = json.loads((killed / "trainer_state.json").read_text())["log_history"][-1]
    assert last_part["train_loss"] != pytest.approx(full["train_loss"], rel=1e-5), "the Trainer's own figure is the last part's"
    assert whole["train_runtime"] > last_part["train_runtime"]
    step = int(resumed.stderr.split("resuming from killed/checkpoint-")[1].split()[0])
    assert f"- **Training:** Resumed once (from the checkpoint at step {step}); the metrics cover the whole run" in (
        killed / "README.md").read_text()

    finished = hftk("finetune", "tiny.yaml", "--set", "training.output_dir=killed", cwd=stories)
    assert finished.returncode == 2 and "'killed' already holds a finished run (hftk_recipe.yaml" in finished.stderr


def test_resume_of_a_finished_run_is_refused_unless_it_asks_for_more_steps(stories, cli, monkeypatch):
    import shutil

    shutil.copytree(stories / "full", stories / "done")
    before = {p: p.read_bytes() for p in (stories / "done").rglob("*") if p.is_file()}
    monkeypatch.chdir(stories)
    again = cli("finetune", "tiny.yaml", "--resume", "--set", "training.output_dir=done")
    assert again.exit_code == 2 and "Traceback" not in again.stderr
    assert ("training.resume_from_checkpoint: 'done' holds a finished run: checkpoint-30 is at step 30 (epoch "
            in again.stderr and "nothing to resume" in again.stderr and "--set training.max_steps=N with N above 30" in again.stderr)
    assert {p: p.read_bytes() for p in (stories / "done").rglob("*") if p.is_file()} == before, "files untouched"

    # More steps: it resumes, says nothing of GPT-2's tied lm_head.weight (transformers' own warnings shown).
    env = {key: value for key, value in ENV.items() if key != "TRANSFORMERS_VERBOSITY"}
    more = subprocess.run([sys.executable, "-m", "hf_toolkit", "finetune", "tiny.yaml", "--resume", "--set",
                           "training.output_dir=done", "--set", "training.max_steps=32"], cwd=stories, env=env,
                          capture_output=True, text=True, timeout=600)
    assert more.returncode == 0, more.stderr[-3000:]
    assert "missing keys" not in more.stderr and "lm_head" not in more.stderr
    assert json.loads((stories / "done" / "trainer_state.json").read_text())["global_step"] == 32
    assert "Resumed once (from the checkpoint at step 30)" in (stories / "done" / "README.md").read_text()


def test_a_resume_with_nothing_left_to_train_is_refused_and_a_state_cut_short_is_skipped(tmp_path):
    from types import SimpleNamespace

    from hf_toolkit.training import checkpoints

    for step, text in ((4, json.dumps({"global_step": 4, "epoch": 2.0})), (6, "")):  # a kill left checkpoint-6's state empty
        write(tmp_path / f"checkpoint-{step}" / "trainer_state.json", text)
    assert checkpoints.latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")

    def problems(max_steps, epochs=3.0):
        args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=True, max_steps=max_steps, num_train_epochs=epochs)
        return [p.message for p in checkpoints.resume_problems(args)]

    assert problems(5) == [] and problems(-1, epochs=3.0) == []
    [message] = problems(4)
    assert message.startswith("checkpoint-4 is the end of the run: checkpoint-4 is at step 4 (epoch 2) and the recipe asks "
                              "for max_steps=4, so there is nothing to resume")
    [message] = problems(-1, epochs=2.0)
    assert "asks for num_train_epochs=2" in message and "--resume --set training.num_train_epochs=E with E above 2" in message
    write(tmp_path / "hftk_recipe.yaml", "task: causal-lm\n")
    assert problems(4)[0].startswith(f"'{tmp_path}' holds a finished run: checkpoint-4 is at step 4")


def test_the_tied_weights_warning_is_dropped_only_for_tied_weights():
    import logging

    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_toolkit.core import console

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50))
    assert {"lm_head.weight", "transformer.wte.weight"} <= console.tied_parameter_names(model)
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    trainer_logger = logging.getLogger("transformers.trainer")
    handler, level = Keep(), trainer_logger.level
    trainer_logger.addHandler(handler)
    trainer_logger.setLevel(logging.WARNING)  # the tests run transformers at TRANSFORMERS_VERBOSITY=error
    try:
        with console.tied_weights_unmentioned(model):
            trainer_logger.warning("There were missing keys in the checkpoint model loaded: ['lm_head.weight'].")
            trainer_logger.warning("There were missing keys in the checkpoint model loaded: ['transformer.h.0.mlp.c_fc.weight'].")
        trainer_logger.warning("There were missing keys in the checkpoint model loaded: ['lm_head.weight'].")
    finally:
        trainer_logger.removeHandler(handler)
        trainer_logger.setLevel(level)
    assert seen == ["There were missing keys in the checkpoint model loaded: ['transformer.h.0.mlp.c_fc.weight'].",
                    "There were missing keys in the checkpoint model loaded: ['lm_head.weight']."]


def test_whole_run_metrics_from_the_log_history_and_the_parts_times():
    from hf_toolkit.training.resumption import Progress, whole_run_metrics

    history = [{"loss": 4.0, "step": 2}, {"loss": 3.0, "step": 4}, {"train_loss": 9.9, "train_runtime": 1.0, "step": 4},
               {"loss": 2.0, "step": 6}, {"eval_loss": 7.0, "step": 6}]
    # Steps 1-4 logged (sum 2x4 + 2x3 = 14); the last part, steps 5-10, had mean 1.5 over 6 steps in 3 s.
    part = {"train_loss": 1.5, "train_runtime": 3.0, "train_samples_per_second": 8.0, "train_steps_per_second": 2.0}
    whole = whole_run_metrics(part, history, 10, Progress(earlier_runtime=5.0, resumed_at=[4]))
    assert whole == {"train_loss": pytest.approx((14 + 9) / 10), "train_runtime": 8.0,
                     "train_samples_per_second": pytest.approx(8.0 * 3 * 10 / 6 / 8, abs=1e-3), "train_steps_per_second": 1.25}
    assert whole_run_metrics(part, history, 10, Progress()) == {}, "a run in one part keeps the Trainer's figures"
    unknown = whole_run_metrics(part, history, 10, Progress(earlier_runtime=None, resumed_at=[4]))
    assert set(unknown) == {"train_loss"}, "no runtime is made up for a part whose time was not recorded"


def test_sigterm_saves_a_checkpoint_exits_143_and_resume_loses_nothing(stories):
    process = start("finetune", "tiny.yaml", "--set", "training.output_dir=termed", "--set", "training.save_steps=100",
                    cwd=stories)
    while "'loss'" not in (line := process.stdout.readline()):  # training has started
        assert line, process.communicate()[1][-3000:]
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert time.time() - sent < 30
    [checkpoint] = (stories / "termed").glob("checkpoint-*")
    assert (checkpoint / "trainer_state.json").is_file() and (checkpoint / "hftk_recipe.yaml").is_file()
    assert f"stopped by SIGTERM at step {checkpoint.name.split('-')[1]}" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    resumed = hftk("finetune", "tiny.yaml", "--resume", "--set", "training.output_dir=termed",
                   "--set", "training.save_steps=100", cwd=stories)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert max_difference(weights(stories / "full"), weights(stories / "termed")) == 0.0


@pytest.mark.slow  # 2 launches of 2 ranks, ~1.5 min; the default run stops and resumes one process (test above)
def test_sigterm_under_nproc_2_stops_every_rank_at_one_step(stories):
    process = start("finetune", "tiny.yaml", "--nproc", 2, "--set", "training.output_dir=ddp", "--set", "training.save_steps=100",
                    cwd=stories)
    while "'loss'" not in (line := process.stdout.readline()):
        assert line, process.communicate()[1][-3000:]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 143, stderr[-3000:]
    [checkpoint] = (stories / "ddp").glob("checkpoint-*")  # one step for both ranks, saved whole
    assert (checkpoint / "trainer_state.json").is_file()
    assert stderr.count("hftk: error: stopped by SIGTERM") == 1 and "Traceback" not in stderr
    assert not (stories / "ddp" / ".hftk.lock").exists() and not (stories / "ddp" / ".hftk.stop").exists()
    resumed = hftk("finetune", "tiny.yaml", "--nproc", 2, "--resume", "--set", "training.output_dir=ddp",
                   "--set", "training.save_steps=100", cwd=stories)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((stories / "ddp" / "trainer_state.json").read_text())["global_step"] == 30


def test_overwrite_replaces_the_old_run_and_keeps_what_hftk_did_not_write(stories, cli, monkeypatch):
    import shutil

    shutil.copytree(stories / "full", stories / "copy")
    written = json.loads((stories / "full" / "hftk_manifest.json").read_text())
    assert written["complete"] and {"checkpoint-2", "config.json", "tokenizer.json", "README.md"} <= set(written["written"])
    out = stories / "copy"
    (out / "code.py").write_text("the user's")
    (out / "mydata").mkdir()
    (out / "mydata" / "keep.txt").write_text("the user's")
    result = hftk("finetune", "tiny.yaml", "--overwrite", "--set", "training.output_dir=copy", "--set", "training.max_steps=2",
                  cwd=stories)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--overwrite: deleted the previous run's " in result.stderr and "checkpoint-30/" in result.stderr
    assert "--overwrite: kept 2 not written by hftk: code.py, mydata/" in result.stderr
    assert (out / "code.py").read_text() == "the user's" and (out / "mydata" / "keep.txt").read_text() == "the user's"
    assert not (out / "checkpoint-30").exists()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert json.loads((out / "hftk_manifest.json").read_text())["kept"] == ["code.py", "mydata"]
    monkeypatch.chdir(stories)
    both = cli("finetune", "tiny.yaml", "--overwrite", "--resume", "--set", "training.output_dir=copy")
    assert both.exit_code == 2 and "use --resume or --overwrite, not both" in both.stderr


def test_a_live_lock_refuses_a_second_run_and_a_stale_one_is_cleared(tmp_path, caplog):
    from hf_toolkit.training import runlock

    out = tmp_path / "run"
    with runlock.hold(out):
        with pytest.raises(runlock.RunLocked, match=f"another hftk finetune \\(pid {os.getpid()} on {socket.gethostname()}"):
            with runlock.hold(out):
                pass
    assert not out.exists(), "the lock's directory is removed again when the run left nothing in it"

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out.mkdir()
    (out / runlock.LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then"}))
    with caplog.at_level("WARNING", logger="hftk"), runlock.hold(out):
        assert json.loads((out / runlock.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"cleared a stale lock of pid {dead.pid}" in caplog.text
    (out / runlock.LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": "another-machine", "started": "then"}))
    with pytest.raises(runlock.RunLocked, match="another-machine"):  # another host's process cannot be judged dead
        with runlock.hold(out):
            pass


def test_finetune_into_a_locked_directory_exits_2(tmp_path, tiny_corpus, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text(tiny_corpus.read_text()[:3000])
    write(tmp_path / "tiny.yaml", TINY.replace("output_dir: full", "output_dir: locked"))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "locked").mkdir()
        (tmp_path / "locked" / ".hftk.lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "started": "now"}))
        result = cli("finetune", "tiny.yaml")
        assert result.exit_code == 2
        assert f"another hftk finetune (pid {sleeper.pid}" in result.stderr and "is writing this output directory" in result.stderr
    finally:
        sleeper.kill()
        sleeper.wait()


def test_changed_data_content_refuses_the_resume(tmp_path, monkeypatch):
    from hf_toolkit.recipe.checks import validate_recipe
    from hf_toolkit.training import checkpoints

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("some text\n")
    raw = {"task": "causal-lm", "model": {"init": "scratch", "config": {"model_type": "gpt2"}, "train_tokenizer": {}},
           "data": {"train": "a.txt", "test": "a.txt"}, "training": {"eval_steps": 5}}
    checkpoints.save_recipe(tmp_path / "checkpoint-2", validate_recipe(raw), checkpoints.data_fingerprints(validate_recipe(raw)))
    (tmp_path / "a.txt").write_text("other text\n")
    raw["training"]["eval_steps"] = 10
    problems, harmless = checkpoints.resume_changes(validate_recipe(raw), tmp_path / "checkpoint-2")
    assert [(p.key, p.message.split(";")[0]) for p in problems] == [
        (("data", "train"), "its content changed since the checkpoint (sha256 differs)")]
    assert harmless == ["data.test: changed (scored only at the end)", "training.eval_steps: 5 -> 10"]

    # A part of a CSV file read by the csv builder (split: "train[:90%]") is known by the file's content too.
    (tmp_path / "rows.csv").write_text("text\nsome text\nmore text\n")
    raw["data"] = {"train": {"path": "csv", "data_files": "rows.csv", "split": "train[:90%]"}}
    checkpoints.save_recipe(tmp_path / "checkpoint-4", validate_recipe(raw), checkpoints.data_fingerprints(validate_recipe(raw)))
    assert checkpoints.resume_changes(validate_recipe(raw), tmp_path / "checkpoint-4")[0] == []
    (tmp_path / "rows.csv").write_text("text\nsome text\nother text\n")
    problems, _ = checkpoints.resume_changes(validate_recipe(raw), tmp_path / "checkpoint-4")
    assert [(p.key, p.message.split(";")[0]) for p in problems] == [
        (("data", "train"), "its content changed since the checkpoint (sha256 differs)")]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_weights(stories):
    result = hftk("finetune", "tiny.yaml", "--set", "training.output_dir=nan", "--set", "training.learning_rate=1e30",
                  "--set", "training.max_grad_norm=0", "--set", "training.save_steps=100", cwd=stories)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "the training loss became NaN or inf at step" in result.stderr and "learning_rate" in result.stderr
    assert "Traceback" not in result.stderr
    [checkpoint] = (stories / "nan").glob("checkpoint-*")
    import torch

    assert all(torch.isfinite(t).all() for t in weights(checkpoint).values())
    assert not (stories / "nan" / "hftk_recipe.yaml").exists()


# --------------------------------------------------------------------------------------------
# Safe defaults

def test_pickle_weights_are_refused_unless_the_recipe_opts_in(tmp_path, tiny_corpus, cli, monkeypatch):
    from transformers import GPT2Config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text(tiny_corpus.read_text()[:3000])
    GPT2Config(n_layer=1, n_head=2, n_embd=16).save_pretrained(tmp_path / "pickled")
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"not loaded by the check")
    text = TINY.replace("  init: scratch\n  train_tokenizer: {vocab_size: 300}\n", "  name_or_path: ./pickled\n  tokenizer: gpt2\n")
    text = text.replace("config: {model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 16, n_positions: 64}", "config: {}")
    result = cli("finetune", write(tmp_path / "r.yaml", text), "--check")
    assert result.exit_code == 2
    assert "r.yaml:4: model.name_or_path: './pickled' holds only pickle weights (pytorch_model.bin)" in result.stderr
    assert "model.allow_pickle: true" in result.stderr


def test_models_load_from_safetensors_without_remote_code_by_default(monkeypatch):
    from hf_toolkit.core import modeling
    from hf_toolkit.recipe.schema import ModelSection

    class Loaded(Exception):
        pass

    seen = {}

    def from_pretrained(loader, reference, what, **kwargs):
        seen.update(kwargs)
        raise Loaded

    monkeypatch.setattr(modeling, "build_config", lambda *a, **k: None)
    monkeypatch.setattr(modeling, "from_pretrained", from_pretrained)
    for section, expected in ((ModelSection(name_or_path="./m"), (True, False)),
                              (ModelSection(name_or_path="./m", allow_pickle=True, trust_remote_code=True), (None, True))):
        with pytest.raises(Loaded):
            modeling.load_model(object, section, tokenizer=None)
        assert (seen["use_safetensors"], seen["trust_remote_code"]) == expected


def test_run_files_are_written_atomically(stories):
    out = stories / "full"
    assert (out / "hftk_recipe.yaml").is_file() and (out / "metrics.json").is_file()
    assert not list(out.rglob("*.tmp")) and not (out / ".hftk.lock").exists()
    from hf_toolkit.training.checkpoints import write_atomically

    write_atomically(out / "metrics.json", "{}\n")
    assert (out / "metrics.json").read_text() == "{}\n" and not list(out.glob(".metrics.json.*"))


# --------------------------------------------------------------------------------------------
# hftk never deletes or replaces a file it did not write (issue 21.1, 21.2)

def fill(folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


USER_FILES = ["code.py", "notes.txt", "mydata/keep.txt"]


def test_overwrite_of_a_run_from_before_the_manifest_deletes_only_names_a_run_writes(tmp_path, caplog):
    from hf_toolkit.training import runlock

    run = ["hftk_recipe.yaml", "metrics.json", "README.md", "trainer_state.json", "training_args.bin", "config.json",
           "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
           "merges.txt", "loss_curve.png", "checkpoint-2/trainer_state.json", "eval/scores.json", ".hftk.stop"]
    fill(tmp_path, run + USER_FILES + ["runs/Dec06_host/events.out.tfevents.1.host"])
    assert [p.name for p in runlock.foreign_entries(tmp_path)] == ["code.py", "mydata", "notes.txt"]
    with caplog.at_level("INFO", logger="hftk"):
        runlock.clear_run(tmp_path)
    assert tree(tmp_path) == sorted(USER_FILES)
    assert "--overwrite: deleted the previous run's 17 files and folders" in caplog.text and "checkpoint-2/" in caplog.text
    assert "--overwrite: kept 3 not written by hftk: code.py, mydata/, notes.txt" in caplog.text
    # A runs/ folder is TensorBoard's (the run's) only when it holds nothing but event files.
    fill(tmp_path, ["hftk_recipe.yaml", "runs/Dec06_host/events.out.tfevents.1.host", "runs/mine.csv"])
    assert [p.name for p in runlock.run_entries(tmp_path)] == ["hftk_recipe.yaml"]


def test_the_manifest_names_what_the_run_wrote_even_under_unusual_names(tmp_path):
    from hf_toolkit.training import runlock

    out = tmp_path / "run"
    with runlock.hold(out):
        fill(out, ["config.json", "spm.weird-tokenizer.model", "checkpoint-1/x"])
    manifest = json.loads((out / "hftk_manifest.json").read_text())
    assert manifest["complete"] and manifest["written"] == ["checkpoint-1", "config.json", "hftk_manifest.json",
                                                            "spm.weird-tokenizer.model"]
    fill(out, ["notes.txt", "eval/scores.json"])  # the user's notes; hftk eval --model's scores
    with runlock.hold(out, overwrite=True):
        assert sorted(p.name for p in out.iterdir()) == [".hftk.lock", "hftk_manifest.json", "notes.txt"]
    assert not (out / "hftk_manifest.json").exists(), "a run that wrote nothing leaves no manifest"
    assert tree(out) == ["notes.txt"]


def test_a_killed_runs_manifest_keeps_the_files_that_were_there_before(tmp_path):
    from hf_toolkit.training import runlock

    fill(tmp_path, ["vocab.txt"])  # the user's, there before the run: never the run's
    runlock._start_manifest(tmp_path)  # the run starts, then is SIGKILLed after writing these:
    fill(tmp_path, ["config.json", "checkpoint-2/trainer_state.json"])
    assert [p.name for p in runlock.run_entries(tmp_path)] == ["checkpoint-2", "config.json", "hftk_manifest.json"]
    assert [p.name for p in runlock.foreign_entries(tmp_path)] == ["vocab.txt"]


@pytest.mark.parametrize("where", ["here", "home"])
def test_the_working_or_home_directory_is_refused_unless_empty(where, tmp_path, tiny_corpus, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "a.txt").write_text(tiny_corpus.read_text()[:3000])
    write(tmp_path / "tiny.yaml", TINY)
    output_dir = "." if where == "here" else str(tmp_path / "home")
    fill(tmp_path / "home", ["notes.txt"])
    result = cli("finetune", "tiny.yaml", "--check", "--overwrite", "--set", f"training.output_dir={output_dir}")
    expected = "is the current directory, which holds a.txt, home/, tiny.yaml" if where == "here" else \
        "is your home directory, which holds notes.txt"
    assert result.exit_code == 2 and expected in result.stderr and "training.output_dir=runs/NAME" in result.stderr, result
    (tmp_path / "home" / "notes.txt").unlink()
    if where == "home":  # empty: fine
        assert cli("finetune", "tiny.yaml", "--check", "--set", f"training.output_dir={output_dir}").exit_code == 0


def test_a_folder_that_holds_no_run_is_refused_naming_what_would_be_replaced(tmp_path, tiny_corpus, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text(tiny_corpus.read_text()[:3000])
    write(tmp_path / "tiny.yaml", TINY.replace("output_dir: full", "output_dir: project"))
    fill(tmp_path / "project", ["README.md", "src/main.py"])
    for flags in ([], ["--overwrite"]):
        result = cli("finetune", "tiny.yaml", *flags)
        assert result.exit_code == 2, result
        assert ("training.output_dir: 'project' holds files that are no hftk run (README.md, src/); a run would replace "
                "README.md. Choose a new or empty training.output_dir") in result.stderr
        assert tree(tmp_path / "project") == ["README.md", "src/main.py"]
    (tmp_path / "project" / "README.md").unlink()
    result = cli("finetune", "tiny.yaml", "--check")
    assert result.exit_code == 2 and "a run would mix its model, tokenizer and card (README.md) with them" in result.stderr


def test_a_rank_other_than_0_leaves_the_folder_to_rank_0_which_may_already_be_claiming_it(tmp_path, tiny_corpus, monkeypatch):
    """Under torchrun every rank runs the preflight, and rank 0 may already hold the folder (its
    lock, its manifest half-written) when rank 1 looks: rank 1 once refused rank 0's fresh
    manifest as "files that are no hftk run". Only rank 0 judges and claims the folder."""
    from hf_toolkit.errors import RecipeError
    from hf_toolkit.training import runlock
    from hf_toolkit.training.preflight import check_run

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text(tiny_corpus.read_text()[:3000])
    write(tmp_path / "tiny.yaml", TINY)
    out = tmp_path / "full"
    out.mkdir()
    (out / runlock.LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))
    # rank 0 inside runlock.hold, between writing its manifest's temporary file and renaming it
    (out / ".hftk_manifest.json.4242.tmp").write_text("{}")
    monkeypatch.setenv("RANK", "1")  # torchrun's global rank (LOCAL_RANK would make TrainingArguments join a process group)
    assert check_run("tiny.yaml").args.output_dir == "full"
    runlock._start_manifest(out)  # the manifest in place: rank 0 has claimed the folder
    (out / ".hftk_manifest.json.4242.tmp").unlink()
    assert check_run("tiny.yaml").args.output_dir == "full"
    # rank 0 (and a single process) still judges it: a folder that holds a user's file is refused
    fill(out, ["notes.txt"])
    assert check_run("tiny.yaml").args.output_dir == "full"
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RecipeError, match="holds files that are no hftk run"):
        check_run("tiny.yaml")
