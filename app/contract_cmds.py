"""``jobscore contract``: render the wire contract (JSON Schema per message + AsyncAPI) from the code.

Loaded by `app.cli` through its plugin hook (`register(sub, add)`). Contacts nothing; see
ops/contract.py for what is generated and from where.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.commands import AddCommand, command_settings
from jobscore.settings import ToolSettings


def cmd_contract(ns: argparse.Namespace) -> int:
    from ops.contract import CONTRACT_DIR, drift, render, write

    command_settings(ns, ToolSettings)
    directory = Path(ns.dir) if ns.dir else CONTRACT_DIR
    if ns.write:
        for p in write(directory):
            print(p)
        return 0
    if ns.check:
        problems = drift(directory)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("the committed contract differs from the code: run `jobscore contract --write`", file=sys.stderr)
            return 1
        print(f"{directory}: up to date")
        return 0
    files = render()
    if ns.show not in files:
        print(f"error: no contract file {ns.show!r}; one of {sorted(files)}", file=sys.stderr)
        return 2
    sys.stdout.write(files[ns.show])
    return 0


def register(sub: argparse._SubParsersAction, add: AddCommand) -> None:  # type: ignore[type-arg]
    p = add(
        "contract",
        cmd_contract,
        "The language-neutral wire contract generated from schemas/: one JSON Schema per message "
        "(schemas/contract/<tag>.json) and an AsyncAPI 3 document for the topics (asyncapi.yaml). "
        "--write regenerates the committed files, --check exits 1 when they drifted from the code; "
        "otherwise prints one file (--show).",
        ToolSettings,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="Regenerate the files (and remove stale ones).")
    mode.add_argument("--check", action="store_true", help="Exit 1 if the committed files differ from the code.")
    p.add_argument("--show", default="asyncapi.yaml", help="File to print without --write/--check.")
    p.add_argument("--dir", default=None, help="Contract directory (default schemas/contract in the source tree).")
