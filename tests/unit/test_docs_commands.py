"""Every `opsq` command the docs name exists, with the options named after it: the README, CONTRIBUTING,
docs/*.md and deploy/*.md are walked for `opsq <words> ... --option` and each is resolved against the real
click tree (no command is run)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from workers.cli.main import cli, register

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "deploy").glob("*.md"))]
# `opsq` where a command starts (a line of a code block, a backtick, after `$`, `(`, `;`, `&&`, `|`, `=`, `"`),
# then words: stops at an option, an argument placeholder, a path or punctuation.
MENTION = re.compile(r"(?:^|[`($;|=\"]|&&)[ \t]*(?:\.venv/bin/)?opsq((?: [a-z][a-z-]*)+)", re.MULTILINE)
# The rest of one command: up to the end of the line, a backtick, a pipe, `;`, `&&`, a comment or a `)`.
COMMAND_END = re.compile(r"`|\||;|&&| #|\)|$", re.MULTILINE)
QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
LONG_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _mentions() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for match in MENTION.finditer(doc.read_text()):
            found.append((doc.relative_to(ROOT).as_posix(), match.group(1).strip()))
    return sorted(set(found))


def _option_mentions() -> list[tuple[str, str, str]]:
    """(doc, command words, a long option written after them in the same command), quoted text left out."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in MENTION.finditer(text):
            rest = text[match.end():]
            rest = QUOTED.sub("", rest[:COMMAND_END.search(rest).start()])  # type: ignore[union-attr]
            for option in LONG_OPTION.findall(rest):
                found.append((doc.relative_to(ROOT).as_posix(), match.group(1).strip(), option))
    return sorted(set(found))


def _resolve(words: list[str]) -> tuple[list[str], str | None]:
    """The longest command path the words name; the first word that is no command of a group, if any."""
    register()
    command: click.Command = cli
    path: list[str] = []
    for word in words:
        if not isinstance(command, click.Group):
            return path, None  # the rest are the command's arguments
        sub = command.commands.get(word)
        if sub is None:
            return path, word
        command, path = sub, [*path, word]
    if isinstance(command, click.Group) and command is not cli:
        return path, None
    return path, None


def test_the_docs_name_commands():
    assert len(_mentions()) > 50


@pytest.mark.parametrize(("doc", "mention"), _mentions())
def test_every_command_the_docs_name_exists(doc, mention):
    path, unknown = _resolve(mention.split())
    assert path, f"{doc}: `opsq {mention}` names no opsq command"
    command = cli
    for word in path:
        command = command.commands[word]  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        # A group followed by a word that is not one of its commands is a typo, not an argument.
        assert unknown is None, f"{doc}: `opsq {mention}`: {unknown!r} is no command of `opsq {' '.join(path)}`"


def test_the_docs_name_options():
    assert len(_option_mentions()) > 30


@pytest.mark.parametrize(("doc", "mention", "option"), _option_mentions())
def test_every_option_the_docs_name_exists(doc, mention, option):
    path, _ = _resolve(mention.split())
    command: click.Command = cli
    for word in path:
        command = command.commands[word]  # type: ignore[attr-defined]
    if command.context_settings.get("ignore_unknown_options"):
        return  # it passes what it does not know on (opsq worker: to `celery worker`)
    known = {"--help"} | {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    assert option in known, f"{doc}: `opsq {' '.join(path)}` has no option {option} (it has {sorted(known)})"
