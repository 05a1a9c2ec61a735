"""``hftk predict``: apply a trained non-generative model (classifier, extractive QA, fill-mask) to inputs.

The task comes from the run directory's ``hftk_recipe.yaml``; for a plain Hugging Face model
directory (or hub id) from ``config.architectures`` (:func:`hf_toolkit.core.rundir.architecture`).
Inputs come from the command line (values by input role: an option for each common role, and
``ROLE=VALUE`` assignments for any role, so a new task's role needs no new option) or a data file
(a column per role), as rows of the task's input roles; a role the model does not take is refused
with the roles it does take; input text is cleaned as the run's recipe cleaned its training text
(``data.strip_html``, ``data.normalize_whitespace``), whether given as a value or in a file; the task's ``predict_records`` turns them into one plain-data record per input (its
docstring gives the record's fields) and ``format_record`` into a line for the terminal, so
``hftk predict``, ``hftk serve`` and ``hftk eval --model`` compute predictions the same way.

A ``--file`` is read in ``--encoding`` (default: the run's ``data.encoding``, else UTF-8). A
``--file`` row whose input columns are all empty or blank is skipped, and the number skipped is
said in one line on stderr; a ``.txt`` file is one input a line, each line stripped of its line
break and surrounding spaces. A file of blank rows only is an error (nothing to predict).

Input mistakes (wrong options for the model's task, a file without the needed columns, an empty
input the task cannot predict from: ``Task.nonempty_inputs``) raise :class:`HftkError` before the
model weights are loaded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_toolkit.core import rundir
from hf_toolkit.core.data import clean_inputs
from hf_toolkit.errors import DataError, HftkError, did_you_mean
from hf_toolkit.tasks import TASKS
from hf_toolkit.tasks.base import Task

# How --file takes another encoding than the run's (or UTF-8).
SET_ENCODING = "give the file's encoding with --encoding ENCODING"


@dataclass
class Inputs:
    """What the user gave: values by input role from the command line, and a file."""

    given: dict[str, list[str]] = field(default_factory=dict)
    file: Path | None = None
    encoding: str | None = None  # of --file; None: the run's data.encoding, else UTF-8
    flags: dict[str, str] = field(default_factory=dict)  # role -> how the user gives it (hftk predict: its flag)
    assigned: list[str] = field(default_factory=list)  # "ROLE=VALUE" inputs of any role; flags["assigned"] names them

    def by_role(self, roles: tuple[str, ...] = ()) -> dict[str, list[str]]:
        """Values by role: `given`'s, then the `assigned` ones (`roles`, the model's, are named when one is malformed)."""
        rows = {role: list(values) for role, values in self.given.items() if values}
        for assignment in self.assigned:
            role, equals, value = assignment.partition("=")
            if not equals or not role.strip():
                example = f"{self.option(roles[0], assigned=True)}=..." if roles else "ROLE=VALUE"
                raise HftkError(f"{self.flags.get('assigned', 'assigned')} {assignment!r}: give ROLE=VALUE, e.g. {example}"
                                + (f" (this model takes {', '.join(roles)})" if roles else ""))
            rows.setdefault(role.strip(), []).append(value)
        return rows

    def option(self, role: str, *, assigned: bool = False) -> str:
        """How the user gives an input role (``text_pair`` -> ``--text-pair``): its own flag, else as an
        assignment (``--input passage``), else (a program's Inputs) the role's name."""
        if role in self.flags and not assigned:
            return self.flags[role]
        return f"{self.flags['assigned']} {role}" if "assigned" in self.flags else role


def predict(model_ref: str, inputs: Inputs, *, top_k: int = 5, batch_size: int = 16) -> tuple[Task, list[dict[str, Any]]]:
    """(the model's task, one record per input) for a run directory, local model dir or hub id."""
    run = rundir.open_run(model_ref)
    config = rundir.load_config(run)
    name = rundir.task_name(run, config)
    if name is None:
        raise HftkError(
            f"cannot tell what {model_ref} predicts: its config.json lists architectures {config.architectures} and "
            f"hftk predict needs a model whose architecture ends in one of {rundir.heads(predicting=True)} "
            "(for text generation use hftk generate)"
        )
    task = TASKS[name]
    if not task.predicts:
        predicting = ", ".join(t.name for t in TASKS.values() if t.predicts)
        raise HftkError(f"{model_ref} is a {name} model; hftk predict applies {predicting} models. "
                        f"For text generation use: hftk generate --model {model_ref} --prompt '...'")
    rows = read_inputs(task, inputs, run.recipe)
    model, tokenizer = rundir.load_model(run, config)
    return task, task.predict_records(model, tokenizer, run.recipe, rows, top_k=top_k, batch_size=batch_size)


def read_inputs(task: Task, inputs: Inputs, recipe) -> dict[str, list[str]]:
    """The inputs as rows of the task's input roles (command line first, then --file), checked."""
    required, optional = task.input_roles
    rows = inputs.by_role(required + optional)
    wanted = " and ".join(inputs.option(role) for role in required)
    unused = [role for role in rows if role not in required + optional]
    if unused:
        also = f" (optionally {', '.join(inputs.option(role) for role in optional)})" if optional else ""
        typo = did_you_mean(unused[0], required + optional) if unused[0] not in inputs.given else ""  # a role typed out
        raise HftkError(f"this is a {task.name} model: give {wanted}{also} (or --file), not {inputs.option(unused[0])}{typo}")
    rows = clean_inputs(task.share_inputs(rows), recipe.data if recipe is not None else None, task.input_text_roles)
    counts = {role: len(rows.get(role, [])) for role in required + optional if role in rows or role in required}
    if len(set(counts.values())) > 1:
        shown = " but ".join(f"{count} {inputs.option(role)}" for role, count in counts.items())
        shared = task.shared_input
        raise HftkError(f"{shown}; give one of each per input" + (
            f" (or one {inputs.option(shared)} for all)" if shared in counts else ""))
    task.check_inputs(rows, lambda role, i: f"{inputs.option(role)} {i + 1}" if len(rows[role]) > 1 else inputs.option(role))
    if inputs.encoding is not None:
        check_encoding(inputs)
    if inputs.file is not None:
        add_file_rows(task, rows, inputs.file, recipe, encoding=inputs.encoding)
    if not any(rows.get(role) for role in required):
        raise HftkError(f"nothing to predict: give {wanted}, or --file with one input per row")
    return rows


def check_encoding(inputs: Inputs) -> None:
    """--encoding names a codec Python knows, and there is a --file for it to read."""
    import codecs

    if inputs.file is None:
        raise HftkError("--encoding is the text encoding of --file; give --file too, or leave --encoding out")
    try:
        codecs.lookup(inputs.encoding)
    except LookupError:
        raise HftkError(f"--encoding: unknown text encoding {inputs.encoding!r}; use e.g. utf-8, gbk, latin-1, cp1252") from None


def add_file_rows(task: Task, rows: dict[str, list[str]], path: Path, recipe, *, encoding: str | None = None) -> None:
    """Rows of a json/jsonl/csv/tsv/parquet/txt file, columns named as the run's recipe maps them or by role,
    read in `encoding` (None: the run's ``data.encoding``, else UTF-8)."""
    from hf_toolkit.core.data import eval_rows, load_source
    from hf_toolkit.recipe.schema import LOCAL_FILE_SUFFIXES, DataSource

    path = Path(path)
    if not path.is_file():
        raise DataError(f"--file: file not found: {path}")
    if path.suffix.lower() not in LOCAL_FILE_SUFFIXES:
        raise DataError(f"--file: '{path}' has an unsupported extension; use one of {', '.join(LOCAL_FILE_SUFFIXES)}")
    if encoding is None:
        encoding = recipe.data.encoding if recipe is not None else "utf-8"
    required, optional = task.input_roles
    source = load_source(DataSource(file=str(path)), encoding=encoding, set_encoding=SET_ENCODING)
    dataset = eval_rows(
        source, recipe.data if recipe is not None else None, required, optional,
        where=f"--file {path}", how_to_map="Name the file's columns by role (" + ", ".join(required + optional) + ")",
        text_roles=task.input_text_roles,
    )
    present = [role for role in required + optional if role in dataset.column_names]
    if rows and set(present) != set(rows):
        raise HftkError(f"mix of inputs with and without {', '.join(sorted(set(present) ^ set(rows)))}: give the same "
                        "inputs on the command line as in --file")
    values = {role: ["" if value is None else str(value) for value in dataset[role]] for role in present}
    lines = path.suffix.lower() == ".txt"
    if lines:  # one input a line: neither its line break nor the spaces around it are part of it
        values = {role: [value.strip() for value in column] for role, column in values.items()}
    kept = [i for i in range(len(dataset)) if any(values[role][i].strip() for role in present)]
    skipped = len(dataset) - len(kept)
    unit = "line" if lines else "row"
    if skipped:
        if not kept and not any(rows.get(role) for role in required):
            raise DataError(f"nothing to predict: every {unit} of --file {path} is blank")
        print(f"hftk: skipped {skipped} blank {unit}{'' if skipped == 1 else 's'} of --file {path}", file=sys.stderr)
    task.check_inputs({role: [values[role][i] for i in kept] for role in present},
                      lambda role, i: f"--file {path}: {unit} {kept[i] + 1}")
    for role in present:
        rows.setdefault(role, []).extend(values[role][i] for i in kept)

