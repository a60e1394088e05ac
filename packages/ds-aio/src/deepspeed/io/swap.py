"""Tensor swapping to files on a local (NVMe) disk: the swap folder, aligned buffer pools and a
tensor swapper with asynchronous reads and writes.

The I/O goes through DeepSpeed's ``AsyncIOBuilder().load().aio_handle(...)`` (provided by the
installed ops package: ds-ops-cpu's ``async_io`` op), configured from the ``aio`` ds_config
section.
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import dataclasses
import os
import shutil
import uuid
import warnings
import weakref
from typing import Any, Mapping

import torch

#: aio settings used when a config has no ``aio`` section (DeepSpeed's defaults).
AIO_DEFAULTS = {"block_size": 1048576, "queue_depth": 8, "intra_op_parallelism": 1, "single_submit": False,
                "overlap_events": True}


def aio_module():
    """The loaded async I/O op (``AsyncIOBuilder().load()``); a RuntimeError with the fix when no
    installed ops package provides it."""
    from deepspeed.ops.op_builder import AsyncIOBuilder

    return AsyncIOBuilder().load()


def aio_settings(aio_config: Mapping[str, Any] | None) -> dict:
    """The handle's five settings from an ``aio`` config block (legacy ``thread_count`` honoured)."""
    cfg = dict(AIO_DEFAULTS)
    for key, value in dict(aio_config or {}).items():
        if key == "thread_count" and value is not None:
            cfg["intra_op_parallelism"] = int(value)
        elif key in cfg and value is not None:
            cfg[key] = value
    return cfg


def new_handle(aio_config: Mapping[str, Any] | None = None):
    s = aio_settings(aio_config)
    return aio_module().aio_handle(int(s["block_size"]), int(s["queue_depth"]), bool(s["single_submit"]),
                                   bool(s["overlap_events"]), int(s["intra_op_parallelism"]))


class SwapFolder:
    """A private folder under ``nvme_path`` for one process's swap files, removed on :meth:`close`,
    when the object is collected, and at interpreter exit.

    ``nvme_path`` must exist, be a folder and be writable; each problem is a ValueError naming
    ``key`` (the config key), the value and the fix. Where the filesystem refuses O_DIRECT
    (tmpfs on older kernels, some network filesystems) I/O is buffered, with a warning.
    """

    def __init__(self, nvme_path, key: str = "nvme_path", tag: str = "swap", rank: int = 0):
        if nvme_path is None or str(nvme_path) == "":
            raise ValueError(f"{key} is not set; NVMe offload needs a folder on a local disk. Fix: set {key} to an "
                             f"existing writable folder, e.g. \"{key}\": \"/local_nvme\".")
        path = os.path.abspath(os.fspath(nvme_path))
        if not os.path.exists(path):
            raise ValueError(f"{key}={str(nvme_path)!r} does not exist. Fix: create the folder (mkdir -p {path}) or "
                             f"point {key} at an existing folder on a local NVMe disk.")
        if not os.path.isdir(path):
            raise ValueError(f"{key}={str(nvme_path)!r} is not a folder. Fix: point {key} at a folder.")
        self.path = os.path.join(path, f"{tag}_rank{rank}_{os.getpid()}_{uuid.uuid4().hex[:8]}")
        try:
            os.mkdir(self.path)
        except OSError as exc:
            raise ValueError(f"{key}={str(nvme_path)!r} is not writable ({exc.strerror}). Fix: grant write access "
                             f"or choose another folder for {key}.") from None
        self.direct_io = bool(aio_module().direct_io_supported(self.path))
        if not self.direct_io:
            warnings.warn(f"{key}={str(nvme_path)!r}: the filesystem refuses O_DIRECT, so swap I/O is buffered (it "
                          "goes through the page cache, which uses host memory and is slower). Fix: use a folder "
                          "on a local ext4/xfs NVMe disk.", RuntimeWarning, stacklevel=2)
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, True)
        atexit.register(self._finalizer)
        # Note: processes started by multiprocessing (torch.multiprocessing.spawn, test harnesses)
        # leave through os._exit, which skips atexit but runs multiprocessing's exit finalizers.
        multiprocessing.util.Finalize(self, self._finalizer, exitpriority=10)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def close(self) -> None:
        """Remove the folder and every swap file in it."""
        self._finalizer()


