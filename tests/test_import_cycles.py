"""No import cycle in any package: every module can be understood, and changed, from below.

The module import graph is built by grimp (what ``lint-imports`` uses), over the packages that
``[tool.importlinter] root_packages`` in ``pyproject.toml`` names, with every import counted:
function-level ones (an import moved into a function to dodge a cycle is still a cycle) and
``TYPE_CHECKING`` ones. A package importing one of its own submodules and that submodule
importing the package back (``from pkg import name``) is a cycle too.
"""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("asirp", "asirp_device", "callbacks", "bluesky_plans", "sim")
"""Packages the test must cover whatever the configuration says."""


def _packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    named = config["tool"]["importlinter"]["root_packages"]
    return sorted(set(named) | set(REQUIRED))


def strongly_connected_components(graph: grimp.ImportGraph) -> list[list[str]]:
    """Groups of two or more modules that import one another (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    """The modules of a cycle and one closed path through it, with the import lines."""
    first = component[0]
    back = next(m for m in component if first in graph.find_modules_directly_imported_by(m))
    path = list(graph.find_shortest_chain(importer=first, imported=back) or (first, back))
    path.append(first)
    steps = []
    for importer, imported in itertools.pairwise(path):
        details = graph.get_import_details(importer=importer, imported=imported)
        where = ", ".join(f"line {d['line_number']}" for d in details) or "?"
        steps.append(f"  {importer} -> {imported} ({where})")
    return f"{len(component)} modules: {', '.join(component)}\n" + "\n".join(steps)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*_packages(), cache_dir=None)


def test_the_check_finds_a_cycle():
    toy = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        toy.add_module(name)
    toy.add_import(importer="pkg.a", imported="pkg.b")
    toy.add_import(importer="pkg.b", imported="pkg.a")  # e.g. inside a function
    toy.add_import(importer="pkg.c", imported="pkg.a")
    assert strongly_connected_components(toy) == [["pkg.a", "pkg.b"]]
    assert "pkg.a -> pkg.b" in _describe(toy, ["pkg.a", "pkg.b"])


def test_every_required_package_is_covered(graph):
    for package in REQUIRED:
        assert package in graph.modules, f"{package} is not in the import graph"


def test_no_package_has_an_import_cycle(graph):
    cycles = strongly_connected_components(graph)
    assert not cycles, "import cycles (function-level imports included):\n" + "\n".join(
        _describe(graph, component) for component in cycles
    )
