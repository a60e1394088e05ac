#!/usr/bin/env python
"""Check the module layout of every package: no import cycles, no module over 800 lines.

Run from anywhere (stdlib only; nothing under packages/ is imported, every file is parsed)::

    python tools/check_layout.py            # summary; on failure, each cycle and each long module
    python tools/check_layout.py --verbose  # also the members of each cycle's component

Exit status 1 when a cycle or a module over 800 lines exists; ``tests/test_layout.py`` runs it.

Modules: every ``*.py`` under ``packages/*/src/``, named by its path relative to ``src/``
(``__init__.py`` is the package). Several distributions contribute to the ``deepspeed`` package
(``pkgutil.extend_path``), so modules are merged by dotted name across all ``src/`` roots (a name
found in two roots fails: one would shadow the other).

Import edges, among these modules only (stdlib and third-party imports are ignored):

* every ``import``/``from ... import``, relative ones resolved, wherever it runs: module level,
  class bodies, ``try``/``if`` blocks, and DEFERRED imports inside functions and methods (they
  still run: a cycle through a deferred import is a cycle). NOT counted: imports under
  ``if TYPE_CHECKING:``/``if typing.TYPE_CHECKING:`` (its ``else`` branch is counted);
* ``importlib.import_module("<literal>")`` and ``__import__("<literal>")`` (relative literals
  resolved against ``package=__name__``/``__package__``/a literal); non-literal calls are skipped;
* ``from a.b import c``: an edge to ``a.b.c`` when that is a module of the tree, else to ``a.b``;
  a missing module of a tree package is a warning, not an edge;
* the implicit edges Python executes: importing ``a.b.c`` first runs ``a/__init__`` and
  ``a/b/__init__``, so the importer also gets an edge to each ancestor package of the target,
  except its own ancestors (already initialised when the importer runs) and itself.

An edge is deferred when none of the imports creating it runs at module import time. Tarjan's
algorithm (iterative) finds the strongly connected components; each of more than one module is
reported with one shortest cycle through it, each edge with the file:line of its import(s).
"""

from __future__ import annotations

import argparse
import ast
import collections
import pathlib
import sys
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_LINES = 800


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    path: pathlib.Path
    line: int
    deferred: bool
    via: str = ""  # for an implicit ancestor edge: the module whose import runs dst's __init__


def find_modules(root: pathlib.Path) -> tuple[dict[str, pathlib.Path], list[str]]:
    """Dotted name -> file, merged over ``packages/*/src``; and one line per duplicated name."""
    modules: dict[str, pathlib.Path] = {}
    duplicates: list[str] = []
    for src in sorted(root.glob("packages/*/src")):
        for path in sorted(src.rglob("*.py")):
            parts = path.relative_to(src).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if not parts or not all(p.isidentifier() for p in parts):
                continue
            name = ".".join(parts)
            if name in modules:
                duplicates.append(f"{name}: {_rel(modules[name], root)} and {_rel(path, root)}")
            else:
                modules[name] = path
    return modules, duplicates


