"""The architecture's checkable facts (docs/ARCHITECTURE.md "Layers" and "The store"):
no import circle in src, the SQLite store named only inside ``store/``, executors
independent of the store, SQL only in ``.sql`` files, ``Any`` only where data is the user's.

Run ``python tests/unit/test_architecture_facts.py`` for the counts and where they come from.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "oomguard"
#: the one module allowed to hold SQL text in Python: it loads the named queries
QUERY_LOADER = "store/queries.py"
#: at most this many lines of src may mention ``Any``
MAX_ANY_LINES = 60
_SQL = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|WITH|PRAGMA|SAVEPOINT|RELEASE|"
    r"REPLACE)\s+\S"
    r"|^\s*(BEGIN|COMMIT|ROLLBACK|VACUUM|ANALYZE)\b"
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every oomguard module ``module`` imports, anywhere in the file (functions and
    ``TYPE_CHECKING`` blocks included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _resolve(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield from _resolve(full if full in known else base, known)


def _resolve(name: str, known: dict[str, Path]) -> Iterator[str]:
    while name and name not in known:
        name = name.rpartition(".")[0]
    if name.startswith("oomguard"):
        yield name


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: set(_imported(m, p, known)) - {m} for m, p in known.items()}


def import_circles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def _rel(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def sqlite_store_named_outside_store() -> list[str]:
    return sorted(
        _rel(p)
        for p in SRC.rglob("*.py")
        if not _rel(p).startswith("store/") and re.search(r"\bSqliteStore\b", p.read_text())
    )


def executors_importing_store() -> list[str]:
    graph = import_graph()
    return sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        if m.startswith("oomguard.executors")
        for d in deps
        if d == "oomguard.store" or d.startswith("oomguard.store.")
    )


def sql_literals() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if _rel(path) == QUERY_LOADER:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            text: str | None = None
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            elif isinstance(node, ast.JoinedStr):
                text = "".join(
                    v.value
                    for v in node.values
                    if isinstance(v, ast.Constant) and isinstance(v.value, str)
                )
            if text and _SQL.match(text):
                assert isinstance(node, (ast.Constant, ast.JoinedStr))
                found.append(f"{_rel(path)}:{node.lineno}: {text.strip()[:60]!r}")
    return found


def any_lines() -> list[str]:
    return [
        f"{_rel(path)}:{n}"
        for path in sorted(SRC.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bAny\b", line.split("#", 1)[0])
    ]


def test_no_import_circle() -> None:
    assert import_circles() == []


def test_only_the_store_names_the_sqlite_store() -> None:
    assert sqlite_store_named_outside_store() == []


def test_executors_import_nothing_from_the_store() -> None:
    assert executors_importing_store() == []


def test_no_sql_outside_the_query_files() -> None:
    assert sql_literals() == []


def test_any_only_where_data_is_the_users() -> None:
    lines = any_lines()
    assert len(lines) <= MAX_ANY_LINES, lines


if __name__ == "__main__":
    circles = import_circles()
    print(f"import circles: {len(circles)}")
    for c in circles:
        print("   ", " ".join(c))
    named = sqlite_store_named_outside_store()
    print(f"modules outside store/ naming SqliteStore: {len(named)}", *named, sep="\n    ")
    ex = executors_importing_store()
    print(f"executor imports of store: {len(ex)}", *ex, sep="\n    ")
    sql = sql_literals()
    print(f"SQL literals in .py: {len(sql)}")
    if "-v" in sys.argv:
        print(*sql, sep="\n    ")
    lines = any_lines()
    by_area: dict[str, int] = {}
    for line in lines:
        area = line.split("/")[0].split(":")[0]
        by_area[area] = by_area.get(area, 0) + 1
    print(f"lines with Any: {len(lines)} (at most {MAX_ANY_LINES})")
    for area, n in sorted(by_area.items(), key=lambda kv: -kv[1]):
        print(f"    {area}: {n}")
