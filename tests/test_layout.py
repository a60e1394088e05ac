"""The module layout check (tools/check_layout.py): no import cycles, no module over 800 lines."""

import importlib.util
import pathlib
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


layout = _load("check_layout")


def _report(report, *sections):
    return "\n".join(line for section in (*sections, "summary") for line in report[section])


def test_no_import_cycles():
    report = layout.analyse(ROOT)
    assert not report["cycles"], _report(report, "cycles")


def test_no_module_over_800_lines():
    report = layout.analyse(ROOT)
    assert not report["too_long"], _report(report, "too_long")


def _tree(root, files):
    for rel, text in files.items():
        path = root / "packages" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_a_deferred_import_cycle_is_found(tmp_path):
    _tree(tmp_path, {
        "one/src/p/__init__.py": "",
        "one/src/p/a.py": "from p.b import g\n",
        "one/src/p/b.py": "def g():\n    from p import a\n    return a\n",
    })
    report = layout.analyse(tmp_path)
    assert len(report["cycles"]) == 3, report["cycles"]
    assert report["cycles"][0].endswith("e.g. p.a -> p.b -> p.a")
    assert "packages/one/src/p/a.py:1  [import]" in report["cycles"][1]
    assert "packages/one/src/p/b.py:2  [deferred import]" in report["cycles"][2]
    assert report["summary"] == ["3 modules, 2 import edges (1 deferred), 1 cycles, largest module 3 lines (p.b)"]
    assert layout.main(["--root", str(tmp_path)]) == 1


def test_a_type_checking_import_is_not_an_edge(tmp_path):
    _tree(tmp_path, {
        "one/src/p/__init__.py": "",
        "one/src/p/a.py": "from p.b import g\n",
        "one/src/p/b.py": """\
            import typing
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from p.a import X
            if typing.TYPE_CHECKING:
                import p.a
            else:
                import p.c
            def g():
                if TYPE_CHECKING:
                    from . import a
            """,
        "one/src/p/c.py": "",
    })
    graph = layout.build_graph(layout.find_modules(tmp_path)[0])
    assert set(graph["p.b"]) == {"p.c"}  # the else branch of `if TYPE_CHECKING` runs
    assert not layout.analyse(tmp_path)["cycles"]
    assert layout.main(["--root", str(tmp_path)]) == 0


def test_ancestor_packages_run_first_except_the_importers_own(tmp_path):
    _tree(tmp_path, {
        # p/x.py imports q.r: Python runs q/__init__ first, which imports p.x again.
        "one/src/p/__init__.py": "from p import x\n",
        "one/src/p/x.py": "import q.r\nfrom p import y\nfrom . import z\n",
        "one/src/p/y.py": "",
        "one/src/p/z.py": "",
        "two/src/q/__init__.py": "from p.x import f\n",
        "two/src/q/r.py": "",
        # a namespace spread over two roots: p.sub lives in packages/two, p in packages/one
        "two/src/p/sub/__init__.py": "",
        "two/src/p/sub/m.py": "import importlib\nimportlib.import_module('p.y')\n",
    })
    modules, duplicates = layout.find_modules(tmp_path)
    assert not duplicates and {"p", "p.sub", "p.sub.m", "q", "q.r"} <= set(modules)
    graph = layout.build_graph(modules)
    assert set(graph["p.x"]) == {"q.r", "q", "p.y", "p.z"}  # not p: p.x's own package is initialised
    assert set(graph["p.sub.m"]) == {"p.y"}  # p and p.sub are p.sub.m's own ancestors
    edge = graph["p.x"]["q"][0]
    assert (edge.line, edge.via, edge.deferred) == (1, "q.r", False)
    # p/__init__ imports p.x; q/__init__ imports p.x, so importing q runs p/__init__ first: a cycle of three.
    report = layout.analyse(tmp_path)
    assert report["cycles"][0].endswith("3 modules in one strongly connected component, e.g. p -> p.x -> q -> p")
    assert report["cycles"][2] == ("    p.x -> q: packages/one/src/p/x.py:1  [import of q.r, which runs q/__init__ "
                                   "first]")
    assert report["cycles"][3] == ("    q -> p: packages/two/src/q/__init__.py:1  [import of p.x, which runs "
                                   "p/__init__ first]")


def test_long_modules_and_unresolved_imports_are_reported(tmp_path):
    _tree(tmp_path, {"one/src/p/__init__.py": "import p.gone\n" + "x = 1\n" * 800})
    report = layout.analyse(tmp_path)
    assert report["too_long"] == ["too long: p (packages/one/src/p/__init__.py) has 801 lines, over 800: split it"]
    assert report["warnings"] == ["warning: packages/one/src/p/__init__.py:1: p imports p.gone, which is no module "
                                  "of the tree"]
    assert layout.main(["--root", str(tmp_path)]) == 1


def test_tarjan_is_iterative_on_a_long_chain():
    n = 5000
    graph = {f"m{i}": {f"m{i + 1}": []} for i in range(n)} | {f"m{n}": {"m0": []}}
    (component,) = layout.strongly_connected(graph)
    assert len(component) == n + 1
