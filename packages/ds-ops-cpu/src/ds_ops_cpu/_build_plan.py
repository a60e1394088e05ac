"""What each CPU op (optimizers, quantizers) compiles: translation units, per-ISA flags, and the source hash.

Standard library only: the wheel build hook (``hatch_build.py``) loads this file by path before
anything else is installed, and the op builders import it at run time, so both compile the same
units with the same flags and agree on ``SOURCE_HASH``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import platform

#: Flags of every unit. -ffp-contract=off keeps every ISA variant bit-identical (no FMA
#: contraction); -fno-math-errno lets sqrt vectorise while staying IEEE-exact.
COMMON_FLAGS = (
    "-O3",
    "-std=c++17",
    "-fPIC",
    "-fvisibility=hidden",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-DNDEBUG",
)

#: x86 ISA variants, best first: name -> -m flags of its kernel unit.
X86_ISAS = {
    "avx512": (
        "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
        "-mprefer-vector-width=512",
    ),
    "avx2": ("-mavx2", "-mfma", "-mf16c"),
    "scalar": (),
}


@dataclasses.dataclass(frozen=True)
class Op:
    name: str  # cpu_adam
    build_var: str  # DS_BUILD_CPU_ADAM
    folder: str  # csrc/<folder>/<folder>_kernel.cpp and <folder>_binding.cpp
    isa_variants: bool = True  # False: one kernel unit without -m flags (no SIMD hot loop: async_io)

    @property
    def module(self) -> str:
        return f"{self.name}_op"


OPS = (
    Op("cpu_adam", "DS_BUILD_CPU_ADAM", "adam"),
    Op("cpu_adagrad", "DS_BUILD_CPU_ADAGRAD", "adagrad"),
    Op("cpu_lion", "DS_BUILD_CPU_LION", "lion"),
    # DeepSpeed's build variables for its quantizer ops
    Op("quantizer", "DS_BUILD_QUANTIZER", "quantizer"),
    Op("fp_quantizer", "DS_BUILD_FP_QUANTIZER", "fp_quantizer"),
    # DeepSpeed's build variable of its aio op (here: no libaio, a thread pool over O_DIRECT)
    Op("async_io", "DS_BUILD_AIO", "async_io", isa_variants=False),
)
BY_NAME = {op.name: op for op in OPS}


def csrc_dir() -> pathlib.Path:
    """The C++ sources: inside the installed package (wheel), else the checkout's csrc/."""
    here = pathlib.Path(__file__).resolve().parent
    for cand in (here / "csrc", here.parent.parent / "csrc"):
        if (cand / "common").is_dir():
            return cand
    raise RuntimeError(
        f"ds-ops-cpu: C++ sources not found (looked in {here / 'csrc'} and {here.parent.parent / 'csrc'}). "
        "Fix: reinstall ds-ops-cpu."
    )


def isas(machine: str | None = None) -> tuple[str, ...]:
    """ISA variants compiled on this architecture, best first."""
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i686", "i386"):
        return tuple(X86_ISAS)
    return ("scalar",)


def units(op: Op, source_hash: str | None = None) -> list[tuple[str, str, tuple[str, ...]]]:
    """(source path, object name, extra flags) of each translation unit of ``op``."""
    root = csrc_dir()
    kernel = str(root / op.folder / f"{op.folder}_kernel.cpp")
    binding = str(root / op.folder / f"{op.folder}_binding.cpp")
    out = []
    have = []
    for isa in isas() if op.isa_variants else ():
        out.append((kernel, f"{op.folder}_{isa}", (f"-DDS_ISA={isa}", *X86_ISAS.get(isa, ()))))
        if isa != "scalar":
            have.append(f"-DDS_HAVE_{isa.upper()}")
    if not op.isa_variants:
        out.append((kernel, f"{op.folder}_kernel", ()))
    # Note: the binding is pybind11 glue with no hot loop; -O1 halves its compile time, which
    # dominates the JIT build, without touching the kernels' -O3.
    defines = ["-O1", *have]
    if source_hash is not None:
        defines.append(f'-DDS_SOURCE_HASH="{source_hash}"')
    out.append((binding, f"{op.folder}_binding", tuple(defines)))
    return out


def hashed_files(op: Op) -> list[pathlib.Path]:
    root = csrc_dir()
    return sorted([*(root / "common").glob("*.*"), *(root / op.folder).glob("*.*")])


def source_hash(op: Op) -> str:
    """Hash of the op's sources and flags (not of torch: the modules do not link libtorch)."""
    h = hashlib.sha256()
    for f in hashed_files(op):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(repr((COMMON_FLAGS, platform.machine())).encode())
    h.update(repr([(pathlib.Path(s).name, n, f) for s, n, f in units(op)]).encode())
    return h.hexdigest()[:16]