def _rel(path: pathlib.Path, root: pathlib.Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _ImportFinder(ast.NodeVisitor):
    """Collects (absolute module name, names imported from it, line, deferred) of one module."""

    def __init__(self, module: str, is_package: bool):
        self.package = module if is_package else module.rpartition(".")[0]
        self.module = module
        self.depth = 0
        self.found: list[tuple[str, list[str], int, bool]] = []

    def _absolute(self, name: str, level: int, package: str | None = None) -> str | None:
        if not level:
            return name
        parts = [p for p in (self.package if package is None else package).split(".") if p]
        if level > len(parts):
            return None  # beyond the top-level package: an ImportError at run time
        base = parts[:len(parts) - (level - 1)]
        return ".".join(base + ([name] if name else [])) or None

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        # Decorators, defaults and annotations run when the def runs; the body runs later.
        for child in getattr(node, "decorator_list", []) + node.args.defaults + node.args.kw_defaults:
            if child is not None:
                self.visit(child)
        self.depth += 1
        for child in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(child)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if _is_type_checking(test):
            branches = [node.orelse]
        elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and _is_type_checking(test.operand):
            branches = [node.body]
        else:
            self.visit(test)
            branches = [node.body, node.orelse]
        for child in (c for branch in branches for c in branch):
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, [], node.lineno, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._absolute(node.module or "", node.level)
        if base:
            self.found.append((base, [a.name for a in node.names], node.lineno, self.depth > 0))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__") and node.args and _literal(node.args[0]):
            target: str | None = node.args[0].value
            if target.startswith("."):
                pkg = node.args[1] if len(node.args) > 1 and name == "import_module" else next(
                    (k.value for k in node.keywords if k.arg == "package"), None)
                names = {"__package__": self.package, "__name__": self.module}
                base = names.get(pkg.id) if isinstance(pkg, ast.Name) else pkg.value if _literal(pkg) else None
                stripped = target.lstrip(".")
                target = self._absolute(stripped, len(target) - len(stripped), base) if base else None
            if target:
                self.found.append((target, [], node.lineno, self.depth > 0))
        self.generic_visit(node)


def _literal(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _target(name: str, fromname: str | None, modules: dict[str, pathlib.Path]) -> str | None:
    if fromname and fromname != "*" and f"{name}.{fromname}" in modules:
        return f"{name}.{fromname}"
    return name if name in modules else None


def build_graph(modules: dict[str, pathlib.Path], unresolved: list | None = None) -> dict[str, dict[str, list[Edge]]]:
    """src -> dst -> every Edge (import occurrence) from src to dst, both modules of the tree.

    Imports of a tree package's module that does not exist are appended to ``unresolved``; they
    still get the implicit edges to the ancestor packages Python runs before failing.
    """
    graph: dict[str, dict[str, list[Edge]]] = {name: {} for name in modules}
    tops = {name.partition(".")[0] for name in modules}
    for module, path in modules.items():
        finder = _ImportFinder(module, path.name == "__init__.py")
        finder.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        own = {module} | {module.rsplit(".", i)[0] for i in range(1, module.count(".") + 1)}
        for name, fromlist, line, deferred in finder.found:
            if name.partition(".")[0] not in tops:
                continue
            for target in {_target(name, f, modules) or name for f in fromlist or [None]}:
                if target not in modules:
                    if unresolved is not None:
                        unresolved.append((path, line, module, target))
                elif target != module:
                    graph[module].setdefault(target, []).append(Edge(module, target, path, line, deferred))
                parts = target.split(".")
                for i in range(1, len(parts)):
                    ancestor = ".".join(parts[:i])
                    if ancestor in modules and ancestor not in own:
                        graph[module].setdefault(ancestor, []).append(
                            Edge(module, ancestor, path, line, deferred, via=target))
    return graph


def strongly_connected(graph: dict[str, dict[str, list[Edge]]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on deep import chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def shortest_cycle(graph: dict[str, dict[str, list[Edge]]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, staying inside the component."""
    start, members = component[0], set(component)
    parent: dict[str, str] = {}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [start] + path[::-1][1:] + [start]
            if child in members and child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in a component but on no cycle")


def _describe(edges: list[Edge], root: pathlib.Path) -> str:
    edges = sorted(edges, key=lambda e: (e.deferred, e.line))
    first = edges[0]
    where = f"{_rel(first.path, root)}:{first.line}"
    more = sorted({e.line for e in edges} - {first.line})
    if more:
        where += f" (also line{'s' if len(more) > 1 else ''} {', '.join(map(str, more))})"
    kind = "deferred import" if first.deferred else "import"
    if first.via:
        kind += f" of {first.via}, which runs {first.dst}/__init__ first"
    return f"{where}  [{kind}]"


def analyse(root: pathlib.Path = ROOT, verbose: bool = False) -> dict[str, list[str]]:
    """The report on the tree under ``root``, by section: cycles, too_long, duplicates (all
    failures), warnings, summary (one line)."""
    modules, duplicates = find_modules(root)
    unresolved: list[tuple[pathlib.Path, int, str, str]] = []
    graph = build_graph(modules, unresolved)
    cycles = sorted((c for c in strongly_connected(graph) if len(c) > 1), key=lambda c: (-len(c), c))
    report: dict[str, list[str]] = {"cycles": [], "too_long": [], "duplicates": [f"duplicate module: {d}"
                                                                                 for d in duplicates]}
    for number, component in enumerate(cycles, 1):
        cycle = shortest_cycle(graph, component)
        report["cycles"].append(f"cycle {number}: {len(component)} modules in one strongly connected component, "
                                f"e.g. {' -> '.join(cycle)}")
        report["cycles"] += [f"    {a} -> {b}: {_describe(graph[a][b], root)}" for a, b in zip(cycle, cycle[1:])]
        if verbose:
            report["cycles"].append(f"    component: {', '.join(component)}")
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules.items()}
    for name, count in sorted(lengths.items(), key=lambda item: -item[1]):
        if count > MAX_LINES:
            report["too_long"].append(f"too long: {name} ({_rel(modules[name], root)}) has {count} lines, "
                                      f"over {MAX_LINES}: split it")
    report["warnings"] = [f"warning: {_rel(path, root)}:{line}: {module} imports {target}, which is no module "
                          "of the tree" for path, line, module, target in unresolved]
    edges = [e for targets in graph.values() for e in targets.values()]
    deferred = sum(all(o.deferred for o in occurrences) for occurrences in edges)
    largest = max(lengths, key=lengths.get, default="-")
    report["summary"] = [f"{len(modules)} modules, {len(edges)} import edges ({deferred} deferred), "
                         f"{len(cycles)} cycles, largest module {lengths.get(largest, 0)} lines ({largest})"]
    return report


FAILURES = ("cycles", "too_long", "duplicates")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=pathlib.Path, default=ROOT, help="repository root (default: this one)")
    parser.add_argument("--verbose", action="store_true", help="list every module of each cycle's component")
    args = parser.parse_args(argv)
    report = analyse(args.root, args.verbose)
    failed = any(report[section] for section in FAILURES)
    print("\n".join(line for section in (*FAILURES, "warnings", "summary") for line in report[section]))
    if failed:
        print("FAILED. Break each cycle above at one of its edges (move what both sides need into a module "
              "of its own, or import the defining submodule instead of its package).")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
