"""The op-builder base class.

A builder describes one native op: where its sources are, how to compile them, whether this
machine can run it (:meth:`is_compatible`), whether a prebuilt module shipped with the wheel
(:meth:`is_built`), and :meth:`load`, which returns the loaded module. Builders are registered by
ops packages under the ``deepspeed.op_builders`` entry-point group as ``<accelerator>.<NAME>``.

:meth:`OpBuilder.load` prefers the prebuilt module when its embedded ``SOURCE_HASH`` matches the
sources beside it; otherwise it JIT-builds with ninja into ``<cache>/<NAME>-<key>/`` (through
:mod:`deepspeed.ops.op_builder._native`, the helper the wheel build hooks share), where the key hashes the sources and flags, the torch version, the
Python ABI and the CPU architecture / ISA variants. A file lock makes concurrent ranks build once.
Every knob is read from :mod:`deepspeed.ops.op_builder._knobs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import os
import pathlib
import platform
import shutil
import sysconfig
import threading
import time
from typing import Any, Iterator

from deepspeed.ops.op_builder import _knobs, _native


@dataclasses.dataclass(frozen=True)
class CompileUnit:
    """One translation unit: a source compiled with extra flags into ``<name>.o``."""

    source: str
    name: str
    flags: tuple[str, ...] = ()


_process_lock = threading.Lock()
_loaded: dict[str, Any] = {}


@contextlib.contextmanager
def _file_lock(path: pathlib.Path) -> Iterator[None]:
    """An exclusive lock held across processes (ranks) while one of them builds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class OpBuilder:
    """Base of every op builder. Subclasses set ``NAME`` and ``BUILD_VAR`` and implement
    :meth:`absolute_name` and :meth:`sources` (or :meth:`compile_units`)."""

    DS_PLUGIN_API = "1.0"
    #: Op name, also the entry-point suffix (``cpu.cpu_adam`` -> ``cpu_adam``).
    NAME: str = ""
    #: Environment variable that turns the ahead-of-time build of this op on (``DS_BUILD_CPU_ADAM``).
    BUILD_VAR: str = ""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.NAME
        self.jit_mode = False
        self.error_log: str | None = None

    # ---- description (subclasses) ----
    def absolute_name(self) -> str:
        """Import name of the prebuilt module (``ds_ops_cpu._prebuilt.cpu_adam_op``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement absolute_name()")

    def sources(self) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} must implement sources()")

    def include_paths(self) -> list[str]:
        return []

    def cxx_args(self) -> list[str]:
        return ["-O3", "-std=c++17", "-fPIC", "-fvisibility=hidden", "-DNDEBUG"]

    def extra_ldflags(self) -> list[str]:
        return []

    def module_name(self) -> str:
        """File/module name of the compiled extension (the ``PyInit_`` suffix)."""
        return self.absolute_name().rsplit(".", 1)[-1]

    def compile_units(self) -> list[CompileUnit]:
        """Translation units; by default each source once with :meth:`cxx_args`."""
        return [CompileUnit(src, f"{pathlib.Path(src).stem}_{i}") for i, src in enumerate(self.sources())]

    def hashed_files(self) -> list[str]:
        """Files whose content keys the build (sources; subclasses add headers)."""
        return sorted(set(self.sources()))

    def source_hash(self) -> str:
        """Hash of the sources and flags; the prebuilt module embeds it as ``SOURCE_HASH``."""
        h = hashlib.sha256()
        for f in self.hashed_files():
            h.update(pathlib.Path(f).name.encode())
            h.update(pathlib.Path(f).read_bytes())
        for unit in self.compile_units():
            h.update(repr((pathlib.Path(unit.source).name, unit.name, unit.flags)).encode())
        h.update(repr((self.cxx_args(), self.extra_ldflags())).encode())
        return h.hexdigest()[:16]

    def isa_tag(self) -> str:
        """CPU architecture / ISA part of the cache key."""
        return platform.machine() or "unknown"

    # ---- status ----
    def is_compatible(self, verbose: bool = False) -> bool:
        """Whether this machine can build and run the op."""
        return True

    def compatibility_notes(self) -> str:
        """Why the op is or is not compatible, for ``ds_report``."""
        return ""

    def _prebuilt(self) -> Any | None:
        """The prebuilt module when it is installed and built from these sources, else None."""
        if _knobs.skip_prebuilt():
            return None
        try:
            if importlib.util.find_spec(self.absolute_name()) is None:
                return None
        except (ImportError, ValueError):
            return None
        try:
            module = importlib.import_module(self.absolute_name())
        except ImportError:
            return None
        if getattr(module, "SOURCE_HASH", None) != self.source_hash():
            return None
        return module

    def is_built(self) -> bool:
        """Whether a prebuilt module matching these sources is installed (no compile needed)."""
        return self._prebuilt() is not None

    # ---- JIT ----
    def cache_key(self) -> str:
        import torch

        h = hashlib.sha256()
        h.update(
            repr(
                (
                    self.source_hash(),
                    torch.__version__,
                    sysconfig.get_config_var("EXT_SUFFIX"),
                    self.isa_tag(),
                    _knobs.cxx(),
                )
            ).encode()
        )
        return h.hexdigest()[:16]

    def build_dir(self) -> pathlib.Path:
        """Where the JIT build of this op lives: ``<cache>/<NAME>-<key>``."""
        return _knobs.cache_dir() / f"{self.name}-{self.cache_key()}"

    def _module_path(self, build_dir: pathlib.Path) -> pathlib.Path:
        return build_dir / (self.module_name() + sysconfig.get_config_var("EXT_SUFFIX"))

    def _fail(self, cause: str, fix: str) -> RuntimeError:
        self.error_log = cause
        return RuntimeError(f"op '{self.name}' could not be built: {cause}\nFix: {fix}")

    def _ninja_text(self, build_dir: pathlib.Path, cxx: str) -> str:
        includes = [f"-I{p}" for p in [*self.include_paths(), *_native.python_includes()]]
        units = [
            _native.Unit(u.source, u.name, (*self.cxx_args(), *u.flags, *includes)) for u in self.compile_units()
        ]
        # Note: the linker writes a temporary name that jit_build renames into place, so a process
        # that checks for the module without the lock never sees a half-written file.
        out = self._module_path(build_dir).name + ".partial"
        return _native.ninja_text(units, out, cxx, self.extra_ldflags())

    def jit_build(self, verbose: bool = False) -> pathlib.Path:
        """Compile into the cache (once across concurrent processes) and return the module path."""
        build_dir = self.build_dir()
        target = self._module_path(build_dir)
        if target.exists():
            return target
        with _file_lock(build_dir.parent / f"{build_dir.name}.lock"):
            # Note: a rank that waited on the lock finds the module its peer built and returns.
            if target.exists():
                return target
            cxx = _knobs.cxx()
            if shutil.which(cxx) is None:
                raise self._fail(
                    f"no C++ compiler found (CXX={cxx!r} is not on PATH)",
                    "install one (e.g. `apt-get install g++`) or point CXX at it; "
                    "or install a ds-ops wheel that ships the op prebuilt.",
                )
            ninja = _native.find_ninja()
            if ninja is None:
                raise self._fail("ninja is not installed", "pip install ninja")
            build_dir.mkdir(parents=True, exist_ok=True)
            (build_dir / "build.ninja").write_text(self._ninja_text(build_dir, cxx))
            jobs = _knobs.max_jobs()
            start = time.perf_counter()
            proc = _native.run_ninja(ninja, build_dir, jobs)
            elapsed = time.perf_counter() - start
            partial = target.with_name(target.name + ".partial")
            if proc.returncode == 0 and partial.exists():
                os.replace(partial, target)
            if proc.returncode != 0 or not target.exists():
                raise self._fail(
                    f"the compiler failed (ninja exit {proc.returncode}) in {build_dir}:\n"
                    f"{_native.tail(proc.stdout + proc.stderr)}",
                    f"fix the compiler error above (a C++17 compiler is needed: g++ >= 12 or clang >= 15), "
                    f"or set CXX to another compiler; remove {build_dir} to retry. The op's callers fall "
                    f"back to PyTorch meanwhile.",
                )
            with open(build_dir / "build.log", "a") as log:
                log.write(f"built by pid {os.getpid()} in {elapsed:.2f}s with {jobs} jobs\n")
            if verbose:
                from deepspeed.utils.logging import logger

                logger.info(f"op '{self.name}' JIT-built in {elapsed:.1f}s ({build_dir})")
        return target

    def load(self, verbose: bool = True) -> Any:
        """Return the loaded op module: the prebuilt one, else a JIT build from the cache."""
        with _process_lock:
            key = f"{type(self).__module__}.{type(self).__qualname__}:{self.name}"
            if key in _loaded:
                return _loaded[key]
        module = self._prebuilt()
        if module is None:
            self.jit_mode = True
            path = self.jit_build(verbose=verbose)
            spec = importlib.util.spec_from_file_location(self.module_name(), path)
            if spec is None or spec.loader is None:
                raise self._fail(f"cannot import the built module {path}", f"remove {path.parent} and retry")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        with _process_lock:
            _loaded.setdefault(key, module)
            return _loaded[key]


def _clear_loaded() -> None:
    """Forget modules loaded in this process (tests that switch cache dirs or knobs)."""
    with _process_lock:
        _loaded.clear()


__all__ = ["CompileUnit", "OpBuilder"]
