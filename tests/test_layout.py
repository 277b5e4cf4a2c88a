"""The house's import rule (docs/architecture.md, "Who may import whom"), read from the source with `ast`:
no package imports one above it, the rules import only the standard library, and no import circle runs
through files of two packages. Every import counts, at a module's top or inside a function."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> the packages of ours it may import (docs/architecture.md); `pamgate` may import them all
EDGES = {"mllp": set(), "mappings": set(), "consent_store": set()}
ALLOWED = {
    **EDGES,
    "outbound": {"mllp", "consent_store"},
    "engine": {"mappings", "consent_store", "mllp", "outbound"},
    "conformance": {"engine", "mllp"},
    "console": {"engine", "consent_store", "mappings"},
    "bench": {"engine", "mllp", "mappings", "consent_store", "outbound", "conformance"},   # tools, beside
}
ALLOWED["pamgate"] = set(ALLOWED) - {"bench"}
# inside engine, the rules (consent, habilitation) and the domain types: the standard library, and each other
PURE = {"engine.rules", "engine.habilitation", "engine.domain", "engine.identity", "engine.sequence",
        "engine.unit_of_work"}


def modules() -> dict[str, Path]:
    """Module name -> file, for every .py of our packages that is there (console/ may not be yet)."""
    found = {}
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules `name` imports: absolute names, relative ones resolved; `from pkg import mod` names the
    module `pkg.mod` when there is one."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            named = [f"{target}.{alias.name}" for alias in node.names]
            out.update(m for m in named if m in known)
            if not all(m in known for m in named):
                out.add(target)     # a name from the module itself, not only modules of the package
    return out


def top(module: str) -> str:
    return module.split(".")[0]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_no_package_imports_one_it_may_not(graph):
    wrong = sorted(f"{name} imports {target}" for name, targets in graph.items() for target in targets
                   if top(target) in ALLOWED and top(target) != top(name)
                   and top(target) not in ALLOWED[top(name)])
    assert wrong == [], "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_the_rules_import_only_the_standard_library(graph):
    wrong = sorted(f"{name} imports {target}" for name in PURE for target in graph[name]
                   if target not in PURE and top(target) not in sys.stdlib_module_names
                   and target != "__future__")
    assert wrong == [], "\n".join(wrong)


def test_no_import_circle_runs_through_two_packages(graph):
    known = set(graph)
    edges = {name: {t for t in targets if t in known and t != name} for name, targets in graph.items()}
    circles = [sorted(c) for c in strongly_connected(edges) if len({top(m) for m in c}) > 1]
    assert circles == [], "import circles across packages:\n" + "\n".join(" ".join(c) for c in circles)


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that reach one another."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    return groups
