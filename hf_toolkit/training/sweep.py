"""``hftk sweep``: a hyperparameter search on Optuna, every trial an ordinary ``hftk finetune`` run.

The recipe's ``sweep`` section (:class:`hf_toolkit.recipe.schema.SweepSection`) names the metric,
its direction, the number of trials and the space (recipe key paths -> choices or ranges).
Everything is checked before any trial starts (:func:`hf_toolkit.training.preflight.check_sweep`).
OUTPUT, the recipe's ``training.output_dir``, then holds:

- ``study.db``: the Optuna study in SQLite (unless ``--storage`` names another database);
- ``trial-NNN/``: trial NNN, a run of the recipe with the trial's values (``--set``), written by
  the finetune flow itself (recipe, metrics, card), plus ``hftk_trial.json`` (state, values,
  metric, time, why it was pruned or failed);
- ``trials.csv``, ``trials.png`` (the metric by trial), ``params.png`` (each parameter against the
  metric), rewritten after every trial;
- ``best``: a relative symbolic link to the best finished trial's folder.

Trials run one after another in this process (``--nproc N``: each in N torchrun processes, ``--verbose`` passed on). Resuming
is running the same command again: the study is loaded, a trial left RUNNING by a process that died
(its pid gone on this host, or its heartbeat stale for other hosts) is marked FAIL and its values are
enqueued, so it runs again as a new trial, and trials are asked until the study holds the number
asked for. Several sweeps on one storage share the study: Optuna hands each trial to one of them;
a trial one of them asks beyond the number (two asking at once for the last one) is told FAIL at once
and listed as not run. Trial ``k``'s values are drawn by a TPE sampler seeded with ``seed + k``, so a
sweep repeats itself; each trial's training seed is the recipe's.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_toolkit.core import rundir
from hf_toolkit.errors import HftkError
from hf_toolkit.recipe.schema import SweepSection
from hf_toolkit.training import launch, plot, pruning, runlock, stopping
from hf_toolkit.training.preflight import CheckedRun, check_sweep

logger = logging.getLogger("hftk")
STUDY_FILE = "study.db"
TRIAL_FILE = "hftk_trial.json"
BEST_LINK = "best"


@dataclass
class Sweep:
    """One sweep as checked: the recipe and its section, where it writes, and how trials run."""

    recipe_path: Path
    overrides: list[str]
    checked: CheckedRun
    output_dir: Path
    storage: str
    study_name: str
    nproc: int = 1
    timeout: float | None = None
    verbose: bool = False  # --verbose: passed on to each trial's ranks under --nproc (in-process trials share this console)
    opened: Any = None  # the Optuna storage, once open_study has opened it

    @property
    def section(self) -> SweepSection:
        assert self.checked.recipe.sweep is not None
        return self.checked.recipe.sweep

    @property
    def seed(self) -> int:
        return self.section.seed if self.section.seed is not None else self.checked.recipe.seed

    def trial_dir(self, number: int) -> Path:
        return self.output_dir / f"trial-{number:03d}"

    def trial_overrides(self, number: int, params: dict[str, Any]) -> list[str]:
        """The ``--set`` options that make the recipe trial `number`'s run (an ordinary run: no sweep section)."""
        return [*self.overrides, "sweep=null", f"training.output_dir={json.dumps(str(self.trial_dir(number)))}",
                *(f"{key}={json.dumps(value)}" for key, value in params.items())]


@dataclass
class SweepResult:
    output_dir: Path
    best: Any | None  # optuna FrozenTrial
    counts: dict[str, int] = field(default_factory=dict)


