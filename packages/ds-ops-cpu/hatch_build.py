"""Wheel build hook: compiles the CPU optimizer ops ahead of time, one pybind11 module per op
(``ds_ops_cpu/_prebuilt/<op>_op*.so``), with ninja.

What to build is read from ``src/ds_ops_cpu/_build_plan.py`` (the same plan the run-time JIT
uses, so the prebuilt modules carry the ``SOURCE_HASH`` the op builders expect). The knobs
(``DS_BUILD_OPS``, ``DS_BUILD_CPU_*``, ``MAX_JOBS``, ``CXX``) are read from core's
``deepspeed/ops/op_builder/_knobs.py`` next door in the monorepo.

Without a compiler the wheel is still built, pure Python, with a warning: the ops then JIT-build
on first use (or fall back to PyTorch). A compile error is a warning too, unless the user asked
for the op explicitly (``DS_BUILD_OPS=1`` or ``DS_BUILD_CPU_ADAM=1``...), then it fails the build.
Editable installs build nothing (the JIT cache serves a checkout).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

HERE = pathlib.Path(__file__).resolve().parent


def _load(name: str, path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def _knobs():
    path = HERE.parent / "ds-core" / "src" / "deepspeed" / "ops" / "op_builder" / "_knobs.py"
    if path.exists():
        return _load("_ds_build_knobs", path)
    return None


class _FallbackKnobs:
    """Used only when ds-core's knob module is not beside this package (an unpacked sdist)."""

    @staticmethod
    def build_op(var: str) -> bool:
        return os.environ.get(var, os.environ.get("DS_BUILD_OPS", "1")) not in ("0", "false", "no", "off")

    @staticmethod
    def build_explicitly_requested(var: str) -> bool:
        return os.environ.get(var, os.environ.get("DS_BUILD_OPS", "0")) == "1"

    @staticmethod
    def max_jobs() -> int:
        return int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1)

    @staticmethod
    def cxx() -> str:
        return os.environ.get("CXX", "c++")


def _ninja_file(plan, op, out_name: str, cxx: str) -> str:
    import pybind11

    q = shlex.quote
    paths = sysconfig.get_paths()
    includes = [f"-I{plan.csrc_dir()}", f"-I{pybind11.get_include()}", f"-I{paths['include']}"]
    if paths.get("platinclude") and paths["platinclude"] != paths["include"]:
        includes.append(f"-I{paths['platinclude']}")
    lines = [
        "ninja_required_version = 1.3",
        f"cxx = {q(cxx)}",
        "rule compile",
        "  command = $cxx -MMD -MF $out.d $cflags -c $in -o $out",
        "  depfile = $out.d",
        "  deps = gcc",
        "rule link",
        "  command = $cxx $in -shared -pthread -o $out",
    ]
    objs = []
    for src, name, flags in plan.units(op, plan.source_hash(op)):
        objs.append(f"{name}.o")
        cflags = [*plan.COMMON_FLAGS, *flags, *includes]
        lines += [f"build {name}.o: compile {q(src)}", "  cflags = " + " ".join(q(f) for f in cflags)]
    lines += [f"build {out_name}: link {' '.join(objs)}", f"default {out_name}", ""]
    return "\n".join(lines)


def _ninja_bin() -> str | None:
    found = shutil.which("ninja")
    if found:
        return found
    try:
        import ninja

        path = os.path.join(ninja.BIN_DIR, "ninja")
        return path if os.path.exists(path) else None
    except ImportError:
        return None


class CustomBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        plan = _load("_ds_ops_cpu_build_plan", HERE / "src" / "ds_ops_cpu" / "_build_plan.py")
        knobs = _knobs() or _FallbackKnobs()
        ops = [op for op in plan.OPS if knobs.build_op(op.build_var)]
        if not ops:
            return
        cxx = knobs.cxx()
        ninja = _ninja_bin()
        missing = [what for what, ok in (("C++ compiler " + repr(cxx), shutil.which(cxx)), ("ninja", ninja)) if not ok]
        if missing:
            warnings.warn(
                f"ds-ops-cpu: no {' and no '.join(missing)}; building a pure-Python wheel. The CPU "
                "optimizers will JIT-build on first use where a compiler exists, else run their "
                "PyTorch fallback. Fix: install g++ and ninja, then rebuild the wheel.",
                stacklevel=1,
            )
            return
        ext = sysconfig.get_config_var("EXT_SUFFIX")
        self._tmp = tempfile.mkdtemp(prefix="ds_ops_cpu_build_")
        built = 0
        for op in ops:
            out_dir = pathlib.Path(self._tmp) / op.name
            out_dir.mkdir(parents=True)
            out_name = op.module + ext
            (out_dir / "build.ninja").write_text(_ninja_file(plan, op, out_name, cxx))
            proc = subprocess.run(
                [ninja, "-C", str(out_dir), "-j", str(knobs.max_jobs())], capture_output=True, text=True
            )
            if proc.returncode != 0:
                msg = (
                    f"ds-ops-cpu: op '{op.name}' failed to compile, so the wheel ships it as sources "
                    f"(JIT at run time):\n{(proc.stdout + proc.stderr)[-4000:]}"
                )
                if knobs.build_explicitly_requested(op.build_var):
                    raise RuntimeError(msg + f"\nFix: fix the error above, or unset {op.build_var}/DS_BUILD_OPS.")
                warnings.warn(msg, stacklevel=1)
                continue
            build_data["force_include"][str(out_dir / out_name)] = f"ds_ops_cpu/_prebuilt/{out_name}"
            built += 1
        if built:
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict, artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
