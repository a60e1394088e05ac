"""Op builder of the async I/O op, registered as ``cpu.async_io`` (DeepSpeed's ``AsyncIOBuilder``;
host op, so device accelerators use it too).

Built like the CPU optimizers (one pybind11 module, no libtorch, no libaio: prebuilt in the
wheel, else JIT-built), but with a single kernel variant. ``load()`` returns an
:class:`~ds_ops_cpu.aio_handle.AsyncIOModule` whose ``aio_handle`` takes torch tensors as
DeepSpeed's does; where the native module cannot be built it returns the pure-Python engine
with a warning.
"""

from __future__ import annotations

import functools
import platform
import warnings

from ds_ops_cpu.op_builders import _CPUOptimizerBuilder


class CPUAsyncIOBuilder(_CPUOptimizerBuilder):
    DS_PLUGIN_API = "1.0"
    NAME = "async_io"
    BUILD_VAR = "DS_BUILD_AIO"

    def isa_tag(self) -> str:
        return f"{platform.machine()}-generic"

    def native_load(self, verbose: bool = True):
        """The native ``async_io_op`` module (prebuilt or JIT); raises when it cannot be built."""
        return _CPUOptimizerBuilder.load(self, verbose)

    def load(self, verbose: bool = True):
        return _module(self)

    jit_load = load

    def compatibility_notes(self) -> str:
        note = ("engine threadpool: O_DIRECT pread/pwrite of aligned parts, buffered tails, "
                "intra_op_parallelism*queue_depth I/O threads; io_uring not used; no libaio needed")
        if not self.is_built() and not super().is_compatible():
            note += "; no compiler or pybind11: pure-Python engine (buffered I/O, slower)"
        return note

    def is_compatible(self, verbose: bool = False) -> bool:
        # Note: the pure-Python engine runs anywhere, so the op is always usable.
        return True


@functools.cache
def _module_for(native):
    from ds_ops_cpu.aio_handle import AsyncIOModule

    return AsyncIOModule(native)


def _module(builder: CPUAsyncIOBuilder):
    try:
        native = builder.native_load(verbose=False)
    except Exception as exc:  # no compiler, no ninja, compile error
        warnings.warn(f"async_io: the native op is unavailable ({str(exc).splitlines()[0]}); using the pure-Python "
                      "engine (buffered I/O, slower). Fix: install g++ and ninja, or a ds-ops-cpu wheel with the op "
                      "prebuilt.", RuntimeWarning, stacklevel=3)
        native = None
    return _module_for(native)
