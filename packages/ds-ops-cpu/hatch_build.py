"""Wheel build hook: compiles the CPU optimizer ops ahead of time, one pybind11 module per op
(``ds_ops_cpu/_prebuilt/<op>_op*.so``), with ninja.

What to build is read from ``src/ds_ops_cpu/_build_plan.py`` (the same plan the run-time JIT
uses, so the prebuilt modules carry the ``SOURCE_HASH`` the op builders expect). The knobs
(``DS_BUILD_OPS``, ``DS_BUILD_CPU_*``, ``MAX_JOBS``, ``CXX``) and the ninja helper (finding
ninja, writing ``build.ninja``, running it) are core's ``deepspeed/ops/op_builder/_knobs.py`` and
``_native.py``, loaded by path: next door in the monorepo, or the copies in the sdist's
``_build_support/``. The run-time JIT uses the same two modules.

Without a compiler the wheel is still built, pure Python, with a warning: the ops then JIT-build
on first use (or fall back to PyTorch). A compile error is a warning too, unless the user asked
for the op explicitly (``DS_BUILD_OPS=1`` or ``DS_BUILD_CPU_ADAM=1``...), then it fails the build.
Editable installs build nothing (the JIT cache serves a checkout).
"""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
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


#: Where core's build-time modules (``_knobs.py``, ``_native.py``; standard library only) are
#: found: beside this package in the monorepo, else the copies an sdist carries.
_SUPPORT_DIRS = (HERE.parent / "ds-core" / "src" / "deepspeed" / "ops" / "op_builder", HERE / "_build_support")


def _support(name: str):
    for folder in _SUPPORT_DIRS:
        if (folder / f"{name}.py").exists():
            return _load(f"_ds_build_{name}", folder / f"{name}.py")
    raise RuntimeError(
        f"ds-ops-cpu build: core's {name}.py not found in {' or '.join(str(d) for d in _SUPPORT_DIRS)}. "
        "Fix: build from the monorepo checkout or from the ds-ops-cpu sdist (which carries it)."
    )


def _units(plan, native, op) -> list:
    import pybind11

    includes = [f"-I{plan.csrc_dir()}", f"-I{pybind11.get_include()}", *(f"-I{p}" for p in native.python_includes())]
    return [
        native.Unit(src, name, (*plan.COMMON_FLAGS, *flags, *includes))
        for src, name, flags in plan.units(op, plan.source_hash(op))
    ]


class CustomBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        plan = _load("_ds_ops_cpu_build_plan", HERE / "src" / "ds_ops_cpu" / "_build_plan.py")
        knobs, native = _support("_knobs"), _support("_native")
        ops = [op for op in plan.OPS if knobs.build_op(op.build_var)]
        if not ops:
            return
        cxx = knobs.cxx()
        ninja = native.find_ninja()
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
            (out_dir / "build.ninja").write_text(native.ninja_text(_units(plan, native, op), out_name, cxx))
            proc = native.run_ninja(ninja, out_dir, knobs.max_jobs())
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
