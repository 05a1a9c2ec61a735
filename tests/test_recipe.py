"""Recipe validation: every malformed recipe exits 2 naming its key and line, before anything loads."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

from hf_toolkit.errors import RecipeError
from hf_toolkit.recipe.checks import load_recipe
from hf_toolkit.recipe.paths import resolve_path
from hf_toolkit.training.preflight import check_run

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
task: causal-lm
model:
  init: scratch
  train_tokenizer: {vocab_size: 300}
  config: {model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 16}
data:
  train: corpus.txt
  validation_split: 0.1
  block_size: 32
training:
  output_dir: out
  learning_rate: 2e-5
  max_steps: 3
"""


@pytest.fixture
def recipe_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("hello world\n" * 50)
    return tmp_path


def write_recipe(directory: Path, text: str) -> Path:
    path = directory / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


def test_good_recipe_loads_with_float_exponents(recipe_dir):
    recipe = load_recipe(write_recipe(recipe_dir, GOOD))
    assert recipe.task == "causal-lm"
    assert recipe.training["learning_rate"] == 2e-5  # YAML 1.1 alone would read '2e-5' as a string
    assert recipe.data.block_size == 32
    assert recipe.data.train.file == "corpus.txt"


# (recipe text, the line number and text that the message must contain)
MALFORMED = {
    "unknown top-level key": (edit("task: causal-lm\n", "task: causal-lm\nmodle: {}\n"), 2, "modle: unknown key (did you mean 'model'?)"),
    "unknown model key": (edit("  init: scratch\n", "  init: scratch\n  nmae_or_path: gpt2\n"), 4, "model.nmae_or_path: unknown key (did you mean 'name_or_path'?)"),
    "misspelt training key": (edit("  learning_rate: 2e-5", "  learnig_rate: 2e-5"), 12, "training.learnig_rate: unknown TrainingArguments key (did you mean 'learning_rate'?)"),
    "wrong training type": (edit("  max_steps: 3", "  max_steps: three"), 13, "training.max_steps: expected an integer"),
    "bad training choice": (edit("  max_steps: 3", "  max_steps: 3\n  lr_scheduler_type: cosinus"), 14, "training.lr_scheduler_type: expected one of linear, cosine"),
    "unknown task": (edit("task: causal-lm", "task: causal_lm"), 1, "task: Input should be 'causal-lm'"),
    "missing data file": (edit("train: corpus.txt", "train: nothere.txt"), 7, "data.train: file not found: 'nothere.txt'"),
    "unsupported file type": (edit("train: corpus.txt", "train: corpus.xlsx"), 7, "unsupported extension"),
    "wrong type in data": (edit("block_size: 32", "block_size: '32'"), 9, "data.block_size: Input should be a valid integer"),
    "impossible value": (edit("validation_split: 0.1", "validation_split: 1.5"), 8, "data.validation_split: Input should be less than 1"),
    "option of another task": (edit("block_size: 32", "block_size: 32\n  doc_stride: 64"), 10, "data.doc_stride: does not apply to task causal-lm"),
    "duplicate key": (edit("  max_steps: 3", "  max_steps: 3\n  max_steps: 4"), 14, "training.max_steps: duplicate key (first set on line 13)"),
    "bad init": (edit("init: scratch", "init: random"), 3, "model.init: Input should be 'pretrained' or 'scratch'"),
    "scratch without model_type": (edit("{model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 16}", "{n_layer: 1}"), 2, "needs config.model_type"),
    "missing local model dir": (edit("  init: scratch\n", "  init: scratch\n  name_or_path: ./no/such/dir\n"), 4, "'./no/such/dir' does not exist"),
    "train and validation both": (edit("validation_split: 0.1", "validation_split: 0.1\n  validation: corpus.txt"), 6, "set data.validation or data.validation_split, not both"),
    "missing data section": ("task: causal-lm\nmodel: {name_or_path: ./}\n", 0, "data: required key is missing"),
    "invalid yaml": ("task: causal-lm\nmodel: [\n", 3, "not valid YAML"),
    "seed inside training": (edit("max_steps: 3", "max_steps: 3\n  seed: 7"), 14, "training.seed: set the recipe's top-level seed instead"),
    "transformers 4 key": (edit("max_steps: 3", "max_steps: 3\n  evaluation_strategy: steps"), 14, "training.evaluation_strategy: a transformers 4 key that transformers 5 removed: use eval_strategy"),
    "missing load_dataset data_files": (edit("train: corpus.txt", "train: {path: text, data_files: [corpus.txt, more/*.txt]}"), 7, "data.train: data_files: no file matches 'more/*.txt'"),
    "column of another task": (edit("block_size: 32", "block_size: 32\n  columns: {label: y}"), 10, "data.columns.label: task causal-lm reads no 'label' column (its roles: text)"),
    "lora on scratch weights": (GOOD + "peft: {r: 4}\n", 14, "peft: LoRA adapts pretrained weights"),
    "unknown model config key": (edit("n_embd: 16", "n_embdd: 16"), 5, "model.config.n_embdd: not a setting of GPT2Config (did you mean 'n_embd'?)"),
    "wrong model config type": (edit("n_layer: 1", "n_layer: one"), 5, "model.config.n_layer: expected a number like GPT2Config's default 12 (got 'one')"),
    "model config flag as number": (edit("n_embd: 16}", "n_embd: 16, scale_attn_weights: 1}"), 5, "model.config.scale_attn_weights: expected true or false"),
    "model config that breaks the model's rules": (edit("n_embd: 16}", "n_embd: 15}"), 5, "model.config: `embed_dim` must be divisible by num_heads (got `embed_dim`: 15 and `num_heads`: 2). (the model cannot be built from these settings)"),
    "report_to without its package": (edit("max_steps: 3", "max_steps: 3\n  report_to: wandb"), 14, "training.report_to: 'wandb' needs the wandb package, which is not installed: pip install wandb"),
    "output_dir that is a file": (edit("output_dir: out", "output_dir: corpus.txt"), 11, "training.output_dir: 'corpus.txt' is a file, not a directory"),
    "output_dir under a file": (edit("output_dir: out", "output_dir: corpus.txt/run"), 11, "training.output_dir: cannot create 'corpus.txt/run': 'corpus.txt' is a file"),
    "eval without validation data": (edit("  validation_split: 0.1\n", "").replace("max_steps: 3", "max_steps: 3\n  eval_strategy: steps"), 13, "training.eval_strategy: 'steps' needs validation data"),
    # Impossible values (issue 12): caught before anything loads, at their line.
    "negative learning rate": (edit("learning_rate: 2e-5", "learning_rate: -2e-5"), 12, "training.learning_rate: must be greater than 0 (got -2e-05)"),
    "zero learning rate": (edit("learning_rate: 2e-5", "learning_rate: 0"), 12, "training.learning_rate: must be greater than 0 (got 0)"),
    "zero batch size": (edit("max_steps: 3", "max_steps: 3\n  per_device_train_batch_size: 0"), 14, "training.per_device_train_batch_size: must be at least 1 (got 0)"),
    "negative eval batch size": (edit("max_steps: 3", "max_steps: 3\n  per_device_eval_batch_size: -8"), 14, "training.per_device_eval_batch_size: must be at least 1 (got -8)"),
    "zero gradient accumulation": (edit("max_steps: 3", "max_steps: 3\n  gradient_accumulation_steps: 0"), 14, "training.gradient_accumulation_steps: must be at least 1 (got 0)"),
    "zero epochs": (edit("  max_steps: 3", "  num_train_epochs: 0"), 13, "training.num_train_epochs: must be greater than 0 (got 0)"),
    "zero max_steps": (edit("max_steps: 3", "max_steps: 0"), 13, "training.max_steps: must be a positive number of optimizer steps, or -1 to train by num_train_epochs (got 0)"),
    "negative max_steps": (edit("max_steps: 3", "max_steps: -5"), 13, "training.max_steps: must be a positive number of optimizer steps"),
    "zero logging steps": (edit("max_steps: 3", "max_steps: 3\n  logging_steps: 0"), 14, "training.logging_steps: must be greater than 0 (got 0)"),
    "negative save steps": (edit("max_steps: 3", "max_steps: 3\n  save_steps: -1"), 14, "training.save_steps: must be greater than 0 (got -1)"),
    "zero save_total_limit": (edit("max_steps: 3", "max_steps: 3\n  save_total_limit: 0"), 14, "training.save_total_limit: must be at least 1 (got 0)"),
    "negative weight decay": (edit("max_steps: 3", "max_steps: 3\n  weight_decay: -0.1"), 14, "training.weight_decay: must be at least 0 (got -0.1)"),
    "negative max_grad_norm": (edit("max_steps: 3", "max_steps: 3\n  max_grad_norm: -1.0"), 14, "training.max_grad_norm: must be at least 0 (got -1.0)"),
    "zero adam epsilon": (edit("max_steps: 3", "max_steps: 3\n  adam_epsilon: 0"), 14, "training.adam_epsilon: must be greater than 0 (got 0)"),
    "adam beta outside [0, 1)": (edit("max_steps: 3", "max_steps: 3\n  adam_beta1: 1.5"), 14, "training.adam_beta1: must be less than 1 (got 1.5)"),
    "label smoothing outside [0, 1)": (edit("max_steps: 3", "max_steps: 3\n  label_smoothing_factor: -0.1"), 14, "training.label_smoothing_factor: must be at least 0 (got -0.1)"),
    "negative warmup": (edit("max_steps: 3", "max_steps: 3\n  warmup_steps: -1"), 14, "training.warmup_steps: must be at least 0 (got -1)"),
    "negative dataloader workers": (edit("max_steps: 3", "max_steps: 3\n  dataloader_num_workers: -1"), 14, "training.dataloader_num_workers: must be at least 0 (got -1)"),
    "eval_steps without a steps eval strategy": (edit("max_steps: 3", "max_steps: 3\n  eval_steps: 2"), 14, "training.eval_steps: only used with eval_strategy: steps, but eval_strategy is 'epoch' (the default)"),
    "save_steps with save_strategy no": (edit("max_steps: 3", "max_steps: 3\n  save_strategy: 'no'\n  save_steps: 2"), 15, "training.save_steps: only used with save_strategy: steps, but save_strategy is 'no' (as written)"),
    "logging_steps with logging_strategy epoch": (edit("max_steps: 3", "max_steps: 3\n  logging_strategy: epoch\n  logging_steps: 2"), 15, "training.logging_steps: only used with logging_strategy: steps"),
    "negative seed": (edit("task: causal-lm\n", "task: causal-lm\nseed: -1\n"), 2, "seed: Input should be greater than or equal to 0"),
    "block size too small": (edit("block_size: 32", "block_size: -32"), 9, "data.block_size: Input should be greater than or equal to 8"),
    "zero validation share": (edit("validation_split: 0.1", "validation_split: 0"), 8, "data.validation_split: Input should be greater than 0"),
    "zero train samples": (edit("block_size: 32", "block_size: 32\n  max_train_samples: 0"), 10, "data.max_train_samples: Input should be greater than or equal to 1"),
    "unknown data encoding": (edit("block_size: 32", "block_size: 32\n  encoding: klingon"), 10, "data.encoding: unknown text encoding 'klingon'"),
    "tokenizer vocabulary too small": (edit("vocab_size: 300", "vocab_size: 10"), 4, "model.train_tokenizer.vocab_size: Input should be greater than or equal to 256"),
    "lora rank zero": (GOOD + "peft: {r: 0}\n", 14, "peft.r: Input should be greater than or equal to 1"),
    "lora dropout outside [0, 1)": (GOOD + "peft: {dropout: 1.5}\n", 14, "peft.dropout: Input should be less than 1"),
    "generation top_p above 1": (GOOD + "generation: {top_p: 1.5}\n", 14, "generation.top_p: Input should be less than or equal to 1"),
    "generation temperature zero": (GOOD + "generation: {temperature: 0}\n", 14, "generation.temperature: Input should be greater than 0"),
    "model flag not a boolean": (edit("  init: scratch\n", "  init: scratch\n  trust_remote_code: 'yes'\n"), 4, "model.trust_remote_code: Input should be a valid boolean"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_recipe_exits_2_naming_key_and_line(name, recipe_dir, cli):
    text, line, expected = MALFORMED[name]
    path = write_recipe(recipe_dir, text)
    result = cli("finetune", path, "--check")
    assert result.exit_code == 2, result
    assert expected in result.stderr
    if line:
        assert f"recipe.yaml:{line}:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (recipe_dir / "out").exists()


def test_warmup_longer_than_training_is_a_warning_not_an_error(recipe_dir, cli):
    # A smoke run (--set training.max_steps=8 on a recipe with warmup 10) is what the Trainer runs as written.
    path = write_recipe(recipe_dir, edit("max_steps: 3", "max_steps: 3\n  warmup_steps: 10"))
    result = cli("finetune", path, "--check", "--set", "training.max_steps=8")
    assert result.exit_code == 0, result
    assert result.stderr.startswith("hftk: warning: ")
    assert ("recipe.yaml:14: training.warmup_steps: 10 warmup steps but training stops after max_steps=8: "
            "the learning rate rises to 8/10 of its peak") in result.stderr
    assert check_run(path, ["training.warmup_steps=2"]).warnings == []


def test_all_problems_reported_at_once(recipe_dir):
    text = GOOD.replace("task: causal-lm\n", "task: causal-lm\nmodle: {}\n").replace("learning_rate", "learnig_rate")
    text = text.replace("train: corpus.txt", "train: nothere.txt")
    with pytest.raises(RecipeError) as caught:
        load_recipe(write_recipe(recipe_dir, text))
    assert len(caught.value.problems) == 3
    lines = [int(p.split(":")[1]) for p in caught.value.problems]
    assert lines == sorted(lines)


def test_set_overrides_apply_and_are_validated(recipe_dir):
    path = write_recipe(recipe_dir, GOOD)
    recipe = load_recipe(path, ["training.learning_rate=3e-4", "data.block_size=16", "model.config.n_layer=2"])
    assert recipe.training["learning_rate"] == 3e-4
    assert recipe.data.block_size == 16
    assert recipe.model.config["n_layer"] == 2
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, ["training.max_step=5"])
    assert "--set training.max_step=5: training.max_step: unknown TrainingArguments key (did you mean 'max_steps'?)" in str(caught.value)
    with pytest.raises(RecipeError, match="expected dotted.key=value"):
        load_recipe(path, ["training.max_steps"])


def test_training_keys_transformers_also_takes_as_booleans(recipe_dir, cli):
    for assignment in ("training.fsdp=true", "training.resume_from_checkpoint=false"):
        result = cli("finetune", write_recipe(recipe_dir, GOOD), "--check", "--set", assignment)
        assert result.exit_code == 0, (assignment, result)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_deepspeed_without_its_package_is_a_user_error(recipe_dir, cli):
    text = edit("max_steps: 3", "max_steps: 3\n  deepspeed: corpus.txt")
    result = cli("finetune", write_recipe(recipe_dir, text), "--check")
    assert result.exit_code == 2, result
    assert "recipe.yaml:14: training.deepspeed: needs the deepspeed package: pip install deepspeed" in result.stderr


def test_refused_training_keys_say_true_things_about_this_transformers():
    """Keys called removed are gone from TrainingArguments; the others exist (and would be accepted)."""
    import dataclasses

    from transformers import Seq2SeqTrainingArguments

    from hf_toolkit.recipe.environment import REFUSED_TRAINING_KEYS

    fields = {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments)}
    for key, message in REFUSED_TRAINING_KEYS.items():
        assert (key in fields) != message.startswith("a transformers 4 key that transformers 5 removed"), key


