"""The architecture holds: one task contract, no import cycles, true module docstrings, no class
built inside a function, the CLI and the task table free of the ML libraries until a command needs
them, and a new task added the way README's "Architecture" section says (a test-only task, trained,
predicted and served for real, with no other module touched)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write

PACKAGE = Path(__file__).resolve().parents[1] / "hf_toolkit"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> hf_toolkit modules it imports, at module level or inside functions alike."""
    mods = modules()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import submodule` imports the submodule; `from module import name` the module
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module for a in node.names]
            else:
                continue
            graph[name] |= {target for target in targets if target in mods and target != name}
    return graph


def test_no_import_cycles_not_even_inside_functions():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles
    importers = {module for module, targets in graph.items() if "hf_toolkit.training.train" in targets}
    # the sweep runs its trials through the finetune flow itself
    assert importers <= {"hf_toolkit.cli", "hf_toolkit.training.sweep"}, f"only the CLI and the sweep import the finetune flow: {importers}"


# Layers, lowest first. A module imports only from its own layer or the layers below it (inside
# functions too); README's "Architecture" section draws the same order. Within a layer, the cycle
# test above keeps the imports one-way.
LAYERS = [
    ("errors, compat", ["hf_toolkit.errors", "hf_toolkit.compat"]),
    ("recipe shape", ["hf_toolkit.recipe.schema", "hf_toolkit.recipe.yamlio", "hf_toolkit.recipe.problems",
                      "hf_toolkit.recipe.paths"]),
    ("core, metrics", ["hf_toolkit.core", "hf_toolkit.metrics", "hf_toolkit.recipe.environment"]),
    ("tasks", ["hf_toolkit.tasks"]),
    ("recipe checks, run directory", ["hf_toolkit.recipe.checks", "hf_toolkit.core.rundir"]),
    ("training, apply", ["hf_toolkit.training", "hf_toolkit.apply"]),
    ("serving", ["hf_toolkit.serving"]),
    ("cli", ["hf_toolkit.cli", "hf_toolkit.__main__"]),
]


def layer_of(module: str) -> int:
    """The highest layer whose prefix names `module` (the most specific entry wins)."""
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS and to README's Architecture picture"
    return best[0]


def test_dependencies_point_one_way():
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for module, targets in import_graph().items() if module not in ("hf_toolkit", "hf_toolkit.recipe")
              for target in targets if target not in ("hf_toolkit", "hf_toolkit.recipe") and layer_of(target) > layer_of(module)]
    assert not upward, "\n".join(upward)


def readme_architecture() -> str:
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    return readme.split("## Architecture\n", 1)[1].split("\n## ", 1)[0]


def test_readme_draws_the_layers_and_folders_that_exist():
    section = readme_architecture()
    order = re.search(r"layers, lowest first:\s*(.+?)\.\s", section, re.S).group(1)
    assert re.findall(r"`([^`]+)`", order) == [name for name, _ in LAYERS], "README's layer order differs from LAYERS"
    picture = section.split("```\n", 2)[1]
    drawn = {line.split()[0].rstrip("/") for line in picture.splitlines()[1:]}
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert drawn == packages, "README's tree shows one line for each package folder of hf_toolkit"
    for name in re.findall(r"(\w+\.py) \(", picture.splitlines()[0]):
        assert (PACKAGE / name).is_file(), name


def test_one_helper_unwraps_a_peft_model_and_one_counts_parameters():
    """modeling.base_model / is_peft / parameter_counts are the only places that probe for PEFT or count."""
    offenders = [f"{path}:{n}" for path in PACKAGE.rglob("*.py") if path.name != "modeling.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"get_base_model|hasattr\([^)]*peft_config|numel\(\) for", line)]
    assert not offenders, offenders
    assert [line for path in PACKAGE.rglob("*.py") for line in path.read_text(encoding="utf-8").splitlines()
            if re.match(r"IGNORE_INDEX\s*=", line)] == ["IGNORE_INDEX = -100"], "one IGNORE_INDEX (tasks/base.py)"


def test_generic_code_never_probes_a_task():
    offenders = [f"{path}:{n}" for path in PACKAGE.rglob("*.py")
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"(hasattr|getattr)\(task\b", line)]
    assert not offenders


def test_every_module_says_what_it_owns():
    for name, path in modules().items():
        if "metrics/modules" in str(path):
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert docstring and len(docstring) > 40, f"{name} has no docstring saying what it owns"


def test_no_class_is_built_inside_a_function():
    """Classes live at module level, where they can be imported, type-checked and tested; a class whose
    base comes from a heavy library lives in a module that only the code path needing it imports."""
    nested = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                nested += [f"{name}.{node.name}: class {inner.name}" for inner in ast.walk(node) if isinstance(inner, ast.ClassDef)]
    assert not nested, nested


# The ML libraries (seconds to import) and the modules that commands import before any of them is
# needed: the CLI itself (`hftk --help`), the task table and the recipe checks (`hftk finetune --check`,
# every user mistake's exit 2), the sweep's and export's and serve's own checks.
HEAVY = ("torch", "transformers", "datasets", "accelerate", "peft", "evaluate", "optuna", "onnx", "onnxruntime",
         "uvicorn", "fastapi")
CHEAP = ["hf_toolkit.cli", "hf_toolkit.tasks", "hf_toolkit.recipe.checks", "hf_toolkit.training.preflight",
         "hf_toolkit.training.sweep", "hf_toolkit.apply.export", "hf_toolkit.serving.server"]


def python(*args: str) -> subprocess.CompletedProcess:
    """This checkout's hf_toolkit run in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=PACKAGE.parent, timeout=120, check=False)


@pytest.mark.parametrize("module", CHEAP)
def test_cheap_modules_import_no_ml_library(module):
    out = python("-c", f"import json, sys, {module}; print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [], f"importing {module} imports {out.stdout.strip()}: import them where they are used"


def test_hftk_help_imports_no_ml_library():
    out = python("-X", "importtime", "-m", "hf_toolkit", "--help")
    assert out.returncode == 0 and "finetune" in out.stdout, out.stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "hf_toolkit" in imported and "typer" in imported, "importtime lists the imports"
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_every_task_implements_the_contract():
    from hf_toolkit.recipe.schema import DataSection
    from hf_toolkit.tasks import TASKS
    from hf_toolkit.tasks.base import Task

    assert list(TASKS) == ["causal-lm", "masked-lm", "text-classification", "question-answering", "summarization", "translation"]
    for name, task in TASKS.items():
        assert isinstance(task, Task) and task.name == name
        assert issubclass(task.Data, DataSection)
        assert set(task.target_roles) <= set(task.roles)
        required, optional = task.input_roles
        assert set(task.nonempty_inputs) <= set(required + optional) and task.shared_input in (None, *required, *optional)
        if task.predicts:  # served at its own endpoint, with a body field per input role
            assert task.endpoint and task.endpoint.startswith("/v1/") and task.request is not None, name
            assert set(required) <= set(task.request.model_fields) and set(optional) <= set(task.request.model_fields)
    predicting = [task.endpoint for task in TASKS.values() if task.predicts]
    assert len(set(predicting)) == len(predicting), "one endpoint per task"
    for suffix in {suffix for task in TASKS.values() for suffix in task.architectures}:
        sharing = {task.auto_class for task in TASKS.values() if suffix in task.architectures}
        assert len(sharing) == 1, f"tasks sharing the head {suffix} load it with one Auto class: {sharing}"


def test_a_model_directory_is_known_by_its_tasks_heads():
    from types import SimpleNamespace

    from hf_toolkit.core.rundir import architecture

    def of(*names):
        return architecture(SimpleNamespace(architectures=list(names)))

    assert of("BertForSequenceClassification") == ("text-classification", "AutoModelForSequenceClassification")
    assert of("GPT2LMHeadModel") == ("causal-lm", "AutoModelForCausalLM")
    assert of("BartForConditionalGeneration") == (None, "AutoModelForSeq2SeqLM"), "summarization or translation"
    assert of("BertModel") == ("", "AutoModel")


def test_a_task_names_its_own_roles(monkeypatch):
    """Role names are the tasks': the recipe schema takes any; the task refuses those it does not read."""
    from hf_toolkit import tasks
    from hf_toolkit.errors import RecipeError
    from hf_toolkit.recipe.checks import validate_recipe

    class Passages(tasks.TASKS["causal-lm"].__class__):
        name = "passages"
        roles = ("passage",)

    monkeypatch.setitem(tasks.TASKS, "passages", Passages())
    recipe = {"task": "passages", "model": {"name_or_path": "gpt2"}, "data": {"train": "t.txt", "columns": {"passage": "line"}},
              "training": {"output_dir": "out"}}
    assert validate_recipe(recipe).data.columns == {"passage": "line"}
    recipe["data"]["columns"] = {"text": "line"}
    with pytest.raises(RecipeError, match="task passages reads no 'text' column \\(its roles: passage\\)"):
        validate_recipe(recipe)


# --------------------------------------------------------------------------------------------
# A new task, added as README's Architecture section says: a Task subclass, one table entry.


def reversed_lm_task():
    """A test-only task: a causal LM trained on every passage read backwards, which predicts the token
    before a passage (``hftk predict``, and ``hftk serve`` at /v1/before). Its one role, ``passage``,
    is a name no hftk module knows; the task sets no text or non-empty roles, so the defaults hold:
    a passage is text to clean and may not be empty. The passages ``prepare`` saw are kept in ``seen``."""
    from typing import ClassVar

    from pydantic import BaseModel, Field

    from hf_toolkit.recipe.schema import DataSection
    from hf_toolkit.tasks.base import Task, Texts

    class ReversedData(DataSection):
        block_size: int = Field(16, ge=4, description="Tokens per packed block.")

    class BeforeRequest(BaseModel):
        passage: Texts = Field(..., description="Passage(s) to find the token before.")

    class ReversedLM(Task):
        name = "reversed-lm"
        auto_class = "AutoModelForCausalLM"
        Data = ReversedData
        roles = ("passage",)
        predicts = True
        endpoint = "/v1/before"
        request = BeforeRequest
        nonempty_inputs = ("passage",)
        cache_prepared = False  # prepare keeps what it saw in `seen`
        seen: ClassVar[list[str]] = []

        def predict_records(self, model, tokenizer, recipe, inputs, **options):
            import torch

            records = []
            for passage in inputs["passage"]:
                with torch.no_grad():
                    logits = model(**tokenizer(passage[::-1], return_tensors="pt")).logits
                records.append({"passage": passage, "before": tokenizer.decode([int(logits[0, -1].argmax())])[::-1]})
            return records

        def format_record(self, record):
            return f"[{record['before']}]{record['passage']}"

        def prepare(self, recipe, splits, tokenizer, model):
            size = recipe.data.block_size
            self.seen.extend(splits["train"]["passage"])

            def blocks(batch):
                ids = [t for passage in batch["passage"] for t in tokenizer(passage[::-1])["input_ids"]]
                cut = [ids[i : i + size] for i in range(0, len(ids) // size * size, size)]
                return {"input_ids": cut, "labels": [c[:] for c in cut]}

            return type(splits)({name: d.map(blocks, batched=True, remove_columns=d.column_names) for name, d in splits.items()})

    return ReversedLM()


RECIPE = """\
task: reversed-lm
model:
  init: scratch
  train_tokenizer: {{vocab_size: 300}}
  config: {{model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 16, n_positions: 64}}
data:
  train: {corpus}
{extra}training:
  output_dir: {out}
  max_steps: 4
  logging_steps: 1
  per_device_train_batch_size: 4
  learning_rate: 1e-2
  report_to: none
  disable_tqdm: true
"""


def test_a_new_task_is_one_subclass_and_one_table_entry(tmp_path, cli, monkeypatch, tiny_corpus):
    from hf_toolkit import tasks

    task = reversed_lm_task()
    monkeypatch.setitem(tasks.TASKS, task.name, task)
    # Passages as HTML, the third one nothing but a line break.
    lines = [line for line in tiny_corpus.read_text().splitlines() if line.strip()][:60]
    passages = [f"<p>{line}</p>" for line in lines]
    passages[2:2] = ["<br/>"]
    corpus = write(tmp_path / "passages.jsonl", "".join(json.dumps({"passage": p}) + "\n" for p in passages))
    out = tmp_path / "run"
    # Its data options are its own: another task's option is refused, located in the file.
    foreign = cli("finetune", write(tmp_path / "bad.yaml", RECIPE.format(corpus=corpus, out=out, extra="  doc_stride: 8\n")), "--check")
    assert foreign.exit_code == 2, foreign
    assert "bad.yaml:8: data.doc_stride: does not apply to task reversed-lm (it reads block_size)" in foreign.stderr
    # Its role is text to clean, and a row without one is refused (or dropped), though no module names it.
    cleaning = "  strip_html: true\n  normalize_whitespace: true\n"
    empty = cli("finetune", write(tmp_path / "r.yaml", RECIPE.format(corpus=corpus, out=out, extra=cleaning)))
    assert empty.exit_code == 2, empty
    assert f"1 of {len(passages)} rows have an empty passage (after cleaning), rows 3" in empty.stderr
    assert not task.seen, "refused before the task saw its data"
    result = cli("finetune", write(tmp_path / "r.yaml", RECIPE.format(corpus=corpus, out=out, extra=cleaning + "  drop_empty: true\n")))
    assert result.exit_code == 0, result
    assert sorted(task.seen) == sorted(" ".join(line.split()) for line in lines), "each passage cleaned of its HTML"
    saved = (out / "hftk_recipe.yaml").read_text()
    assert "task: reversed-lm" in saved and "block_size: 16" in saved, "the saved recipe holds the task's defaults"
    losses = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert losses, "it trained"
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).config.n_layer == 1

    # It predicts: hftk predict finds the task in the run, takes its role (by name, or a file's column),
    # checks the inputs and prints its records.
    predicted = cli("predict", "--model", out, "--input", "passage=the king", "--input", "passage=my lord", "--json")
    assert predicted.exit_code == 0, predicted
    records = json.loads(predicted.stdout)
    assert [r["passage"] for r in records] == ["the king", "my lord"] and all(isinstance(r["before"], str) for r in records)
    asked = write(tmp_path / "ask.jsonl", json.dumps({"passage": "the king"}) + "\n" + json.dumps({"passage": "my lord"}) + "\n")
    assert cli("predict", "--model", out, "--file", asked).stdout.splitlines() == [f"[{r['before']}]{r['passage']}" for r in records]
    # Its inputs are cleaned as its training text was (the recipe's strip_html and normalize_whitespace),
    # given as values or in a file alike.
    as_html = ["<p>the <b>king</b></p>", "my\n   lord<br/>"]
    html_values = cli("predict", "--model", out, *[a for p in as_html for a in ("--input", f"passage={p}")], "--json")
    assert html_values.exit_code == 0 and json.loads(html_values.stdout) == records, html_values
    html_file = write(tmp_path / "html.jsonl", "".join(json.dumps({"passage": p}) + "\n" for p in as_html))
    assert json.loads(cli("predict", "--model", out, "--file", html_file, "--json").stdout) == records
    for args, message in ((["--input", "passage= "], "--input passage: the passage is empty; a reversed-lm model needs"),
                          (["--input", "passge=the king"], ("this is a reversed-lm model: give --input passage (or --file), "
                                                           "not --input passge (did you mean 'passage'?)")),
                          (["--text", "the king"], "give --input passage (or --file), not --text"),
                          (["--input", "the king"], ("--input 'the king': give ROLE=VALUE, e.g. --input passage=... "
                                                    "(this model takes passage)"))):
        refused = cli("predict", "--model", out, *args)
        assert refused.exit_code == 2 and message in refused.stderr, (args, refused)

    # It is served: its own route and body, the same records, its endpoint named to a wrong request.
    from fastapi.testclient import TestClient

    from hf_toolkit.core.rundir import open_run
    from hf_toolkit.serving.app import create_app
    from hf_toolkit.serving.engine import Engine
    from hf_toolkit.serving.limits import Limits

    with TestClient(create_app(Engine.from_run(open_run(out), Limits()))) as client:
        served = client.post("/v1/before", json={"passage": ["the king", "my lord"]})
        assert served.status_code == 200 and served.json()["data"] == records, served.text
        served_html = client.post("/v1/before", json={"passage": as_html})
        assert served_html.status_code == 200 and served_html.json()["data"] == records, served_html.text
        info = client.get("/info").json()  # what the playground page builds its form from
        assert info["endpoint"] == "/v1/before" and info["options"] == []
        assert info["inputs"] == [{"role": "passage", "required": True, "description": "Passage(s) to find the token before."}]
        wrong = client.post("/v1/classify", json={"text": "the king"})
        assert wrong.status_code == 404 and "POST /v1/before" in wrong.json()["error"]["message"]
        refused = client.post("/v1/before", json={"passage": ["the king", ""]})
        assert refused.status_code == 400 and "passage[1]: the passage is empty" in refused.json()["error"]["message"]
