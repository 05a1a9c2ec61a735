"""What the user sees: hftk's own log lines, and how much the libraries under hftk say.

Results go to stdout; hftk's progress goes to stderr as ``hftk: ...`` lines (logger ``hftk``).
The libraries under hftk print notes on every command that a user cannot act on. Unless the
command runs with ``--verbose``, :func:`setup` keeps hftk's lines, hftk's data bars (``Tokenizing
train``, ``Packing train ...``), the Trainer's training/evaluation bars and its logged metrics, and

- drops transformers' ``loss_type=None ... unrecognized`` note (GPT-2 names no loss type; the
  default it falls back to is GPT-2's loss), its advice to pass an ``attention_mask`` (hftk passes
  none only with ``data.packing: padding_free``, whose rows hold no padding: the mask comes from
  the position ids) and its ``Loading weights`` / ``Writing model shards`` bars;
- shortens transformers' LOAD REPORT table (weights a checkpoint lacked, had extra or of another
  shape) to one line, e.g. ``BertForSequenceClassification: 2 weights newly initialized (not in
  the checkpoint): classifier.bias, classifier.weight``;
- hides datasets' bars (``Generating train split`` while reading an input file) except in
  ``hftk finetune``, where reading a large training set takes a while;
- ignores the ``is_gradient_checkpointing is deprecated`` FutureWarning that peft triggers (peft
  reads transformers' deprecated property when it wraps a model for LoRA; not hftk's call);
- sets ``TORCH_CPP_LOG_LEVEL=ERROR`` (unless already set) before torch is imported: torch's C++
  warnings, such as the note DDP prints on every rank that ``find_unused_parameters=True`` found
  no unused parameters (the Trainer's safe default: some models, e.g. a BERT encoder's pooler in
  an encoder-decoder, do leave parameters unused). Errors still print.

While a resumed run loads its checkpoint (:func:`tied_weights_unmentioned`), the Trainer's warning
that the checkpoint lacks keys is dropped when every key it names is a weight tied to another
(GPT-2's ``lm_head.weight`` is its input embedding): save_pretrained leaves tied copies out, and
loading the other fills both. A missing key that is not tied is still shown.

``--verbose`` leaves every library at its own defaults. Nothing here changes what is computed.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from hf_toolkit import compat

HFTK_LOGGER = "hftk"
QUIET_TRANSFORMERS_BARS = compat.TRANSFORMERS_BARS
DROPPED_TRANSFORMERS_NOTES = compat.TRANSFORMERS_NOTES
GRADIENT_CHECKPOINTING_WARNING = r"`is_gradient_checkpointing` is deprecated"
LOAD_STATUS_WORDS = {
    "MISSING": "newly initialized (not in the checkpoint)",
    "UNEXPECTED": "in the checkpoint but unused",
    "MISMATCH": "reinitialized (another shape in the checkpoint)",
}

_state = {"datasets_env": False, "tqdm_hook": None}


def setup(verbose: bool = False, *, models: bool = True, data_bars: bool = False) -> None:
    """Set up output for one command (idempotent: a later call with other settings replaces it).

    ``models``: the command loads models, so transformers' output is configured (importing
    transformers' logging takes half a second, which files-mode ``hftk eval`` does not need).
    ``data_bars``: keep datasets' progress bars (``hftk finetune``).
    """
    _hftk_log_lines()
    quiet = not verbose
    if quiet:
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    _ignore_warning(GRADIENT_CHECKPOINTING_WARNING, FutureWarning, on=quiet)
    _datasets_bars(on=verbose or data_bars)
    if models:
        _transformers_output(quiet=quiet)


def _hftk_log_lines() -> None:
    """hftk's own messages on stderr, once however often a command runs in this process."""
    logger = logging.getLogger(HFTK_LOGGER)
    if not any(getattr(handler, "hftk", False) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("hftk: %(message)s"))
        handler.hftk = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _ignore_warning(message: str, category: type[Warning], *, on: bool) -> None:
    present = [entry for entry in warnings.filters if entry[0] == "ignore" and entry[2] is category
               and getattr(entry[1], "pattern", None) == message]
    if on and not present:
        warnings.filterwarnings("ignore", message=message, category=category)
    elif not on and present:
        for entry in present:
            warnings.filters.remove(entry)
        compat.warning_filters_changed()