def prepare(recipe_path: str | Path, overrides: Sequence[str] = (), *, trials: int | None = None,
            timeout: str | None = None, storage: str | None = None, nproc: int = 1, verbose: bool = False) -> Sweep:
    """Check everything a sweep needs before any trial (see the module docstring)."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise HftkError("hftk sweep runs on Optuna, which is not installed: pip install 'hf_toolkit[sweep]' "
                        "(or pip install optuna)") from None
    overrides = [*overrides, *([f"sweep.trials={trials}"] if trials is not None else [])]
    checked = check_sweep(recipe_path, overrides)
    output_dir = Path(checked.args.output_dir)
    found = runlock.existing_run(output_dir)
    if found is not None:
        raise HftkError(f"{output_dir} holds {found}, not a sweep; a sweep writes its trials into OUTPUT/trial-NNN, so "
                        "choose another training.output_dir (--set training.output_dir=...)")
    url = storage or f"sqlite:///{(output_dir / STUDY_FILE).absolute()}"
    return Sweep(Path(recipe_path), overrides, checked, output_dir, url, output_dir.name, nproc, parse_duration(timeout),
                 verbose)


def parse_duration(text: str | None) -> float | None:
    """Seconds in '90', '90s', '30m', '2h', '1h30m' (None stays None)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not match or not any(match.groups()):
        raise HftkError(f"--timeout {text}: give a duration such as 90s, 30m, 2h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


# -- the space -------------------------------------------------------------------------------


def suggest(trial: Any, section: SweepSection) -> dict[str, Any]:
    """The trial's value for each key of the space (Optuna's suggest_* by the kind of entry)."""
    params = {}
    for key, spec in section.space.items():
        if isinstance(spec, list):
            params[key] = trial.suggest_categorical(key, spec)
        elif spec.integer:
            params[key] = trial.suggest_int(key, spec.low, spec.high, step=spec.step or 1, log=spec.log)
        else:
            params[key] = trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)
    return params


def sampler(seed: int, number: int, trials: int):
    """Trial `number`'s sampler: TPE seeded with seed + number (random for the first trials, up to 10)."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed + number, n_startup_trials=min(10, max(1, trials // 2)))


def describe_space(section: SweepSection) -> list[str]:
    lines = []
    for key, spec in section.space.items():
        if isinstance(spec, list):
            lines.append(f"  {key}: one of {', '.join(json.dumps(v) for v in spec)}")
        else:
            kind = "integer" if spec.integer else "float"
            extra = ", log scale" if spec.log else f", step {spec.step}" if spec.step else ""
            lines.append(f"  {key}: {kind} in [{spec.low}, {spec.high}]{extra}")
    return lines


def dry_run(sweep: Sweep) -> str:
    """What the sweep would do: the space, the study's state, and trial 0's command and resolved recipe (writes nothing)."""
    import optuna
    import yaml

    from hf_toolkit.training.preflight import check_run

    section = sweep.section
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=section.direction, sampler=sampler(sweep.seed, 0, section.trials))
    params = suggest(study.ask(), section)
    overrides = sweep.trial_overrides(0, params)
    recipe = check_run(sweep.recipe_path, overrides, dry_run=True).recipe
    existing = (sweep.output_dir / STUDY_FILE).exists() if sweep.storage.startswith("sqlite") else None
    lines = [
        f"Sweep {sweep.study_name}: {section.trials} trials, {section.direction} {section.metric}, "
        f"pruner {section.pruner or 'none'}, sampler TPE (seed {sweep.seed})",
        f"Output: {sweep.output_dir} (study {sweep.storage}{'; exists, would continue' if existing else ''})",
        "Space:", *describe_space(section),
        "A sample trial (trial 0 of a new study):",
        "  hftk finetune " + " ".join([str(sweep.recipe_path), *(f"--set={o}" for o in overrides)]),
        "Its resolved recipe:",
        yaml.safe_dump(recipe.dump(), sort_keys=False, allow_unicode=True).rstrip(),
    ]
    return "\n".join(lines)


# -- the study -------------------------------------------------------------------------------


def open_study(sweep: Sweep):
    """Create or load the study; refuse one made by a sweep that differs in what trials compare."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sweep.storage.startswith("sqlite"):
        sweep.output_dir.mkdir(parents=True, exist_ok=True)
    storage = sweep.opened = pruning.open_storage(sweep.storage, on_stale=lambda study, trial: _retry(study, trial))
    section = sweep.section
    study = optuna.create_study(study_name=sweep.study_name, storage=storage, direction=section.direction,
                                pruner=pruning.pruner(_spec(sweep, -1)), load_if_exists=True)
    identity = _identity(sweep)
    recorded = study.user_attrs.get("sweep")
    if recorded is None:
        study.set_user_attr("sweep", identity)
    elif recorded != identity:
        changed = sorted(key for key in set(_flat(recorded)) | set(_flat(identity))
                         if _flat(recorded).get(key) != _flat(identity).get(key))
        raise HftkError(f"{sweep.storage}: the study {sweep.study_name!r} was made by a sweep that differs in "
                        f"{', '.join(changed)}; its trials would not compare with this one's. Choose another "
                        "training.output_dir (a new study), or undo the change to continue the study")
    return study


