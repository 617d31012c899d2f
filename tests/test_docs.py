"""The documentation (README.md and docs/*.md) stays true to the code and to itself, checked from the text.

- Every `jobscore …` command shown in a ```bash / ```sh / ```shell / ```console block (and every `$ jobscore …`
  line of any other block) still parses with the real argument parser (`app.cli.build_parser`, in-process), and
  `jobscore <subcommand> --help` exits 0 for each subcommand shown. Line continuations (`\\`), `$ ` prompts,
  `NAME=value` prefixes and `# comments` are handled; a line with a placeholder (`<id>`, `...`, `…`) is skipped —
  as is, by the same rule, one with a `<`/`>` redirection — and a shell pipeline is checked up to its first `|`,
  `&&`, `||` or `;`.
- Every relative link of README.md, docs/*.md and tests/README.md points to a file or folder that exists, and a
  `#heading` in it to a heading of that page (GitHub's anchors).
- Every docs/*.md page is linked from README.md, so none is an orphan.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from app.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
LINKED_PAGES = [*PAGES, ROOT / "tests" / "README.md"]

SHELL_LANGS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(?P<fence>```+|~~~+)(?P<lang>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.S | re.M)
ENV_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"[<>]|\.\.\.|…")
SHELL_OPERATORS = {"|", "||", "&&", ";", "&"}
# [text](target) and ![alt](target), an optional "title" after the target; the text may span lines.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    line: str  # the command as shown (continuations joined, prompt and comment included)
    argv: tuple[str, ...]  # the arguments after `jobscore`


def code_blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, line number of the first body line, body) of every fenced block."""
    return [
        (m.group("lang").strip().split(" ")[0].lower(), text.count("\n", 0, m.start("body")) + 1, m.group("body"))
        for m in FENCE.finditer(text)
    ]


def logical_lines(body: str, first: int) -> list[tuple[int, str]]:
    """(line number, text) with backslash continuations joined onto the line they start."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = first
    for n, line in enumerate(body.split("\n"), first):
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        out.append((start, " ".join([*pending, line])))
        pending = []
    if pending:
        out.append((start, " ".join(pending)))
    return out


def commands_in(path: Path) -> tuple[list[Command], list[str]]:
    """The `jobscore` commands shown in a page's shell blocks, and the lines skipped as placeholders."""
    found: list[Command] = []
    skipped: list[str] = []
    for lang, first, body in code_blocks(path.read_text()):
        for n, raw in logical_lines(body, first):
            line = raw.strip()
            prompted = line.startswith("$ ")
            if prompted:
                line = line[2:].strip()
            elif lang not in SHELL_LANGS:
                continue  # output, JSON, Python…: only `$ ` lines are commands there
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as e:
                pytest.fail(f"{rel(path)}:{n}: not a shell line ({e}): {raw}")
            while tokens and ENV_PREFIX.match(tokens[0]):
                tokens.pop(0)
            if not tokens or Path(tokens[0]).name != "jobscore":
                continue
            for i, tok in enumerate(tokens):
                if tok in SHELL_OPERATORS:
                    tokens = tokens[:i]
                    break
            where = f"{rel(path)}:{n}"
            if any(PLACEHOLDER.search(t) for t in tokens):
                skipped.append(f"{where}: {raw.strip()}")
                continue
            found.append(Command(where, raw.strip(), tuple(tokens[1:])))
    return found, skipped


def all_commands() -> tuple[list[Command], list[str]]:
    found: list[Command] = []
    skipped: list[str] = []
    for page in PAGES:
        f, s = commands_in(page)
        found += f
        skipped += s
    return found, skipped


COMMANDS, SKIPPED = all_commands()


@cache
def parser() -> argparse.ArgumentParser:
    return build_parser()


def subcommands() -> set[str]:
    actions = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1, "jobscore has one level of subcommands"
    return set(actions[0].choices)


def parse(argv: list[str]) -> tuple[int | str | None, str]:
    """Parse in-process; (exit code or None when it parsed, what argparse printed)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            parser().parse_args(argv)
    except SystemExit as e:
        return e.code, out.getvalue()
    return None, out.getvalue()


def test_the_pages_show_commands_to_check() -> None:
    # A broken extractor must not pass by finding nothing.
    assert len(COMMANDS) >= 20, f"only {len(COMMANDS)} `jobscore` commands found in README.md and docs/"
    assert {c.argv[0] for c in COMMANDS} >= {"worker", "summarizer", "ledger", "dlq", "score-backfill", "topics"}
    # What was skipped as a placeholder is printed with -rA / -s; it is not an error.
    print("skipped (placeholders):", *SKIPPED, sep="\n  ")


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command_parses(cmd: Command) -> None:
    assert cmd.argv, f"{cmd.where}: `jobscore` without a subcommand: {cmd.line}"
    if not cmd.argv[0].startswith("-"):
        assert cmd.argv[0] in subcommands(), f"{cmd.where}: no subcommand {cmd.argv[0]!r}: {cmd.line}"
    code, printed = parse(list(cmd.argv))
    assert code is None or (code == 0 and "--help" in cmd.argv), (
        f"{cmd.where}: `{cmd.line}` does not parse (exit {code}):\n{printed}"
    )


@pytest.mark.parametrize("sub", sorted({c.argv[0] for c in COMMANDS if c.argv and not c.argv[0].startswith("-")}))
def test_help_of_each_subcommand_shown_exits_zero(sub: str) -> None:
    code, printed = parse([sub, "--help"])
    assert code == 0, f"`jobscore {sub} --help` exited {code}:\n{printed}"
    assert f"jobscore {sub}" in printed, printed[:500]


def without_code(text: str) -> str:
    """The text with fenced blocks blanked (line numbers kept): links inside code are not links."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation (backticks, colons, parentheses…) dropped,
    spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for m in HEADING.finditer(without_code(path.read_text())):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def links(path: Path) -> list[tuple[int, str]]:
    text = without_code(path.read_text())
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(text)]


@pytest.mark.parametrize("page", LINKED_PAGES, ids=rel)
def test_relative_links_resolve(page: Path) -> None:
    found = links(page)
    assert found, f"{rel(page)} has no links at all: is the link pattern broken?"
    broken: list[str] = []
    for line, target in found:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: … — not ours to check offline
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{rel(page)}:{line}: {target} → no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{rel(page)}:{line}: {target} → {rel(dest)} has no heading #{anchor}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_readme() -> None:
    readme = ROOT / "README.md"
    linked = {(readme.parent / t.partition("#")[0]).resolve() for _, t in links(readme) if not t.startswith("#")}
    orphans = [rel(p) for p in DOCS if p.resolve() not in linked]
    assert DOCS, "docs/ has no pages"
    assert not orphans, f"docs pages README.md does not link: {orphans}"
