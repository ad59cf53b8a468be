"""The README and docs/ cannot rot: every `i3d` command in their shell blocks names a real
subcommand and real options (a concrete example is parsed whole by the CLI's own parser; a
synopsis, with its `[--opt A|B]` notation, has each option looked up in the subcommand's), every
`python -m` module exists, and every relative link points at a file of the checkout."""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import shlex

import pytest

from i3d_cli.main import build_parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
SYNOPSIS = re.compile(r"[\[\]|]|\.\.\.")


def _commands(path: str) -> list:
    """(page:line, command text) of every `i3d` or `python -m` command in its bash blocks,
    continuation lines (a trailing backslash, or an indented synopsis line) joined."""
    out, block, start = [], None, 0
    lines = open(path).read().splitlines()
    for n, line in enumerate(lines, 1):
        if line.startswith("```"):
            block = line[3:].strip() if block is None else None
            continue
        if block not in ("bash", "sh", "console"):
            continue
        text = line.split("  # ")[0].rstrip()
        if out and out[-1][2] and (line.startswith(" ") or out[-1][1].endswith("\\")):
            where, prev, _ = out[-1]
            out[-1] = (where, prev.rstrip("\\").rstrip() + " " + text.strip(), True)
            continue
        found = re.search(r"(?:^|\s)(?:\.venv/bin/)?(i3d|python -m) ", text)
        if found:
            start = found.start(1) if found.group(1) == "i3d" else found.start()
            out.append((f"{os.path.relpath(path, REPO)}:{n}", text[start:].strip(), True))
        elif out:
            out[-1] = (*out[-1][:2], False)
    return [(w, t) for w, t, _ in out]


COMMANDS = [c for p in PAGES for c in _commands(p)]


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return parser, action.choices


def test_the_pages_show_commands():
    assert len(PAGES) >= 10 and len(COMMANDS) >= 25


@pytest.mark.parametrize("where,command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_documented_command_parses(where, command):
    if command.startswith("python -m"):
        module = command.split()[2]
        assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
        return
    parser, subs = _subparsers()
    words = shlex.split(command.replace("\\", " "))[1:]
    assert words and words[0] in subs, f"{where}: no subcommand {words[:1]}"
    sub = subs[words[0]]
    options = {o for a in sub._actions for o in a.option_strings}
    for w in words[1:]:
        if w.lstrip("[").startswith("--"):
            opt = re.split(r"[=\]|]", w.lstrip("["))[0]
            assert opt in options, f"{where}: `i3d {words[0]}` has no option {opt}"
    if not any(SYNOPSIS.search(w) for w in words):
        try:
            parser.parse_args(words)
        except SystemExit as e:  # argparse's way of refusing
            pytest.fail(f"{where}: `{command}` does not parse ({e})")


def test_relative_links_point_at_files():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)\)", open(page).read()):
            path = os.path.join(os.path.dirname(page), target)
            assert os.path.exists(path), f"{os.path.relpath(page, REPO)}: link to {target}"
