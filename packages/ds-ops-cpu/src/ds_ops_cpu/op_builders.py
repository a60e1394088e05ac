"""Op builders of the CPU optimizers, registered as ``cpu.cpu_adam``, ``cpu.cpu_adagrad`` and
``cpu.cpu_lion`` in the ``deepspeed.op_builders`` entry-point group.

Each op is one pybind11 module (no libtorch linkage) holding an AVX-512, an AVX2 and a scalar
variant of its kernel; the variant is picked at run time from the CPU (``DS_CPU_ISA`` forces one).
The wheel ships the modules prebuilt under ``ds_ops_cpu._prebuilt``; otherwise core's
:class:`~deepspeed.ops.op_builder.OpBuilder` JIT-builds them.
"""

from __future__ import annotations

import functools
import pathlib
import platform
import shutil

from deepspeed.ops.op_builder import CompileUnit, OpBuilder
from deepspeed.ops.op_builder import _knobs

from ds_ops_cpu import _build_plan


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


_ISA_NEEDS = {
    "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma", "f16c"},
    "avx2": {"avx2", "fma", "f16c"},
    "scalar": set(),
}


def runnable_isas() -> list[str]:
    """Variants compiled on this architecture that this CPU runs, best first (from /proc/cpuinfo;
    the loaded module's ``runnable_isas()`` is authoritative)."""
    flags = _cpu_flags()
    return [isa for isa in _build_plan.isas() if _ISA_NEEDS[isa] <= flags or isa == "scalar"]


class _CPUOptimizerBuilder(OpBuilder):
    """Builder of one CPU optimizer op described by :mod:`ds_ops_cpu._build_plan`."""

    def _op(self) -> _build_plan.Op:
        return _build_plan.BY_NAME[self.NAME]

    def absolute_name(self) -> str:
        return f"ds_ops_cpu._prebuilt.{self._op().module}"

    def sources(self) -> list[str]:
        return sorted({src for src, _, _ in _build_plan.units(self._op())})

    def include_paths(self) -> list[str]:
        import pybind11

        return [str(_build_plan.csrc_dir()), pybind11.get_include()]

    def cxx_args(self) -> list[str]:
        return list(_build_plan.COMMON_FLAGS)

    def compile_units(self) -> list[CompileUnit]:
        return [CompileUnit(src, name, flags) for src, name, flags in _build_plan.units(self._op(), self.source_hash())]

    def hashed_files(self) -> list[str]:
        return [str(p) for p in _build_plan.hashed_files(self._op())]

    @functools.cache
    def source_hash(self) -> str:
        return _build_plan.source_hash(self._op())

    def isa_tag(self) -> str:
        return f"{platform.machine()}-{'+'.join(_build_plan.isas())}"

    def is_compatible(self, verbose: bool = False) -> bool:
        if self.is_built():
            return True
        try:
            import pybind11  # noqa: F401
        except ImportError:
            return False
        return shutil.which(_knobs.cxx()) is not None

    def compatibility_notes(self) -> str:
        runnable = runnable_isas()
        try:
            forced = _knobs.cpu_isa()
        except ValueError as exc:
            return str(exc)
        chosen = runnable[0] if forced == "auto" else forced
        how = "forced by DS_CPU_ISA" if forced != "auto" else "auto"
        note = f"ISA {chosen} ({how}; this CPU runs {', '.join(runnable)})"
        if forced != "auto" and forced not in runnable:
            note += f"; {forced} cannot run here"
        if not self.is_built():
            if shutil.which(_knobs.cxx()) is None:
                note += f"; no compiler (CXX={_knobs.cxx()}): PyTorch fallback"
        return note


class CPUAdamBuilder(_CPUOptimizerBuilder):
    DS_PLUGIN_API = "1.0"  # the plugin API this class was written for (never inherited)
    NAME = "cpu_adam"
    BUILD_VAR = "DS_BUILD_CPU_ADAM"


class CPUAdagradBuilder(_CPUOptimizerBuilder):
    DS_PLUGIN_API = "1.0"  # the plugin API this class was written for (never inherited)
    NAME = "cpu_adagrad"
    BUILD_VAR = "DS_BUILD_CPU_ADAGRAD"


class CPULionBuilder(_CPUOptimizerBuilder):
    DS_PLUGIN_API = "1.0"  # the plugin API this class was written for (never inherited)
    NAME = "cpu_lion"
    BUILD_VAR = "DS_BUILD_CPU_LION"
