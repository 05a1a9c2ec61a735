"""README_zh.md keeps step with README.md: the same two setup commands verbatim, links both ways,
and every hftk command, option and shipped recipe named in one README named in the other."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]")
RECIPE = re.compile(r"\b([a-z0-9][a-z0-9-]*\.yaml)\b")


def readmes() -> tuple[str, str]:
    return (REPO / "README.md").read_text(encoding="utf-8"), (REPO / "README_zh.md").read_text(encoding="utf-8")


def setup_commands(text: str) -> list[str]:
    """The bash blocks of README.md's "The two commands" section."""
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, re.S)


def named(text: str) -> dict[str, set[str]]:
    from hf_toolkit.cli import app

    commands = {command.name or command.callback.__name__ for command in app.registered_commands}
    shipped = {path.name for path in (REPO / "recipes").glob("*.yaml")}
    return {
        "commands": {word for word in re.findall(r"\bhftk ([a-z]+)\b", text) if word in commands},
        "options": set(OPTION.findall(text)),
        "recipes": {name for name in RECIPE.findall(text) if name in shipped},
    }


def test_the_two_setup_commands_are_the_same_verbatim():
    english, chinese = readmes()
    commands = setup_commands(english)
    assert len(commands) == 2 and all(command.startswith("python3 -m venv .venv") for command in commands)
    for command in commands:
        assert f"```bash\n{command}\n```" in chinese


def test_the_readmes_link_to_each_other():
    english, chinese = readmes()
    assert "(README_zh.md)" in english.split("\n## ", 1)[0], "README.md links README_zh.md at its top"
    assert "(README.md)" in chinese.split("\n## ", 1)[0], "README_zh.md links back at its top"


def test_commands_options_and_recipes_named_in_one_readme_are_named_in_the_other():
    english, chinese = (named(text) for text in readmes())
    for kind in english:
        assert english[kind] - chinese[kind] == set(), f"{kind} in README.md but not in README_zh.md"
        assert chinese[kind] - english[kind] == set(), f"{kind} in README_zh.md but not in README.md"
    assert {"finetune", "generate", "predict", "eval", "serve", "chat"} <= english["commands"]
