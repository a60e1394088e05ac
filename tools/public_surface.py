#!/usr/bin/env python
"""Record and check the public surface of every distribution: the names its public modules export.

Run from anywhere (stdlib only; nothing under packages/ is imported, every file is parsed)::

    python tools/public_surface.py          # check: exit 1 and list what was added/removed
    python tools/public_surface.py --write  # regenerate tests/public_surface/<distribution>.txt

``tests/test_public_surface.py`` runs the check, so a change to the public surface shows up in
review as a change to ``tests/public_surface/*.txt``; commit it when it is intended.

One file per package folder, named by its pyproject.toml ``[project].name``, one sorted line per
public name, ``module.path:name``:

* public modules: every module under ``packages/<folder>/src/`` whose dotted path (relative to
  ``src/``; ``__init__.py`` is the package) has no component starting with ``_``;
* public names of a module: when it binds ``__all__`` (a literal list/tuple, possibly with
  ``*spreads`` of lists/tuples/dict keys/comprehensions over them bound earlier in the module, ``+``,
  ``+=``, ``.extend``/``.append``), exactly those names; an ``__all__`` that cannot be resolved
  statically is an error naming the module. Otherwise every top-level name not starting with ``_``
  that the module itself defines (def, class, assignment, annotated assignment with a value),
  including in top-level ``if``/``try``/``with`` blocks but not under ``if TYPE_CHECKING:``;
  names the module merely imports are not listed.
"""

from __future__ import annotations

import argparse
import ast
import functools
import pathlib
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
SURFACE = pathlib.Path("tests") / "public_surface"
FIX = "run python tools/public_surface.py --write and commit the change if it is intended"


class SurfaceError(Exception):
    """A module whose ``__all__`` cannot be resolved statically."""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_statements(body: list[ast.stmt]):
    """Top-level statements that run at import, flattening if/try/with blocks (not TYPE_CHECKING)."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            yield from _runtime_statements(stmt.orelse if _is_type_checking(stmt.test) else stmt.body + stmt.orelse)
        elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            handlers = [s for handler in stmt.handlers for s in handler.body]
            yield from _runtime_statements(stmt.body + handlers + stmt.orelse + stmt.finalbody)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            yield from _runtime_statements(stmt.body)
        else:
            yield stmt


def _bound(target: ast.expr):
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for elt in target.elts:
            yield from _bound(elt.value if isinstance(elt, ast.Starred) else elt)


def defined_names(tree: ast.Module) -> set[str]:
    """Names the module itself binds at top level (imports excluded)."""
    names: set[str] = set()
    for stmt in _runtime_statements(tree.body):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Assign):
            names.update(n for target in stmt.targets for n in _bound(target))
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            names.update(_bound(stmt.target))
    return names


def _strings(node: ast.expr, env: dict[str, ast.expr], seen: frozenset[str] = frozenset(), imports=None) -> list[str]:
    """The strings a statically known iterable yields; SurfaceError when it is not statically known.

    ``imports``: (alias -> module path, resolver) so ``<alias>.__all__`` of a module imported under
    ``alias`` resolves to that module's own ``__all__`` (a re-exporting shim)."""
    if (imports is not None and isinstance(node, ast.Attribute) and node.attr == "__all__"
            and isinstance(node.value, ast.Name) and node.value.id in imports[0]):
        return imports[1](imports[0][node.value.id])
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        out: list[str] = []
        for elt in node.elts:
            if isinstance(elt, ast.Starred):
                out += _strings(elt.value, env, seen, imports)
            elif isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                out.append(elt.value)
            else:
                raise SurfaceError(f"line {elt.lineno}: element {ast.unparse(elt)!r} is not a string literal")
        return out
    if isinstance(node, ast.Dict):
        out = []
        for key, value in zip(node.keys, node.values):
            if key is None:
                out += _strings(value, env, seen, imports)
            elif isinstance(key, ast.Constant) and isinstance(key.value, str):
                out.append(key.value)
            else:
                raise SurfaceError(f"line {key.lineno}: key {ast.unparse(key)!r} is not a string literal")
        return out
    if isinstance(node, ast.Name) and node.id in env and node.id not in seen:
        return _strings(env[node.id], env, seen | {node.id}, imports)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _strings(node.left, env, seen, imports) + _strings(node.right, env, seen, imports)
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)) and len(node.generators) == 1:
        gen, elt = node.generators[0], node.key if isinstance(node, ast.DictComp) else node.elt
        if (isinstance(gen.target, ast.Name) and isinstance(elt, ast.Name) and elt.id == gen.target.id
                and not gen.ifs and not gen.is_async):
            return _strings(gen.iter, env, seen, imports)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("list", "tuple", "sorted")
            and len(node.args) == 1 and not node.keywords):
        return _strings(node.args[0], env, seen, imports)
    raise SurfaceError(f"line {node.lineno}: {ast.unparse(node)!r} is not a statically known list of names")


def _touches_all(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "__all__" for n in ast.walk(node))


