"""The recorded public surface (tests/public_surface/*.txt) matches the tree (tools/public_surface.py)."""

import importlib.util
import pathlib
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


surface = _load("public_surface")


def test_public_surface_matches_the_recorded_files(capsys):
    status = surface.main(["--root", str(ROOT)])
    assert status == 0, capsys.readouterr().out


def _tree(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_write_then_check_on_a_synthetic_tree(tmp_path, capsys):
    _tree(tmp_path, {
        "packages/a/pyproject.toml": '[project]\nname = "dist-a"\n',
        "packages/a/src/pkg/__init__.py": """\
            from pkg.mod import Thing
            _MORE = ("B",)
            _KEYS = {**{n: 1 for n in ("C", "D")}, "E": 2}
            __all__ = ["Thing", *_MORE, *_KEYS]
            __all__ += ["F"]
            """,
        "packages/a/src/pkg/mod.py": """\
            import os
            from typing import TYPE_CHECKING
            from os.path import join
            CONSTANT = 1
            a, (b, *c) = 1, (2, 3)
            typed: int = 2
            declared_only: int
            _private = 3
            def func(): pass
            class Thing: pass
            try:
                import json
                def in_try(): pass
            except ImportError:
                fallback = None
            if TYPE_CHECKING:
                hidden = 1
            """,
        "packages/a/src/pkg/_private.py": "visible = 1\n",
        "packages/a/src/pkg/sub/_hidden/x.py": "visible = 1\n",
        "packages/b/pyproject.toml": '[project]\nname = "dist-b"\n',
        "packages/b/src/other/__init__.py": "",
    })
    assert surface.main(["--root", str(tmp_path), "--write"]) == 0
    recorded = (tmp_path / "tests/public_surface/dist-a.txt").read_text().splitlines()
    assert recorded == ["pkg.mod:CONSTANT", "pkg.mod:Thing", "pkg.mod:a", "pkg.mod:b", "pkg.mod:c",
                        "pkg.mod:fallback", "pkg.mod:func", "pkg.mod:in_try", "pkg.mod:typed",
                        "pkg:B", "pkg:C", "pkg:D", "pkg:E", "pkg:F", "pkg:Thing"]
    assert (tmp_path / "tests/public_surface/dist-b.txt").read_text() == ""
    capsys.readouterr()
    assert surface.main(["--root", str(tmp_path)]) == 0

    (tmp_path / "packages/a/src/pkg/mod.py").write_text("def func(): pass\ndef added(): pass\n")
    assert surface.main(["--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "dist-a: 1 added, 8 removed" in out
    assert "  + pkg.mod:added" in out and "  - pkg.mod:CONSTANT" in out and "dist-b" not in out
    assert "run python tools/public_surface.py --write and commit the change if it is intended" in out


def test_an_unresolvable_all_fails_naming_the_module(tmp_path, capsys):
    _tree(tmp_path, {
        "packages/a/pyproject.toml": '[project]\nname = "dist-a"\n',
        "packages/a/src/pkg/__init__.py": "__all__ = sorted(dir())\n",
    })
    assert surface.main(["--root", str(tmp_path), "--write"]) == 2
    out = capsys.readouterr().out
    assert "pkg (packages/a/src/pkg/__init__.py): __all__ cannot be resolved statically" in out


def test_a_shim_reexporting_another_modules_all(tmp_path, capsys):
    """``__all__ = list(<imported module>.__all__)`` (DeepSpeed-path shims such as deepspeed.comm.comm)
    lists the names of that module's literal ``__all__``, when the module is in the same distribution."""
    _tree(tmp_path, {
        "packages/a/pyproject.toml": '[project]\nname = "dist-a"\n',
        "packages/a/src/pkg/__init__.py": '__all__ = ["one", "two"]\none = two = 1\n',
        "packages/a/src/pkg/shim.py": "from pkg import _x\nfrom pkg import core as _core\n"
                                      "__all__ = list(_core.__all__)\n",
        "packages/a/src/pkg/core.py": '__all__ = ["alpha", "beta"]\nalpha = beta = 1\n',
        "packages/a/src/pkg/elsewhere.py": "import json as _json\n__all__ = list(_json.__all__)\n",
    })
    assert surface.main(["--root", str(tmp_path), "--write"]) == 2
    assert "pkg.elsewhere" in capsys.readouterr().out  # a module outside the distribution: refused
    (tmp_path / "packages/a/src/pkg/elsewhere.py").unlink()
    assert surface.main(["--root", str(tmp_path), "--write"]) == 0
    recorded = (tmp_path / "tests/public_surface/dist-a.txt").read_text().splitlines()
    assert recorded == ["pkg.core:alpha", "pkg.core:beta", "pkg.shim:alpha", "pkg.shim:beta", "pkg:one", "pkg:two"]