def test_set_can_add_a_new_section(recipe_dir):
    recipe = load_recipe(write_recipe(recipe_dir, GOOD), ["generation.max_new_tokens=7"])
    assert recipe.generation.max_new_tokens == 7


def test_unreachable_hub_model_fails_fast_with_local_dir_hint(recipe_dir, cli):
    path = write_recipe(recipe_dir, edit("  init: scratch\n", "  init: scratch\n  name_or_path: someone/not-cached-model\n"))
    result = cli("finetune", path, "--check")
    assert result.exit_code == 2
    assert "model.name_or_path: cannot load model 'someone/not-cached-model'" in result.stderr
    assert "hub is unreachable" in result.stderr and "local directory" in result.stderr


def test_pkg_and_env_paths(monkeypatch, tmp_path):
    assert resolve_path("pkg://hf_toolkit/recipe/schema.py") == REPO / "hf_toolkit" / "recipe" / "schema.py"
    monkeypatch.setenv("HFTK_TEST_DIR", str(tmp_path))
    assert resolve_path("${HFTK_TEST_DIR}/x.txt") == tmp_path / "x.txt"
    with pytest.raises(ValueError, match="package 'no_such_pkg' is not installed"):
        resolve_path("pkg://no_such_pkg/x")


def test_task_not_in_the_table_is_a_user_error(recipe_dir, cli):
    from hf_toolkit import tasks

    table = dict(tasks.TASKS)
    del tasks.TASKS["causal-lm"]
    try:
        result = cli("finetune", write_recipe(recipe_dir, GOOD))
    finally:  # the table back in its order (monkeypatch.delitem would put the task back last)
        tasks.TASKS.clear()
        tasks.TASKS.update(table)
    assert result.exit_code == 2
    assert "recipe.yaml:1: task: Input should be 'masked-lm'," in result.stderr and "(got 'causal-lm')" in result.stderr