def _identity(sweep: Sweep) -> dict[str, Any]:
    """What every trial of one study must share: the metric, direction, space and the recipe itself."""
    recipe = sweep.checked.recipe.dump()
    section = recipe.pop("sweep")
    recipe["training"].pop("output_dir", None)
    return {"metric": section["metric"], "direction": section["direction"], "space": section["space"], "recipe": recipe}


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def _spec(sweep: Sweep, number: int) -> pruning.TrialSpec:
    section = sweep.section
    return pruning.TrialSpec(sweep.storage, sweep.study_name, number, section.metric, section.pruner,
                             section.startup_trials, section.warmup_evaluations)


def recover(study) -> list[int]:
    """Fail and enqueue again every trial a dead process left RUNNING; return their numbers.

    On this host a trial's worker is dead when its pid no longer runs; another host's trial is
    judged by Optuna's heartbeat (stale after pruning.GRACE_SECONDS without one)."""
    import optuna

    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if _worker_died(trial):
            try:
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another worker was first
            _retry(study, trial)
            recovered.append(trial.number)
    optuna.storages.fail_stale_trials(study)  # other hosts' dead workers: _retry via the storage's callback
    return recovered


def _worker_died(trial) -> bool:
    host, pid = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
    if host is None:  # killed between ask and the attributes: judged by its age
        return time.time() - trial.datetime_start.timestamp() > pruning.GRACE_SECONDS if trial.datetime_start else False
    return host == socket.gethostname() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _retry(study, trial) -> None:
    """Enqueue an interrupted trial's values again (its retry is a new trial that names it)."""
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    logger.info("trial %d was interrupted: it is marked FAIL and its values run again as a new trial", trial.number)


def counted(trials: Sequence[Any]) -> list[Any]:
    """The trials that count toward ``sweep.trials``: all but waiting ones, interrupted ones that were
    enqueued again, and ones asked beyond the number."""
    import optuna

    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return [t for t in trials if t.state != optuna.trial.TrialState.WAITING and t.number not in retried
            and not t.user_attrs.get("surplus")]


# -- running ---------------------------------------------------------------------------------


def run(sweep: Sweep, *, on_trial=None) -> SweepResult:
    """Ask and run trials until the study holds ``sweep.trials`` of them (or the timeout passes)."""
    study = open_study(sweep)
    for number in recover(study):
        logger.info("trial %d was left RUNNING by a process that is gone: it runs again", number)
    try:
        with _interruptible():
            _ask_and_run(sweep, study, on_trial)
    except Interrupted as stop:  # between trials: nothing to retry
        raise stopping.Stopped(f"the sweep stopped between trials; continue with the same command: hftk sweep "
                               f"{sweep.recipe_path}", 128 + stop.signum) from None
    write_reports(sweep, study)
    return _result(sweep, study)