def _datasets_bars(*, on: bool) -> None:
    """datasets reads HF_DATASETS_DISABLE_PROGRESS_BARS once, at import; after that, its switch."""
    if "datasets" not in sys.modules:
        if not on and "HF_DATASETS_DISABLE_PROGRESS_BARS" not in os.environ:
            os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
            _state["datasets_env"] = True
        elif on and _state["datasets_env"]:
            del os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"]
            _state["datasets_env"] = False
        return
    import datasets

    if datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is None:  # else the variable decides, for good
        if on:
            datasets.enable_progress_bars()
        else:
            datasets.disable_progress_bars()


@contextlib.contextmanager
def datasets_bars_off() -> Iterator[None]:
    """Within the block, no datasets progress bars (e.g. its 'Saving the dataset' bars); as they were
    after it. HF_DATASETS_DISABLE_PROGRESS_BARS, when set, decides for good (:func:`_datasets_bars`)."""
    import datasets

    if datasets.are_progress_bars_disabled():
        yield
        return
    _datasets_bars(on=False)
    try:
        yield
    finally:
        _datasets_bars(on=True)


def _transformers_output(*, quiet: bool) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("transformers")  # creates transformers' own stderr handler
    for handler in logging.getLogger("transformers").handlers:
        handler.removeFilter(_TRANSFORMERS_NOTES)
        if quiet:
            handler.addFilter(_TRANSFORMERS_NOTES)
    previous = hf_logging.set_tqdm_hook(_quiet_bars if quiet else _state["tqdm_hook"])
    if previous is not _quiet_bars:  # the hook before ours (usually none): what --verbose restores
        _state["tqdm_hook"] = previous
        if not quiet:
            hf_logging.set_tqdm_hook(previous)


def _quiet_bars(factory, args, kwargs):
    """transformers' tqdm hook: its weight loading and saving bars off, others unchanged."""
    if str(kwargs.get("desc") or "").startswith(QUIET_TRANSFORMERS_BARS):
        kwargs = {**kwargs, "disable": True}
    return factory(*args, **kwargs)


class _TransformersNotes(logging.Filter):
    """Drops transformers' per-command notes and shortens the LOAD REPORT to one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(note in message for note in DROPPED_TRANSFORMERS_NOTES):
            return False
        if compat.LOAD_REPORT in message:
            summary = summarize_load_report(message)
            if summary is not None:
                record.msg, record.args = summary, None
        return True


_TRANSFORMERS_NOTES = _TransformersNotes()


def summarize_load_report(report: str) -> str | None:
    """One line for transformers' LOAD REPORT table; None when the table is not recognized."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", report)
    header = re.match(r"\s*(?:\[transformers\]\s*)?(\S+) LOAD REPORT", text)
    by_status: dict[str, list[str]] = {}
    for line in text.splitlines():
        row = re.match(r"\s*([^\s|]+)\s*\|\s*([A-Z][A-Z_]+)\s*(?:\||$)", line)
        if row:
            by_status.setdefault(row.group(2), []).append(row.group(1))
    if header is None or not by_status:
        return None
    parts = []
    for status, keys in by_status.items():
        shown = ", ".join(keys[:4]) + (f", ... ({len(keys) - 4} more)" if len(keys) > 4 else "")
        noun = "weight" if len(keys) == 1 else "weights"
        parts.append(f"{len(keys)} {noun} {LOAD_STATUS_WORDS.get(status, status.lower())}: {shown}")
    return f"{header.group(1)}: " + "; ".join(parts) + " (--verbose shows the load report)"


MISSING_KEYS_WARNING = compat.MISSING_KEYS_WARNING


@contextlib.contextmanager
def tied_weights_unmentioned(model: Any) -> Iterator[None]:
    """For the block: drop the Trainer's missing-keys warning when every key is a tied weight of `model`."""
    keep = _TiedWeightsFilter(tied_parameter_names(model))
    trainer_logger = logging.getLogger("transformers.trainer")
    trainer_logger.addFilter(keep)
    try:
        yield
    finally:
        trainer_logger.removeFilter(keep)


def tied_parameter_names(model: Any) -> set[str]:
    """Names of parameters that share their tensor with another name (both names of each pair)."""
    by_tensor: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(parameter), []).append(name)
    return {name for names in by_tensor.values() if len(names) > 1 for name in names}


class _TiedWeightsFilter(logging.Filter):
    def __init__(self, tied: set[str]):
        super().__init__()
        self.tied = tied

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(MISSING_KEYS_WARNING):
            return True
        try:
            missing = ast.literal_eval(message[len(MISSING_KEYS_WARNING):].rstrip("."))
        except (ValueError, SyntaxError):
            return True
        return not (missing and set(missing) <= self.tied)