def test_every_shipped_recipe_validates(cli, monkeypatch):
    monkeypatch.chdir(REPO)
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert recipes, "recipes/ is empty"
    for recipe in recipes:
        text = recipe.read_text()
        if "../shared/data" in text and not (REPO.parent / "shared" / "data").exists():
            continue
        # Hub recipes name models and datasets this machine cannot download: they must still
        # be valid except for hub access.
        # Everything `hftk finetune --check` checks: schema, task options, model config, training arguments.
        # Hub recipes may only fail on hub access; a recipe that builds on another recipe's run
        # (./runs/...) only on that run not existing yet.
        try:
            check_run(recipe, overwrite=True)  # a run a developer trained already may sit in runs/
        except RecipeError as error:
            for problem in error.problems:
                assert "hub is unreachable" in problem or "'./runs/" in problem and "does not exist" in problem, (
                    f"{recipe.name}: {error}"
                )
        header = text.splitlines()[0]
        assert header.startswith("#"), f"{recipe.name} must open with a comment"
        assert f"hftk finetune recipes/{recipe.name}" in text, f"{recipe.name} must show its command"
        assert "--set" in text, f"{recipe.name} must show an override example"


def test_task_checks_name_file_and_line(recipe_dir, cli):
    text = (
        "task: masked-lm\nmodel:\n  init: scratch\n  train_tokenizer: {vocab_size: 300}\n"
        "  config: {model_type: bert}\ndata:\n  train: corpus.txt\n  max_length: 32\n"
    )
    result = cli("finetune", write_recipe(recipe_dir, text))
    assert result.exit_code == 2, result
    assert "recipe.yaml:8: data.max_length: truncates each line with data.line_by_line" in result.stderr