class Interrupted(BaseException):
    """SIGTERM outside a trial's training (loading, evaluating): ends the trial like Ctrl-C does."""

    received = 0  # the signal, also when code under way swallowed the exception (the sweep then stops after the trial)

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted` (during training the stop guard's own handler takes over)."""
    Interrupted.received = 0

    def interrupt(signum: int, frame: Any) -> None:
        Interrupted.received = signum
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt) if _main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _ask_and_run(sweep: Sweep, study, on_trial) -> None:
    import optuna

    started = time.monotonic()
    wanted = sweep.section.trials
    while len(counted(study.get_trials(deepcopy=False))) < wanted:
        if Interrupted.received:
            raise Interrupted(Interrupted.received)
        if sweep.timeout is not None and time.monotonic() - started > sweep.timeout:
            logger.info("--timeout: %.0f s have passed; no new trial is started", sweep.timeout)
            break
        trial = study.ask()
        ahead = [t for t in counted(study.get_trials(deepcopy=False)) if t.number < trial.number]
        if len(ahead) >= wanted:  # another worker asked for the last trial at the same moment
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        study.sampler = sampler(sweep.seed, trial.number, wanted)
        params = suggest(trial, sweep.section)
        frozen = run_trial(sweep, study, trial, params)
        write_reports(sweep, study)
        if on_trial is not None:
            on_trial(frozen)


def run_trial(sweep: Sweep, study, trial, params: dict[str, Any]):
    """Run one trial as an ordinary finetune and tell the study how it ended; return the finished trial."""
    import optuna

    State = optuna.trial.TrialState
    number, folder = trial.number, sweep.trial_dir(trial.number)
    overrides = sweep.trial_overrides(number, params)
    command = ["finetune", str(sweep.recipe_path), *(f"--set={o}" for o in overrides)]
    logger.info("trial %d: %s", number, ", ".join(f"{k}={v}" for k, v in params.items()))
    begun = time.time()
    state, value, reason, interrupted = State.FAIL, None, None, None
    with _heartbeat(sweep, number):
        try:
            code = _finetune(sweep, command, overrides, _spec(sweep, number), folder)
            attrs = _frozen(study, number).user_attrs
            if "pruned_at_step" in attrs:  # under --nproc the ranks of a pruned trial end with status 0
                state, reason = State.PRUNED, attrs.get("reason")
            elif code == 0:
                metrics = json.loads((folder / rundir.METRICS_FILE).read_text(encoding="utf-8"))
                if sweep.section.metric not in metrics:
                    reason = (f"sweep.metric: {sweep.section.metric} is not in the run's metrics.json "
                              f"({', '.join(sorted(metrics))}); set it to one of them")
                else:
                    state, value = State.COMPLETE, float(metrics[sweep.section.metric])
            elif code > 128:
                interrupted = code
            else:
                reason = f"hftk finetune exited {code} (its message is above)"
        except pruning.TrialPruned:
            state, reason = State.PRUNED, _frozen(study, number).user_attrs.get("reason")
        except stopping.Stopped as error:
            interrupted = error.exit_code
        except KeyboardInterrupt:
            interrupted = 128 + signal.SIGINT
        except Interrupted as error:
            interrupted = 128 + error.signum
        except stopping.NonFiniteLoss as error:  # this trial's values diverge: the sweep goes on
            reason = str(error)
        except Exception as error:  # a user mistake every trial would repeat, or a bug: the sweep stops
            trial.set_user_attr("reason", f"{type(error).__name__}: {error}")
            study.tell(trial, state=State.FAIL)
            _write_trial_file(folder, number, "FAIL", params, None, sweep, time.time() - begun, str(error))
            write_reports(sweep, study)
            raise
    seconds = time.time() - begun
    if interrupted is not None:
        _retry(study, trial)
        trial.set_user_attr("reason", "interrupted")
        study.tell(trial, state=State.FAIL)
        _write_trial_file(folder, number, "FAIL", params, None, sweep, seconds, "interrupted: runs again as a new trial")
        write_reports(sweep, study)
        done = len([t for t in counted(study.get_trials(deepcopy=False)) if t.state.is_finished()])
        raise stopping.Stopped(
            f"the sweep stopped during trial {number} ({done} of {sweep.section.trials} trials done); it is marked "
            f"FAIL and its values run again when you continue with the same command: hftk sweep {sweep.recipe_path}",
            interrupted)
    if reason:
        trial.set_user_attr("reason", reason)
    study.tell(trial, value if state == State.COMPLETE else None, state=state)
    _write_trial_file(folder, number, state.name, params, value, sweep, seconds, reason)
    if state == State.FAIL and reason and reason.startswith("sweep.metric"):
        raise HftkError(reason)  # every trial would fail the same way
    return _frozen(study, number)


def _frozen(study, number: int):
    """Trial `number` as the storage has it now (the pruning callback writes to it from the trial's process)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _finetune(sweep: Sweep, command: list[str], overrides: list[str], spec: pruning.TrialSpec, folder: Path) -> int:
    """Run the trial's finetune; return its exit status (in-process: 0, or its exception)."""
    with _environment(pruning.TRIAL_ENV, spec.to_env()):
        if sweep.nproc > 1:
            return launch.relaunch(sweep.nproc, [*command, *(["--verbose"] if sweep.verbose else [])], output_dir=str(folder))
        from hf_toolkit.training.train import finetune

        with _signal_handlers(), _argv(["hftk", *command]):
            finetune(sweep.recipe_path, overrides)
        return 0


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def _signal_handlers() -> Iterator[None]:
    """Restore SIGTERM/SIGINT handling after a trial, also when it ends with an exception inside training
    (before the stop guard could put the old handlers back)."""
    previous = {signum: signal.getsignal(signum) for signum in stopping.SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    """The trial's run card records the finetune command that reproduces it, not the sweep's."""
    previous = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = previous


@contextlib.contextmanager
def _heartbeat(sweep: Sweep, number: int) -> Iterator[None]:
    """Beat for the trial while it runs, so workers on other hosts can tell it is alive."""
    import threading

    stop = threading.Event()
    storage = sweep.opened
    trial_id = pruning.trial_id(storage, sweep.study_name, number)

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat only makes the trial look older
                storage.record_heartbeat(trial_id)
            if stop.wait(pruning.HEARTBEAT_SECONDS):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _write_trial_file(folder: Path, number: int, state: str, params: dict[str, Any], value: float | None,
                      sweep: Sweep, seconds: float, reason: str | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"number": number, "state": state, "metric": sweep.section.metric, "value": value, "params": params,
              "seconds": round(seconds, 1), "reason": reason,
              "command": "hftk finetune " + " ".join([str(sweep.recipe_path), *(f"--set={o}" for o in sweep.trial_overrides(number, params))])}
    rundir.write_atomically(folder / TRIAL_FILE, json.dumps(record, indent=2, ensure_ascii=False) + "\n")


# -- what the sweep leaves -------------------------------------------------------------------


def rows(study, sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial for trials.csv (waiting trials left out)."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    table = []
    for t in trials:
        if t.state == optuna.trial.TrialState.WAITING:
            continue
        note = t.user_attrs.get("reason") or ""
        if t.number in retried:
            note = f"interrupted; runs again as trial {retried[t.number]}"
        elif t.user_attrs.get("surplus"):
            note = f"not run: the study already had its {sweep.section.trials} trials"
        elif t.state == optuna.trial.TrialState.RUNNING:
            note = f"running (pid {t.user_attrs.get('pid')} on {t.user_attrs.get('host')})"
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        table.append({"number": t.number, "state": t.state.name, "value": t.value, "metric": sweep.section.metric,
                      "last_evaluation": last,
                      **{key: t.params.get(key) for key in sweep.section.space},
                      "seconds": None if seconds is None else round(seconds, 1),
                      "started": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
                      "folder": sweep.trial_dir(t.number).name, "note": note})
    return table


def write_reports(sweep: Sweep, study) -> None:
    """trials.csv, the two pictures and the best/ link, from the study as it is now."""
    table = rows(study, sweep)
    if not table:
        return
    sweep.output_dir.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    rundir.write_atomically(sweep.output_dir / "trials.csv", text.getvalue())
    plot.sweep_pictures(table, list(sweep.section.space), sweep.section.metric, sweep.section.direction,
                        sweep.output_dir, log_keys=[k for k, s in sweep.section.space.items() if not isinstance(s, list) and s.log])
    _link_best(sweep, study)


def _best(study):
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study.best_trial if complete else None


def _link_best(sweep: Sweep, study) -> None:
    """Point OUTPUT/best at the best finished trial's folder (a relative link: it survives moving OUTPUT)."""
    best = _best(study)
    if best is None:
        return
    target = sweep.trial_dir(best.number)
    link = sweep.output_dir / BEST_LINK
    if not (target / rundir.RECIPE_FILE).is_file():
        logger.info("the best trial, %d, ran elsewhere (its folder %s is not here); %s is not changed",
                    best.number, target, link)
        return
    if link.exists() and not link.is_symlink():
        raise HftkError(f"{link} exists and is not the link hftk sweep keeps to the best trial; move it away")
    temporary = link.with_name(f".{BEST_LINK}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(target.name, target_is_directory=True)
    os.replace(temporary, link)


def _result(sweep: Sweep, study) -> SweepResult:
    counts: dict[str, int] = {}
    for row in rows(study, sweep):
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return SweepResult(sweep.output_dir, _best(study), counts)


def trial_line(trial, sweep: Sweep) -> str:
    """One line per finished trial, as the sweep goes."""
    value = f"{sweep.section.metric} {trial.value:.4f}" if trial.value is not None else trial.user_attrs.get("reason", "")
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    return f"trial {trial.number:3d} {trial.state.name:8s} {value}  ({params})"


def summary(result: SweepResult, sweep: Sweep) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.counts.items()))
    lines = [f"Sweep {sweep.output_dir}: {counts}; trials.csv, trials.png, params.png"]
    if result.best is not None:
        lines.append(f"Best: trial {result.best.number}, {sweep.section.metric} {result.best.value:.4f}: "
                     + ", ".join(f"{k}={v}" for k, v in result.best.params.items()))
        lines.append(f"  {sweep.output_dir / BEST_LINK} -> {sweep.trial_dir(result.best.number).name} "
                     f"(e.g. hftk predict --model {sweep.output_dir / BEST_LINK} ...)")
    return "\n".join(lines)
