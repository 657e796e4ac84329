"""The documentation keeps up with the code (as sqlite-utils' tests/test_docs.py): every command and every option
of the command line is in docs/cli.md, every command and option has a help text, README.md is a short front page
whose links lead somewhere, and it still holds the two commands that .ci/run reads.

docs/cli.md has one level-2 section per command (``## astrodask COMMAND``) and sections for the options several
commands share (``## Cluster options``, ``## Job flags``). A command's option must be in its own section or in a
section its section links to (``[cluster options](#cluster-options)``; ``run`` links to convert, train and predict,
whose options it takes). A new command is one new section; a new option, one line in its command's section.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

from astrodask.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CLI_MD = DOCS / "cli.md"
MAX_README_LINES = 200
CI_COMMANDS = {  # marker -> the command .ci/run reads from the line two below it (after the ```bash line)
    "setup-command": 'pip install -e ".[test]"',
    "test-command": "python -m pytest -q -n 3 --dist loadfile",
}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _flags(params) -> list[str]:
    """Every flag of click parameters (``--cuts`` and ``--no-cuts``, ``--quiet`` and ``-q``), --help aside."""
    out = []
    for p in params:
        if isinstance(p, click.Option):
            out += [f for f in [*p.opts, *p.secondary_opts] if f not in ("--help", "-h")]
    return out


def _sections(text: str) -> dict[str, str]:
    """Level-2 heading -> the text under it (its subsections included)."""
    parts = re.split(r"^## +(.+?) *$", text, flags=re.M)
    return {title: body for title, body in zip(parts[1::2], parts[2::2])}


def _mentions(text: str, flag: str) -> bool:
    """``flag`` in ``text`` as a whole flag: ``--seed`` is not found in ``--seeds`` or ``--seed-file``."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces -> hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


@pytest.fixture(scope="module")
def cli_md() -> str:
    return CLI_MD.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_is_documented_in_cli_md(name, cli_md):
    assert f"## astrodask {name}\n" in cli_md or f"`astrodask {name}`" in cli_md, (
        f"docs/cli.md has no section for `astrodask {name}`: add a heading '## astrodask {name}'")


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_option_is_in_cli_md(name, cli_md):
    missing = [f for f in _flags(cli.commands[name].params) if not _mentions(cli_md, f)]
    assert not missing, f"docs/cli.md does not mention these options of `astrodask {name}`: {missing}"


def test_the_group_options_are_in_cli_md(cli_md):
    missing = [f for f in _flags(cli.params) if not _mentions(cli_md, f)]
    assert not missing, f"docs/cli.md does not mention: {missing}"


def _linked(sections: dict[str, str], title: str) -> list[str]:
    """The titles of the level-2 sections that section ``title`` links to (``(#cluster-options)``)."""
    return [t for t in sections if t != title and f"(#{_anchor(t)})" in sections[title]]


def _listed(text: str) -> set[str]:
    """The options a section lists, one a line: ``- `--flag ...` ...``."""
    return {f for line in re.findall(r"^[-*] +(`-.*)$", text, flags=re.M) for f in re.findall(r"`(-[-\w]+)", line)}


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_option_is_in_its_command_section(name, cli_md):
    sections = _sections(cli_md)
    title = f"astrodask {name}"
    assert title in sections, f"docs/cli.md has no section '## {title}'"
    places = [sections[title], *(sections[t] for t in _linked(sections, title))]
    missing = [f for f in _flags(cli.commands[name].params) if not any(_mentions(t, f) for t in places)]
    assert not missing, (f"these options of `astrodask {name}` are neither in its section of docs/cli.md nor in a "
                         f"section it links to ({_linked(sections, title)}): {missing}")


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_a_shared_section_lists_only_options_the_command_takes(name, cli_md):
    """A command that links to ``## Cluster options`` takes every option listed there."""
    sections = _sections(cli_md)
    flags = set(_flags(cli.commands[name].params))
    for t in _linked(sections, f"astrodask {name}"):
        if t.startswith("astrodask "):
            continue  # another command's section (run takes convert's options, not its arguments)
        extra = _listed(sections[t]) - flags
        assert not extra, f"`astrodask {name}` links to '## {t}', which lists options it does not take: {extra}"


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_and_option_has_a_help_text(name):
    cmd = cli.commands[name]
    assert (cmd.help or "").strip(), f"`astrodask {name}` has no help text (its docstring)"
    assert (cmd.get_short_help_str() or "").strip()
    bare = [p.name for p in cmd.params if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert not bare, f"options of `astrodask {name}` without a help text (a docstring under the field): {bare}"


# ------------------------------------------------------------------------------------------------ README


def test_readme_is_a_front_page():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n < MAX_README_LINES, f"README.md has {n} lines; move the detail into docs/ (limit {MAX_README_LINES})"


@pytest.mark.parametrize("marker", sorted(CI_COMMANDS))
def test_readme_holds_the_commands_ci_runs(marker):
    """As .ci/run reads them: the line ``<!-- NAME -->``, a ```bash line, then the command."""
    lines = README.read_text(encoding="utf-8").splitlines()
    at = [i for i, line in enumerate(lines) if line == f"<!-- {marker} -->"]
    assert len(at) == 1, f"README.md must have exactly one line '<!-- {marker} -->'"
    i = at[0]
    assert lines[i + 1 : i + 4] == ["```bash", CI_COMMANDS[marker], "```"], lines[i + 1 : i + 4]


def test_the_ci_commands_come_first():
    """The first two code blocks of README.md are the set-up and the test command."""
    lines = README.read_text(encoding="utf-8").splitlines()
    opening, inside = [], False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            if not inside:
                opening.append(i)
            inside = not inside
    marks = [lines.index(f"<!-- {m} -->") + 1 for m in ("setup-command", "test-command")]
    assert opening[:2] == marks, "README.md's first two code blocks must be the set-up and the test command"


def _relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)  # links in code are not links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


@pytest.mark.parametrize("doc", ["README.md", *sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))])
def test_relative_links_lead_to_files_that_exist(doc):
    path = ROOT / doc
    broken = [t for t in _relative_links(path) if not (path.parent / t.split("#")[0]).exists()]
    assert not broken, f"{doc} links to files that do not exist: {broken}"


def test_readme_links_every_page_of_docs():
    linked = {(ROOT / t.split("#")[0]).resolve() for t in _relative_links(README)}
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link to docs/{unlinked}"


@pytest.mark.parametrize("doc", ["README.md", *sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))])
def test_python_examples_are_python(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    for block in re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        ast.parse(block)  # a SyntaxError names the line
