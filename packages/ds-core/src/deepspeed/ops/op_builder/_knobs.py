"""Every environment variable that steers building and loading native ops, with its default.

This is the one place these knobs are defined. It imports only the standard library, so the
wheel build hooks of the ops packages can load it by path before torch or ds-core is installed.

=======================  ===========  ===================================================
variable                 default      meaning
=======================  ===========  ===================================================
``DS_BUILD_OPS``         ``1``        wheel build: compile every op ahead of time (``0``:
                                      ship sources only, ops JIT-build on first use)
``DS_BUILD_CPU_ADAM``    DS_BUILD_OPS wheel build: compile ``cpu_adam`` ahead of time
``DS_BUILD_CPU_ADAGRAD`` DS_BUILD_OPS wheel build: compile ``cpu_adagrad`` ahead of time
``DS_BUILD_CPU_LION``    DS_BUILD_OPS wheel build: compile ``cpu_lion`` ahead of time
``MAX_JOBS``             from cores   parallel compile jobs (cores, capped at 1 job per 1.5 GiB
                         and memory   of RAM)
``DS_CPU_ISA``           ``auto``     CPU kernel variant: ``auto`` (best this CPU runs),
                                      ``avx512``, ``avx2`` or ``scalar``
``DS_OPS_CACHE_DIR``     see below    JIT cache; else ``TORCH_EXTENSIONS_DIR``; else
                                      ``~/.cache/deepspeed/ops``
``DS_OPS_SKIP_PREBUILT`` ``0``        ``1``: ignore ops shipped in wheels, always JIT-build
``CXX``                  ``c++``      C++ compiler used by JIT builds and wheel builds
=======================  ===========  ===================================================
"""

from __future__ import annotations

import os
import pathlib

#: name -> (default, one-line description). The default ``None`` means "derived" (see the getter).
KNOBS: dict[str, tuple[str | None, str]] = {
    "DS_BUILD_OPS": ("1", "compile every op into the wheel (0: JIT on first use)"),
    "DS_BUILD_CPU_ADAM": (None, "compile cpu_adam into the wheel (default: DS_BUILD_OPS)"),
    "DS_BUILD_CPU_ADAGRAD": (None, "compile cpu_adagrad into the wheel (default: DS_BUILD_OPS)"),
    "DS_BUILD_CPU_LION": (None, "compile cpu_lion into the wheel (default: DS_BUILD_OPS)"),
    "MAX_JOBS": (None, "parallel compile jobs (default: cores, at most one per 1.5 GiB RAM)"),
    "DS_CPU_ISA": ("auto", "CPU kernel variant: auto, avx512, avx2 or scalar"),
    "DS_OPS_CACHE_DIR": (None, "JIT build cache (default: TORCH_EXTENSIONS_DIR or ~/.cache/deepspeed/ops)"),
    "DS_OPS_SKIP_PREBUILT": ("0", "1: ignore prebuilt ops from wheels and JIT-build instead"),
    "CXX": ("c++", "C++ compiler for JIT and wheel builds"),
}

ISA_CHOICES = ("auto", "avx512", "avx2", "scalar")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def raw(name: str) -> str | None:
    """The value of knob ``name`` from the environment, or its default."""
    if name not in KNOBS:
        raise ValueError(f"unknown build knob {name!r}; the knobs are {', '.join(KNOBS)}")
    value = os.environ.get(name)
    return value if value is not None else KNOBS[name][0]


def _flag(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is not a boolean. Fix: set {name}=1 or {name}=0.")


def build_op(build_var: str) -> bool:
    """Whether the wheel build compiles the op whose per-op variable is ``build_var``."""
    value = os.environ.get(build_var) if build_var else None
    if value is not None:
        return _flag(build_var, value)
    return _flag("DS_BUILD_OPS", raw("DS_BUILD_OPS") or "1")


def build_explicitly_requested(build_var: str) -> bool:
    """True when the user set ``build_var`` or ``DS_BUILD_OPS`` to 1: a failed build is then an error."""
    for name in (build_var, "DS_BUILD_OPS"):
        if name and os.environ.get(name) is not None:
            return _flag(name, os.environ[name])
    return False


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def max_jobs() -> int:
    """Parallel compile jobs: ``MAX_JOBS``, else the usable cores capped by RAM (1.5 GiB/job)."""
    value = os.environ.get("MAX_JOBS")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"MAX_JOBS={value!r} is not a positive integer. Fix: set MAX_JOBS=4 (or unset it).")
        return int(value)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    mem = _memory_bytes()
    by_mem = max(1, int(mem // (1.5 * 2**30))) if mem else cores
    return max(1, min(cores, by_mem))


def cpu_isa() -> str:
    """The forced CPU kernel variant, or ``auto``."""
    value = (raw("DS_CPU_ISA") or "auto").strip().lower()
    if value not in ISA_CHOICES:
        raise ValueError(f"DS_CPU_ISA={value!r} is not one of {', '.join(ISA_CHOICES)}. Fix: unset it or pick one of those.")
    return value


def cache_dir() -> pathlib.Path:
    """Root folder of JIT-built ops."""
    value = os.environ.get("DS_OPS_CACHE_DIR") or os.environ.get("TORCH_EXTENSIONS_DIR")
    if value:
        return pathlib.Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "deepspeed" / "ops"


def skip_prebuilt() -> bool:
    return _flag("DS_OPS_SKIP_PREBUILT", raw("DS_OPS_SKIP_PREBUILT") or "0")


def cxx() -> str:
    return raw("CXX") or "c++"
