"""A sweep trial's side of the study: its evaluations reported to its Optuna trial, and pruning.

``hftk sweep`` (:mod:`hf_toolkit.training.sweep`) runs every trial as an ordinary ``hftk finetune``,
in-process or, with ``--nproc``, in its own torchrun processes, and names the trial in the
environment variable ``HFTK_SWEEP_TRIAL`` (JSON: storage URL, study name, trial number, metric, pruner
settings). The finetune flow gives its Trainer a :class:`hf_toolkit.training.callbacks.ReportAndPrune`
for the trial :func:`spec_from_env` reads. At each
evaluation, rank 0 reports the metric at the global step (``trial.report``) and asks the pruner
(``trial.should_prune``); under several processes rank 0's answer reaches every rank with one
``all_reduce``, so all stop at the same step. A pruned trial stops at once: training ends at that
step, and once the Trainer has run its own end-of-training callbacks (the stop guard restores the
signal handlers there) :class:`TrialPruned` is raised, so the final evaluation and the save are
skipped. Rank 0 records the step in the trial's user attribute ``pruned_at_step``, which is how the
sweep, in whatever process, tells a pruned trial from a failed one.

:func:`open_storage` is the one place a storage URL becomes an Optuna storage (for the sweep too).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from hf_toolkit.errors import HftkError

TRIAL_ENV = "HFTK_SWEEP_TRIAL"
# A worker's heartbeat, so that a trial left RUNNING by a machine that died is failed and retried
# by the workers that live on (a trial of a killed process on this host is found at once by its pid).
HEARTBEAT_SECONDS = 60
GRACE_SECONDS = 180


class TrialPruned(HftkError):
    """The sweep's pruner stopped this trial (its evaluations fell behind the earlier trials').

    Under ``--nproc`` (hftk's launcher) the ranks end with status 0 and only rank 0 has a message,
    as a stop does; the sweep reads the outcome from the study, not from the status."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class TrialSpec:
    """What a finetune process needs to report to its trial (carried in ``HFTK_SWEEP_TRIAL``)."""

    storage: str
    study: str
    number: int
    metric: str
    pruner: str | None
    startup_trials: int
    warmup_evaluations: int

    def to_env(self) -> str:
        return json.dumps(asdict(self))


def open_storage(url: str, *, on_stale: Any = None):
    """An Optuna RDB storage for `url` (sqlite:///..., postgresql://..., mysql://...), with a heartbeat.

    SQLite waits up to 60 s for a lock held by another worker instead of failing at once.
    `on_stale(study, frozen_trial)` runs for each trial whose worker stopped beating.
    """
    import warnings

    import optuna

    # The heartbeat is "experimental" in Optuna, and meant for Study.optimize, whose loop hftk's is;
    # both warnings would print on every trial.
    warnings.filterwarnings("ignore", message=".*heartbeat_interval.*", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    warnings.filterwarnings("ignore", message=".*fail_stale_trials is experimental", category=optuna.exceptions.ExperimentalWarning)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
                                          grace_period=GRACE_SECONDS, heartbeat_stale_trial_callback=on_stale)
    except (ImportError, ValueError) as error:  # an unknown dialect, a missing driver (psycopg2, pymysql)
        raise HftkError(f"--storage {url}: Optuna cannot open it ({error}); give an RDB URL such as "
                        "sqlite:////abs/path/study.db or postgresql://user:password@host/db, with its driver installed") from None


def trial_id(storage: Any, study: str, number: int) -> int:
    """The storage's id of trial `number` of `study` (Optuna's public storage API)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study), number)


def pruner(spec: TrialSpec):
    """The study's pruner as the sweep section sets it (None: never prune, only report)."""
    import optuna

    if spec.pruner is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=0)


def spec_from_env() -> TrialSpec | None:
    """The sweep trial this process runs (``HFTK_SWEEP_TRIAL`` set), else None."""
    raw = os.environ.get(TRIAL_ENV)
    return TrialSpec(**json.loads(raw)) if raw else None