def test_check_reports_every_pre_load_problem_at_once(recipe_dir, cli):
    """--check runs what finetune runs before loading data: task options, model config, training, generation."""
    text = (
        "task: masked-lm\nmodel:\n  init: scratch\n  train_tokenizer: {vocab_size: 300}\n"
        "  config: {model_type: bert, num_hidden_layers: 2, hiden_size: 32}\ndata:\n  train: corpus.txt\n  max_length: 32\n"
        "training:\n  eval_strategy: epoch\n"
    )
    result = cli("finetune", write_recipe(recipe_dir, text), "--check")
    assert result.exit_code == 2, result
    assert "3 problems" in result.stderr
    assert "recipe.yaml:8: data.max_length: truncates each line" in result.stderr
    assert "recipe.yaml:5: model.config.hiden_size: not a setting of BertConfig (did you mean 'hidden_size'?)" in result.stderr
    assert "recipe.yaml:10: training.eval_strategy: 'epoch' needs validation data" in result.stderr


def test_yaml_no_is_the_string_hugging_face_docs_mean(recipe_dir, cli):
    """YAML 1.1 reads an unquoted `no` as false; recipes follow YAML 1.2 (only true/false are booleans)."""
    text = edit("max_steps: 3", "max_steps: 3\n  save_strategy: no")
    result = cli("finetune", write_recipe(recipe_dir, text), "--check", "--set", "training.eval_strategy=no")
    assert result.exit_code == 0, result
    recipe = load_recipe(recipe_dir / "recipe.yaml", ["training.eval_strategy=no"])
    assert recipe.training["save_strategy"] == "no" and recipe.training["eval_strategy"] == "no"
    with pytest.raises(RecipeError, match=r"generation.do_sample: Input should be a valid boolean \(got 'yes'\)"):
        load_recipe(recipe_dir / "recipe.yaml", ["generation.do_sample=yes"])


