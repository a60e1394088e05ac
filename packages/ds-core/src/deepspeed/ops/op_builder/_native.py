"""The one native-build helper: finding ninja, writing a ``build.ninja`` and running it.

Both paths that compile ops use it: :meth:`OpBuilder.jit_build` at run time, and the wheel build
hook of every ops package (``ds-ops-cpu/hatch_build.py``) ahead of time. Like ``_knobs`` beside
it, it imports only the standard library, so a build hook can load it by file path before torch
or ds-core is installed (an ops package's sdist carries a copy under ``_build_support/``).

A build is a list of :class:`Unit` (one source compiled with its flags into one object) linked
into one shared module. Header dependencies are tracked through the compiler's depfiles, so
editing a header rebuilds what includes it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
from typing import NamedTuple, Sequence


class Unit(NamedTuple):
    """One translation unit: ``source`` compiled with ``flags`` into ``<obj>.o``."""

    source: str
    obj: str
    flags: tuple[str, ...] = ()


def find_ninja() -> str | None:
    """The ninja binary: on ``PATH``, else the one the ``ninja`` PyPI package ships; else None."""
    found = shutil.which("ninja")
    if found:
        return found
    try:
        import ninja  # the PyPI package ships the binary
    except ImportError:
        return None
    path = os.path.join(ninja.BIN_DIR, "ninja")
    return path if os.path.exists(path) else None


def python_includes() -> list[str]:
    """Include directories of this interpreter's headers (``Python.h``)."""
    paths = sysconfig.get_paths()
    return sorted({p for p in (paths.get("include"), paths.get("platinclude")) if p})


def ninja_text(units: Sequence[Unit], output: str, cxx: str, ldflags: Sequence[str] = ()) -> str:
    """A ``build.ninja`` compiling ``units`` and linking them into the shared module ``output``."""
    q = shlex.quote
    lines = [
        "ninja_required_version = 1.3",
        f"cxx = {q(cxx)}",
        "rule compile",
        "  command = $cxx -MMD -MF $out.d $cflags -c $in -o $out",
        "  depfile = $out.d",
        "  deps = gcc",
        "  description = compile $in",
        "rule link",
        "  command = $cxx $in $ldflags -o $out",
        "  description = link $out",
    ]
    objs = []
    for unit in units:
        obj = f"{unit.obj}.o"
        objs.append(obj)
        lines += [f"build {obj}: compile {q(unit.source)}", "  cflags = " + " ".join(q(f) for f in unit.flags)]
    link = ["-shared", "-pthread", *ldflags]
    lines += [f"build {output}: link {' '.join(objs)}", "  ldflags = " + " ".join(q(f) for f in link)]
    lines += [f"default {output}", ""]
    return "\n".join(lines)


def run_ninja(ninja: str, build_dir: str | os.PathLike[str], jobs: int) -> subprocess.CompletedProcess[str]:
    """Run ninja in ``build_dir`` with ``jobs`` parallel jobs; output captured, never raises."""
    return subprocess.run([ninja, "-C", str(build_dir), "-j", str(jobs)], capture_output=True, text=True)


def tail(text: str, lines: int = 25) -> str:
    """The last ``lines`` lines of a compiler log, for error messages."""
    return "\n".join(text.strip().splitlines()[-lines:])


__all__ = ["Unit", "find_ninja", "ninja_text", "python_includes", "run_ninja", "tail"]
