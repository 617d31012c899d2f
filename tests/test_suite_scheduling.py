"""The suite's own scheduling with two test processes (tests/conftest.py `pytest_xdist_make_scheduler`).

Each file runs whole in one process (its module fixtures are built once), and the files that compile the
shipped scorer run in one process together (the second loads the first's compile). xdist's own mark-based
grouping silently stopped working under pytest 9.2; this test runs the suite's scheduler for real on a few
cheap tests and reads back which process ran each one.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.conftest import group_of

ROOT = Path(__file__).resolve().parent.parent
SELECTION = [
    "tests/test_layers.py",
    "tests/test_schemas.py",
    "tests/test_cli.py::TestHelp::test_help_lists_every_subcommand",
    "tests/test_cli.py::TestHelp::test_flag_overrides_environment",
    "tests/test_scorer.py::test_manifest_names_base_version_and_command",
]
_LINE = re.compile(r"^\[(gw\d+)\] \[\s*\d+%\] (PASSED|FAILED|SKIPPED|ERROR) (tests/[^:]+)::")


def test_group_of_maps_files_to_their_group() -> None:
    assert group_of("test_cli.py") == group_of("test_promises.py") == group_of("test_scorer.py") == "scorer"
    assert group_of("faults/test_poison.py") == "faults/test_poison.py"


def test_two_processes_run_each_file_whole_and_the_scorer_files_together() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "-v", *SELECTION],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    ran_in: dict[str, set[str]] = defaultdict(set)
    for line in out.stdout.splitlines():
        if m := _LINE.match(line):
            ran_in[m.group(3)].add(m.group(1))
    assert set(ran_in) == {s.split("::")[0] for s in SELECTION}, out.stdout[-4000:]
    split = {f: ws for f, ws in ran_in.items() if len(ws) > 1}
    assert not split, f"files split across test processes: {split}"
    # The two scorer files share one process, and the work was spread over both.
    assert ran_in["tests/test_cli.py"] == ran_in["tests/test_scorer.py"], dict(ran_in)
    assert set().union(*ran_in.values()) == {"gw0", "gw1"}, dict(ran_in)