def declared_all(tree: ast.Module, resolve=None) -> list[str] | None:
    """The names of a module's ``__all__``, None when it binds none; SurfaceError when unresolvable.
    ``resolve(module)``: the ``__all__`` of another module (for ``list(<imported module>.__all__)``)."""
    env: dict[str, ast.expr] = {}
    names: list[str] | None = None
    aliases: dict[str, str] = {}
    imports = (aliases, resolve) if resolve is not None else None
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level:
            for a in stmt.names:
                aliases[a.asname or a.name] = f"{stmt.module}.{a.name}"
        elif isinstance(stmt, ast.Import):
            for a in stmt.names:
                if a.asname:
                    aliases[a.asname] = a.name
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            if stmt.targets[0].id == "__all__":
                names = _strings(stmt.value, env, imports=imports)
            env[stmt.targets[0].id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            if stmt.target.id == "__all__":
                names = _strings(stmt.value, env, imports=imports)
            env[stmt.target.id] = stmt.value
        elif (isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == "__all__"
              and isinstance(stmt.op, ast.Add) and names is not None):
            names += _strings(stmt.value, env, imports=imports)
        elif (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
              and isinstance(stmt.value.func, ast.Attribute) and isinstance(stmt.value.func.value, ast.Name)
              and stmt.value.func.value.id == "__all__" and names is not None
              and stmt.value.func.attr in ("append", "extend") and len(stmt.value.args) == 1):
            arg = stmt.value.args[0]
            names += _strings(ast.List([arg]) if stmt.value.func.attr == "append" else arg, env, imports=imports)
        elif _touches_all(stmt) and not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            raise SurfaceError(f"line {stmt.lineno}: this use of __all__ is not understood statically")
    return names


def _module_all(src: pathlib.Path, module: str) -> list[str]:
    """``__all__`` of ``module`` when its file is in ``src`` (the same distribution)."""
    base = src.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            names = declared_all(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
            if names is not None:
                return names
    raise SurfaceError(f"{module}.__all__ is not a literal __all__ of a module in {src}")


def distributions(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Distribution name -> its package folder, for every packages/* folder with a pyproject.toml."""
    out = {}
    for pyproject in sorted(root.glob("packages/*/pyproject.toml")):
        out[tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"]] = pyproject.parent
    return out


def surface(folder: pathlib.Path) -> list[str]:
    """The sorted ``module.path:name`` lines of one package folder."""
    lines: set[str] = set()
    src = folder / "src"
    for path in sorted(src.rglob("*.py")) if src.is_dir() else []:
        parts = path.relative_to(src).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if not parts or any(p.startswith("_") or not p.isidentifier() for p in parts):
            continue
        module = ".".join(parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        try:
            names = declared_all(tree, functools.partial(_module_all, src))
        except SurfaceError as exc:
            raise SurfaceError(f"{module} ({path.relative_to(folder.parent.parent)}): __all__ cannot be resolved statically, {exc}. "
                               "Write it as a literal list of names") from None
        if names is None:
            names = [n for n in defined_names(tree) if not n.startswith("_")]
        lines.update(f"{module}:{name}" for name in names)
    return sorted(lines)


def compare(root: pathlib.Path) -> list[str]:
    """One line per difference between the tree and tests/public_surface/*.txt; empty when they agree."""
    expected = {name: surface(folder) for name, folder in distributions(root).items()}
    recorded = {path.stem: path.read_text(encoding="utf-8").split() for path in sorted((root / SURFACE).glob("*.txt"))}
    report: list[str] = []
    for dist in sorted(expected.keys() | recorded.keys()):
        now, before = set(expected.get(dist, [])), set(recorded.get(dist, []))
        if dist not in recorded:
            report.append(f"{dist}: {SURFACE / (dist + '.txt')} is missing")
        elif dist not in expected:
            report.append(f"{dist}: {SURFACE / (dist + '.txt')} names no distribution of packages/")
        added, removed = sorted(now - before), sorted(before - now)
        if added or removed:
            report.append(f"{dist}: {len(added)} added, {len(removed)} removed")
            report += [f"  + {line}" for line in added] + [f"  - {line}" for line in removed]
    return report


def write(root: pathlib.Path) -> list[pathlib.Path]:
    """Rewrite tests/public_surface/ from the tree; returns the files written."""
    out = root / SURFACE
    out.mkdir(parents=True, exist_ok=True)
    dists = distributions(root)
    for stale in out.glob("*.txt"):
        if stale.stem not in dists:
            stale.unlink()
    written = []
    for name, folder in dists.items():
        lines = surface(folder)
        (out / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        written.append(out / f"{name}.txt")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"regenerate {SURFACE}/*.txt from the tree")
    parser.add_argument("--root", type=pathlib.Path, default=ROOT, help="repository root (default: this one)")
    args = parser.parse_args(argv)
    try:
        if args.write:
            files = write(args.root)
            print(f"wrote {len(files)} files under {SURFACE}")
            return 0
        report = compare(args.root)
    except SurfaceError as exc:
        print(f"error: {exc}")
        return 2
    if report:
        print(f"The public surface differs from {SURFACE}/*.txt:")
        print("\n".join(report))
        print(f"Fix: {FIX}.")
        return 1
    total = sum(len(p.read_text(encoding="utf-8").split()) for p in (args.root / SURFACE).glob("*.txt"))
    print(f"public surface matches {SURFACE}/*.txt ({total} names)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