class SwapBufferPool:
    """Reusable 4096-aligned host buffers (so O_DIRECT applies); at most ``count`` are kept free
    in all (the oldest is freed first), so the pool never holds more than that between uses."""

    def __init__(self, handle, count: int = 4):
        self._handle = handle
        self._count = max(1, int(count))
        self._free: list[torch.Tensor] = []

    def get(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        for i, buf in enumerate(self._free):
            if buf.numel() == numel and buf.dtype == dtype:
                return self._free.pop(i)
        return self._handle.new_cpu_locked_tensor(numel, torch.empty(0, dtype=dtype))

    def put(self, buf: torch.Tensor) -> None:
        self._free.append(buf)
        while len(self._free) > self._count:
            self._handle.free_cpu_locked_tensor(self._free.pop(0))

    def clear(self) -> None:
        for buf in self._free:
            self._handle.free_cpu_locked_tensor(buf)
        self._free.clear()


@dataclasses.dataclass
class _Record:
    path: str
    shape: torch.Size
    dtype: torch.dtype
    valid: bool = False  # the file holds a complete copy
    error: str = ""


class TensorSwapper:
    """Writes named host tensors to files in a :class:`SwapFolder` and reads them back.

    ``swap_out(key, t)`` and ``swap_in(key)`` are asynchronous when ``async_op`` is true;
    :meth:`wait` completes them. A write that fails (disk full) raises a RuntimeError naming the
    file, and that file is marked invalid: a later ``swap_in`` of it raises instead of returning
    partial data.
    """

    def __init__(self, folder: SwapFolder, aio_config: Mapping[str, Any] | None = None, buffer_count: int = 4):
        self.folder = folder
        self.handle = new_handle(aio_config)
        self.pool = SwapBufferPool(self.handle, buffer_count)
        self._records: dict[str, _Record] = {}
        self._writing: list[_Record] = []
        self.bytes_written = 0
        self.bytes_read = 0

    def __contains__(self, key: str) -> bool:
        rec = self._records.get(key)
        return rec is not None and rec.valid

    def _record(self, key: str, t: torch.Tensor) -> _Record:
        rec = self._records.get(key)
        if rec is None or rec.shape != t.shape or rec.dtype != t.dtype:
            name = "".join(c if c.isalnum() or c in "._-" else "_" for c in key)
            rec = _Record(self.folder.file(f"{name}.swp"), t.shape, t.dtype)
            self._records[key] = rec
        return rec

    def swap_out(self, key: str, tensor: torch.Tensor, async_op: bool = False) -> None:
        """Write ``tensor`` (contiguous, host) to the key's swap file."""
        t = tensor.detach()
        if t.device.type != "cpu" or not t.is_contiguous():
            t = t.to("cpu").contiguous()
        rec = self._record(key, t)
        rec.valid, rec.error = False, ""
        try:
            self.handle.pwrite(t, rec.path, False, async_op, 0)
        except RuntimeError as exc:
            rec.error = str(exc)
            raise RuntimeError(f"swap-out of {key!r} failed: {exc}") from None
        self.bytes_written += t.numel() * t.element_size()
        if async_op:
            self._writing.append(rec)
        else:
            rec.valid = True

    def swap_in(self, key: str, out: torch.Tensor | None = None, async_op: bool = False) -> torch.Tensor:
        """Read the key's swap file into ``out`` (or a pooled aligned buffer) and return it."""
        rec = self._records.get(key)
        if rec is None:
            raise KeyError(f"swap-in of {key!r}: nothing was swapped out under that name")
        if not rec.valid:
            why = rec.error or "its write has not completed"
            raise RuntimeError(f"swap-in of {key!r}: the swap file {rec.path} is not a complete copy ({why}); it is "
                               "not used")
        if out is None:
            out = self.pool.get(rec.shape.numel(), rec.dtype).view(rec.shape)
        self.handle.pread(out, rec.path, False, async_op, 0)
        self.bytes_read += out.numel() * out.element_size()
        return out

    def wait(self) -> int:
        """Complete every asynchronous swap; a failed write raises RuntimeError naming its file."""
        writing, self._writing = self._writing, []
        try:
            n = self.handle.wait()
        except RuntimeError as exc:
            for rec in writing:
                if rec.path in str(exc):
                    rec.error = str(exc)
                else:
                    rec.valid = True
            raise RuntimeError(f"swap I/O failed: {exc}") from None
        for rec in writing:
            rec.valid = True
        return n

    def release(self, buf: torch.Tensor) -> None:
        """Give a buffer returned by :meth:`swap_in` back to the pool."""
        self.pool.put(buf.view(-1) if buf.is_contiguous() else buf)

    def close(self) -> None:
        try:
            self.handle.wait()
        except RuntimeError:
            pass
        self.pool.clear()
        self.folder.close()
