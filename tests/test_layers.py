"""The package layering (README "Architecture"), checked from the source so it stays true.

Each top folder is one layer and imports only from the layers below it: a new import that points up or
sideways fails here, with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("schemas", "engine", "client", "jobscore", "summarizer", "worker", "compress", "ops", "app", "bench")

# package → the packages of ours it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "engine": {"schemas"},
    # The publishers' library (its own distribution): schemas only.
    "client": {"schemas"},
    "jobscore": {"schemas", "client"},
    # The services reach Kafka through the base (jobscore.kafka), never the client library or the tools.
    "summarizer": {"schemas", "engine", "jobscore"},
    "worker": {"schemas", "engine", "jobscore"},
    "compress": {"schemas", "engine", "jobscore", "summarizer"},
    "ops": {"schemas", "client", "jobscore"},
    "app": {"schemas", "engine", "client", "jobscore", "summarizer", "worker", "compress", "ops", "bench"},
    "bench": {"schemas", "engine", "client", "jobscore", "summarizer", "worker", "compress", "ops"},
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in a file, including ones inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def edges() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for pkg in OURS:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            for line, target in imports_of(f):
                if target in OURS and target != pkg:
                    found.setdefault((pkg, target), []).append(f"{f.relative_to(ROOT)}:{line}")
    return found


def test_every_package_is_known() -> None:
    assert set(ALLOWED) == set(OURS)
    for pkg in OURS:
        init = ROOT / pkg / "__init__.py"
        assert init.exists(), f"{pkg}/ has no __init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "import" in doc.lower(), f"{pkg}/__init__.py must say what the package is and what it may import"


@pytest.mark.parametrize("pkg", OURS)
def test_imports_point_down(pkg: str) -> None:
    wrong = {f"{src} → {dst}": where for (src, dst), where in edges().items() if src == pkg and dst not in ALLOWED[pkg]}
    assert not wrong, f"{pkg}/ imports what its layer may not: {wrong}"


def test_no_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {p: set() for p in OURS}
    for src, dst in edges():
        graph[src].add(dst)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, f"import cycle: {' → '.join([*path, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for p in OURS:
        if p not in state:
            visit(p, [p])


def test_no_path_hacks_or_private_imports_across_packages() -> None:
    """No `sys.path` edits or importlib plugin loading in the product, and no `_private` names imported
    from another package."""
    for pkg in OURS:
        for f in (ROOT / pkg).rglob("*.py"):
            text = f.read_text()
            assert "sys.path" not in text, f"{f.relative_to(ROOT)} edits sys.path"
            assert "importlib.import_module" not in text, f"{f.relative_to(ROOT)} loads modules by name"
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    top = node.module.split(".")[0]
                    if top in OURS and top != pkg:
                        private = [a.name for a in node.names if a.name.startswith("_")]
                        assert not private, f"{f.relative_to(ROOT)}:{node.lineno} imports private {private}"


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def module_graph() -> dict[str, set[str]]:
    """module → the modules of ours it imports (anywhere in the file, function bodies included)."""
    files = {_module_of(f): f for pkg in OURS for f in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, f in files.items():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from pkg import mod` names a module too when pkg/mod.py exists.
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                if n in files and n != mod and not mod.startswith(f"{n}."):
                    graph[mod].add(n)
    return graph


def test_no_import_cycle_between_modules() -> None:
    # jobscore/kafka.py ⇄ jobscore/topics.py was one (issue 27): kafka's ensure_topics imported the plan, the
    # plan's admin client imported kafka back through an alias inside try/except ImportError.
    graph = module_graph()
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" → ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles between modules:\n" + "\n".join(cycles)


def test_no_test_module_imports_another_test_modules_helpers() -> None:
    # Shared helpers live in tests/helpers.py (and fixtures in conftest.py): a test module importing another one
    # runs that module's import side effects and ties the two files' scheduling together.
    wrong = []
    for f in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                last = node.module.rsplit(".", 1)[-1]
                if node.module.startswith("tests.") and last.startswith("test_"):
                    wrong.append(f"{f.relative_to(ROOT)}:{node.lineno} imports {node.module}")
    assert not wrong, "\n".join(wrong)


# The rooms `make test` type-checks strictly (pyproject.toml [tool.mypy], scripts/test.sh).
TYPE_CHECKED = ("schemas", "client", "jobscore", "worker")


def test_type_checked_rooms_are_the_configured_ones_and_every_ignore_says_why() -> None:
    import re
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True and sorted(config["files"]) == sorted(TYPE_CHECKED)
    assert '"$VENV/bin/mypy" || exit 1' in (ROOT / "scripts" / "test.sh").read_text()
    bare = []
    for pkg in TYPE_CHECKED:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            for n, line in enumerate(f.read_text().splitlines(), 1):
                # `# type: ignore[code]  # why`: a code, and a reason a reader can check.
                if "type: ignore" in line and not re.search(r"type: ignore\[[a-z-]+(, ?[a-z-]+)*\]\s+#\s*\S", line):
                    bare.append(f"{f.relative_to(ROOT)}:{n}")
    assert not bare, f"type: ignore without an error code and a reason: {bare}"
