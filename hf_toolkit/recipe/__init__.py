"""Recipes: one YAML file describes a run.

    task: causal-lm
    model: {name_or_path: gpt2}
    data: {train: corpus.txt, validation_split: 0.1}
    training: {output_dir: runs/gpt2, num_train_epochs: 1, learning_rate: 5e-5}

The package is split along the two passes a recipe goes through (:mod:`hf_toolkit.recipe.checks` runs
them, with each task's own ``data`` options):

- :mod:`.schema`: the sections as pydantic models; pass one, the shape (types, unknown keys,
  ranges, rules across keys). No I/O.
- :mod:`.yamlio`: YAML with line numbers per key path, and ``--set dotted.key=value`` overrides.
- :mod:`.problems`: problems as records (key path, message), located in the YAML by key path.
- :mod:`.environment`: pass two pieces that look outside the recipe (files, the hub,
  TrainingArguments keys and types).
- :mod:`.paths`: ``${VAR}``, ``~`` and ``pkg://package/sub/path`` references.

This ``__init__`` imports nothing, so a task module can import the schema without pulling in
the rest.
"""
