"""Every ``bioimgzoo <command>`` that a message or docstring names is a command that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click

from bioimgzoo.cli import main

PACKAGE = Path(__file__).resolve().parents[2] / "bioimgzoo"
# "bioimgzoo pull", "bioimgzoo cache clear": a command word right after the program name
_COMMAND = re.compile(r"\bbioimgzoo ((?:[a-z][a-z0-9]*(?:-[a-z0-9]+)*)(?: [a-z][a-z0-9-]*)?)")
# prose that follows the name without being a command ("bioimgzoo runs ...", "bioimgzoo itself")
_PROSE = {"runs", "run", "can", "cannot", "does", "do", "is", "itself", "first", "for", "on", "or", "reads",
          "read", "raises", "ships", "tests", "test-suite", "training", "user", "writes", "module", "package",
          "and", "with", "to", "in", "the", "as", "at", "from", "never", "has", "will", "keeps", "uses", "makes",
          "checks", "needs", "knows", "opens", "itself", "was", "by", "only", "when", "code", "cache's", "demo's",
          "predicts", "gives", "exports", "treats", "loads", "takes", "names", "sees", "expects", "own", "api",
          "disagree", "made", "of", "installs", "repaired", "dropped", "runs", "then", "beyond", "installed"}


def _commands() -> dict[str, click.Command]:
    found = {}

    def walk(group: click.Group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            found[prefix + name] = cmd
            if isinstance(cmd, click.Group):
                walk(cmd, prefix + name + " ")

    walk(main, "")
    return found


def _strings(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_named_commands_exist():
    commands = _commands()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, text in _strings(path):
            for match in _COMMAND.finditer(text):
                words = match.group(1).split()
                if words[0] in _PROSE:
                    continue
                if words[0] not in commands:
                    missing.append(f"{path.relative_to(PACKAGE.parent)}:{line}: bioimgzoo {words[0]}")
                elif len(words) > 1 and isinstance(commands[words[0]], click.Group) \
                        and " ".join(words) not in commands and not words[1].startswith("-"):
                    missing.append(f"{path.relative_to(PACKAGE.parent)}:{line}: bioimgzoo {' '.join(words)}")
    assert not missing, "messages name commands that do not exist:\n" + "\n".join(missing)


def test_the_checker_would_see_a_missing_command():
    assert _COMMAND.search("run `bioimgzoo frobnicate MODEL`").group(1).split()[0] not in _commands()
    assert "validate" in _commands() and "publish" in _commands()
