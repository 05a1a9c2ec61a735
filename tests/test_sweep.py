"""hftk sweep: trials are real runs, bad spaces are refused at their line, a killed sweep resumes,
the median pruner stops a diverging trial, two processes share one study."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_lm_recipe, write

pytest.importorskip("optuna", reason="hftk sweep needs optuna (pip install -e '.[sweep]')")

SPACE = "    training.learning_rate: [1.0e-3, 3.0e-3]\n    training.warmup_steps: {low: 0, high: 2}\n"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def recipe(folder: Path, corpus: Path, *, trials: int = 3, steps: int = 4, space: str = SPACE, extra: str = "",
           name: str = "sweep.yaml", out: str = "out") -> Path:
    sweep = f"sweep:\n  metric: eval_loss\n  direction: minimize\n  trials: {trials}\n  space:\n{space}\n{extra}"
    return tiny_lm_recipe(folder / name, corpus, folder / out, seed=7,
                          data={"validation_split": 0.1, "test": str(corpus), "block_size": 32},
                          training={"max_steps": steps, "eval_strategy": "steps", "eval_steps": 2,
                                    "per_device_train_batch_size": 4, "per_device_eval_batch_size": 16,
                                    "save_strategy": "no"}, extra=sweep)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_corpus) -> Path:
    return write(tmp_path_factory.mktemp("corpus") / "stories.txt", tiny_corpus.read_text()[:3000])


def table(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hf_toolkit", *map(str, args)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_trial_finds_its_spec_in_the_environment_and_names_the_metrics_it_could_report(monkeypatch):
    """ReportAndPrune (the finetune side of a trial): a sweep.metric the evaluation lacks is refused with
    the metrics there are, before the study is opened; evaluations after training are not reported."""
    from types import SimpleNamespace

    from transformers import TrainerControl

    from hf_toolkit.errors import HftkError
    from hf_toolkit.training import pruning
    from hf_toolkit.training.callbacks import ReportAndPrune

    spec = pruning.TrialSpec("sqlite:///never-opened.db", "study", 3, "eval_accuracy", "median", 1, 0)
    monkeypatch.delenv(pruning.TRIAL_ENV, raising=False)
    assert pruning.spec_from_env() is None, "an ordinary finetune is no trial"
    monkeypatch.setenv(pruning.TRIAL_ENV, spec.to_env())
    assert pruning.spec_from_env() == spec
    callback = ReportAndPrune(spec)
    args, state = SimpleNamespace(world_size=1), SimpleNamespace(is_world_process_zero=True, global_step=2)
    with pytest.raises(HftkError, match=r"sweep.metric: eval_accuracy is not among the evaluation metrics \(epoch, eval_loss\)"):
        callback.on_evaluate(args, state, TrainerControl(), metrics={"eval_loss": 0.5, "epoch": 1.0, "name": "x"})
    callback.on_train_end(args, state, TrainerControl())  # not pruned: training ends as usual
    callback.on_evaluate(args, state, TrainerControl(), metrics={"eval_loss": 0.5})  # the final scoring
    assert (callback.evaluations, callback.trial, callback.pruned_at) == (1, None, None)


def test_bad_spaces_are_refused_at_their_line_before_any_trial(tmp_path, cli, corpus):
    shape = recipe(tmp_path, corpus, space=(
        "    training.learning_rate: {low: 3.0e-4, high: 1.0e-5}\n"     # line 26
        "    peft.r: 4\n"                                                 # line 27
        "    training.output_dir: [a, b]\n"                               # line 28
        "    training.warmup_steps: {low: 0, hgh: 2}\n"), name="shape.yaml")
    result = cli("sweep", shape)
    assert result.exit_code == 2, result
    assert "shape.yaml:26: sweep.space.training.learning_rate: low (0.0003) must be below high (1e-05)" in result.stderr
    assert "shape.yaml:27: sweep.space.peft.r: give a list of choices" in result.stderr
    assert "shape.yaml:28: sweep.space.training.output_dir: the sweep sets training.output_dir itself" in result.stderr
    assert "shape.yaml:29: sweep.space.training.warmup_steps.hgh: unknown key" in result.stderr
    # Values that fit the section's shape but not the recipe: each edge checked as --set would be.
    values = recipe(tmp_path, corpus, space=(
        "    training.learning_rate: {low: 0.0, high: 1.0e-3}\n"          # line 26
        "    training.learnig_rate: [1.0e-3, 2.0e-3]\n"                   # line 27
        "    training.warmup_steps: [0, -1]\n"), name="values.yaml")      # line 28
    result = cli("sweep", values)
    assert result.exit_code == 2, result
    assert "values.yaml:26: sweep.space.training.learning_rate: low 0.0: must be greater than 0" in result.stderr
    assert ("values.yaml:27: sweep.space.training.learnig_rate: choice 0.001, choice 0.002: unknown TrainingArguments "
            "key (did you mean 'learning_rate'?)") in result.stderr
    assert "values.yaml:28: sweep.space.training.warmup_steps: choice -1: " in result.stderr
    assert not (tmp_path / "out").exists(), "nothing was written"


def test_a_tiny_sweep_runs_three_real_trials_and_links_the_best(tmp_path, cli, corpus):
    path = recipe(tmp_path, corpus)
    planned = cli("sweep", path, "--dry-run")
    assert planned.exit_code == 0, planned
    assert "training.learning_rate: one of 0.001, 0.003" in planned.stdout
    assert "training.warmup_steps: integer in [0, 2]" in planned.stdout
    assert "output_dir: " + str(tmp_path / "out" / "trial-000") in planned.stdout
    assert not (tmp_path / "out").exists(), "--dry-run writes nothing"

    result = cli("sweep", path)
    assert result.exit_code == 0, result
    out = tmp_path / "out"
    rows = table(out)
    assert [(r["number"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "COMPLETE"), ("2", "COMPLETE")]
    for row in rows:  # each trial is an ordinary run with its values, and says how it ended
        trial = out / row["folder"]
        saved = (trial / "hftk_recipe.yaml").read_text()
        assert f"learning_rate: {float(row['training.learning_rate'])}" in saved and "\nsweep:" not in saved
        assert json.loads((trial / "metrics.json").read_text())["eval_loss"] == pytest.approx(float(row["value"]))
        assert json.loads((trial / "hftk_trial.json").read_text())["state"] == "COMPLETE"
        assert "hftk finetune" in (trial / "README.md").read_text()
    for picture in ("trials.png", "params.png"):
        assert (out / picture).read_bytes()[:4] == b"\x89PNG"
    best = min(rows, key=lambda r: float(r["value"]))
    assert os.readlink(out / "best") == best["folder"], "a relative link to the best trial"
    # Equal values give equal results: each trial's seed is the recipe's.
    by_values: dict[tuple, set] = {}
    for row in rows:
        by_values.setdefault((row["training.learning_rate"], row["training.warmup_steps"]), set()).add(row["value"])
    assert all(len(values) == 1 for values in by_values.values())
    generated = cli("generate", "--model", out / "best", "--prompt", "Once", "--max-new-tokens", "3")
    assert generated.exit_code == 0, generated

    # The sweep's seed fixes the sampler: the same sweep elsewhere draws the same values.
    again = cli("sweep", path, "--trials", "2", "--set", f"training.output_dir={tmp_path / 'again'}")
    assert again.exit_code == 0, again
    draws = lambda rows: [(r["training.learning_rate"], r["training.warmup_steps"], r["value"]) for r in rows]  # noqa: E731
    assert draws(table(tmp_path / "again")) == draws(rows[:2])


def test_the_median_pruner_stops_a_diverging_trial_at_its_first_evaluation(tmp_path, cli, corpus):
    import optuna

    path = recipe(tmp_path, corpus, trials=2, steps=6, space="    training.learning_rate: [1.0e-3, 30.0]\n",
                  extra="  pruner: median\n  startup_trials: 1\n")
    out = tmp_path / "out"
    out.mkdir()
    # The order is the test's: a sane trial first, then a learning rate that diverges.
    study = optuna.create_study(study_name="out", storage=f"sqlite:///{out / 'study.db'}", direction="minimize")
    study.enqueue_trial({"training.learning_rate": 1.0e-3})
    study.enqueue_trial({"training.learning_rate": 30.0})
    result = cli("sweep", path)
    assert result.exit_code == 0, result
    rows = table(out)
    assert [(r["state"], r["training.learning_rate"]) for r in rows] == [("COMPLETE", "0.001"), ("PRUNED", "30.0")]
    diverging = optuna.load_study(study_name="out", storage=f"sqlite:///{out / 'study.db'}").trials[1]
    assert list(diverging.intermediate_values) == [2], "stopped at its first evaluation (step 2 of 6)"
    record = json.loads((out / "trial-001" / "hftk_trial.json").read_text())
    assert record["state"] == "PRUNED" and "behind the median" in record["reason"]
    assert not (out / "trial-001" / "model.safetensors").exists(), "a pruned trial is not finished and saved"
    assert os.readlink(out / "best") == "trial-000"


@pytest.mark.slow
def test_a_killed_sweep_resumes_keeping_finished_trials_and_retrying_the_interrupted_one(tmp_path, cli, corpus):
    path = recipe(tmp_path, corpus, trials=3, steps=40)
    out = tmp_path / "out"
    process = start("sweep", path)
    deadline = time.time() + 600
    while not (out / "trial-001").exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "trial 1 never started"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = table(out)
    assert [(r["number"], r["state"]) for r in first] == [("0", "COMPLETE")], "killed during trial 1"

    result = cli("sweep", path)
    assert result.exit_code == 0, result
    rows = table(out)
    states = [(r["number"], r["state"]) for r in rows]
    assert states == [("0", "COMPLETE"), ("1", "FAIL"), ("2", "COMPLETE"), ("3", "COMPLETE")], states
    assert rows[0] == first[0], "the finished trial is kept as it was"
    assert rows[1]["note"] == "interrupted; runs again as trial 2"
    assert (rows[2]["training.learning_rate"], rows[2]["training.warmup_steps"]) == \
        (rows[1]["training.learning_rate"], rows[1]["training.warmup_steps"]), "the interrupted trial's values run again"
    assert sum(r["state"] == "COMPLETE" for r in rows) == 3, "the total is the number asked for"


@pytest.mark.slow
def test_two_sweeps_on_one_study_split_the_trials_and_run_none_twice(tmp_path, corpus):
    import optuna

    path = recipe(tmp_path, corpus, trials=4)
    out = tmp_path / "out"
    out.mkdir()
    storage = f"sqlite:///{out / 'study.db'}"
    workers = [start("sweep", path, "--storage", storage) for _ in range(2)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=900)
        assert worker.returncode == 0, stderr[-3000:]
    trials = optuna.load_study(study_name="out", storage=storage).trials
    ran = [t for t in trials if not t.user_attrs.get("surplus")]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in ran) == 4 and len(ran) == 4
    assert {t.user_attrs["pid"] for t in ran} == {w.pid for w in workers}, "both processes ran trials"
    for t in ran:  # one run per trial, made by the process the study handed it to
        record = json.loads((out / f"trial-{t.number:03d}" / "hftk_trial.json").read_text())
        assert record["state"] == "COMPLETE" and record["number"] == t.number


@pytest.mark.slow
def test_sigterm_stops_the_running_trial_and_enqueues_its_values_again(tmp_path, corpus):
    import optuna

    path = recipe(tmp_path, corpus, trials=2, steps=400)
    write(path, path.read_text().replace('save_strategy: "no"', "save_strategy: steps\n  save_steps: 2"))
    out = tmp_path / "out"
    process = start("sweep", path)
    deadline = time.time() + 600
    while not (out / "trial-000" / "checkpoint-2" / "trainer_state.json").exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "trial 0 never started training"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # in training: the stop guard saves a checkpoint and stops
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 143, stderr[-3000:]
    assert "the sweep stopped during trial 0" in stderr and f"hftk sweep {path}" in stderr
    assert [(r["number"], r["state"], r["note"]) for r in table(out)] == [("0", "FAIL", "interrupted; runs again as trial 1")]
    trials = optuna.load_study(study_name="out", storage=f"sqlite:///{out / 'study.db'}").trials
    assert trials[1].state == optuna.trial.TrialState.WAITING and trials[1].user_attrs["retry_of"] == 0
    assert trials[1].system_attrs["fixed_params"] == trials[0].params, "its values are enqueued"
    assert json.loads((out / "trial-000" / "hftk_trial.json").read_text())["state"] == "FAIL"


@pytest.mark.parametrize("verbose", [True, False])
def test_verbose_reaches_the_ranks_of_each_trial_under_nproc(tmp_path, cli, corpus, monkeypatch, verbose):
    """Under --nproc each trial is a new torchrun command: --verbose goes with it (it was dropped)."""
    from hf_toolkit.training import launch

    launched = []

    def relaunch(nproc, argv, **options):
        launched.append((nproc, argv))
        return 1  # the ranks failed: the trial is recorded as failed, the sweep goes on

    monkeypatch.setattr(launch, "relaunch", relaunch)
    result = cli("sweep", recipe(tmp_path, corpus, trials=1), "--nproc", "2", *(["--verbose"] if verbose else []))
    assert [(nproc, argv[0], "--verbose" in argv) for nproc, argv in launched] == [(2, "finetune", verbose)], result
    assert [r["state"] for r in table(tmp_path / "out")] == ["FAIL"]