def test_set_value_that_is_not_yaml_is_an_error_not_a_string(recipe_dir):
    with pytest.raises(RecipeError, match=r"--set training.learning_rate=\[3e-5: the value is not valid YAML .*quote it"):
        load_recipe(write_recipe(recipe_dir, GOOD), ["training.learning_rate=[3e-5"])


def test_a_directory_for_a_recipe_says_so(recipe_dir, cli):
    result = cli("finetune", recipe_dir)
    assert result.exit_code == 2
    assert "is a directory; give the path to one .yaml recipe in it" in result.stderr


def test_problems_are_records_located_by_key_path(recipe_dir):
    from hf_toolkit.errors import Problem

    text = "task: masked-lm\nmodel:\n  init: scratch\n  train_tokenizer: {vocab_size: 300}\n  config: {model_type: bert}\ndata:\n  train: corpus.txt\n  max_length: 32\n"
    with pytest.raises(RecipeError) as caught:
        load_recipe(write_recipe(recipe_dir, text))
    [record] = caught.value.records
    assert isinstance(record, Problem) and record.key == ("data", "max_length") and record.where.endswith("recipe.yaml:8")
    # A message that names another key first is still located by the record's own key path.
    assert record.message.startswith("truncates each line with data.line_by_line")


def test_saved_recipe_holds_the_tasks_real_defaults():
    from hf_toolkit.recipe.checks import validate_recipe

    recipe = validate_recipe({"task": "question-answering", "model": {"name_or_path": "./m"}, "data": {"train": "t.jsonl"}})
    dumped = recipe.dump()["data"]
    assert (dumped["max_length"], dumped["doc_stride"], dumped["n_best"], dumped["version_2"]) == (384, 128, 20, False)
    assert validate_recipe(recipe.dump()).dump() == recipe.dump(), "a saved recipe reads back to itself"


def test_log_handler_is_added_once(recipe_dir, cli):
    import logging

    for _ in range(3):
        cli("finetune", write_recipe(recipe_dir, GOOD), "--check")
        cli("finetune", recipe_dir / "missing.yaml")
    from hf_toolkit.core.console import setup

    setup(models=False)
    setup(models=False)
    assert sum(getattr(h, "hftk", False) for h in logging.getLogger("hftk").handlers) == 1
