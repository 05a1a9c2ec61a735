"""Recipe YAML: parsing with a line number for every key path, and ``--set`` overrides.

Two departures from PyYAML's YAML 1.1, both toward what people write (and YAML 1.2 reads):
``2e-5`` is a float, not a string; and only ``true``/``false`` are booleans, so the
``save_strategy: no`` of Hugging Face's own docs stays the string ``no`` (as do yes, on, off).
Duplicate keys, which PyYAML silently lets the last one win, are errors.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from hf_toolkit.errors import Problem, RecipeError

KeyPath = tuple[str, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2's floats and booleans (see the module docstring)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_value(text: str) -> Any:
    """One YAML value read the way recipes are read."""
    return yaml.load(text, Loader=_Loader)


def parse_yaml(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML; return the data and a map from key path to 1-based line number."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise RecipeError([f"{where}: not valid YAML: {getattr(error, 'problem', error)}"], source) from None
    if node is None:
        return {}, {}
    lines: dict[KeyPath, int] = {}
    problems: list[Problem] = []

    def walk(n: yaml.Node, path: KeyPath) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in n.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    problems.append(Problem(path + (key,), f"duplicate key (first set on line {seen[key]}); keep one", f"{source}:{line}"))
                seen[key] = line
                lines[path + (key,)] = line
                walk(value_node, path + (key,))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[path + (str(i),)] = item.start_mark.line + 1
                walk(item, path + (str(i),))

    walk(node, ())
    if problems:
        raise RecipeError(problems, source)
    return _Loader(text).get_single_data(), lines


def apply_override(data: dict[str, Any], assignment: str) -> KeyPath:
    """Apply one ``dotted.key=value`` (value parsed as YAML) in place; return the key path."""
    key, sep, raw = assignment.partition("=")
    path = tuple(key.strip().split("."))
    if not sep or not all(path):
        raise RecipeError([f"--set {assignment}: expected dotted.key=value, e.g. training.learning_rate=3e-5"], "--set")
    try:
        value = load_value(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise RecipeError(
            [f"--set {assignment}: the value is not valid YAML ({getattr(error, 'problem', error)}); "
             f"quote it to mean text: --set '{key}=\"{raw}\"'"], "--set"
        ) from None
    node = data
    for part in path[:-1]:
        child = node.get(part) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value
    return path
