"""DeepSpeed's ``aio_handle`` over host tensors, on the native ``async_io_op`` module or, where it
cannot be built, a pure-Python engine (``os.pread``/``os.pwrite`` in a thread pool, buffered
I/O, with a warning).

The native engine reads and writes each request in ``block_size`` pieces on a persistent pool of
``intra_op_parallelism * queue_depth`` I/O threads (``single_submit``: ``intra_op_parallelism``
threads), through ``O_DIRECT`` for the parts whose buffer address, file offset and length are
4096-byte aligned, and buffered I/O for unaligned tails or where the filesystem refuses
``O_DIRECT`` (tmpfs). io_uring is not used: ``ENGINE`` says ``threadpool``.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

ALIGNMENT = 4096


def _check_tensor(buffer: Any, what: str):
    import torch

    if not isinstance(buffer, torch.Tensor):
        raise TypeError(f"aio_handle.{what}: buffer must be a torch.Tensor, got {type(buffer).__name__}")
    if buffer.device.type != "cpu":
        raise ValueError(f"aio_handle.{what}: buffer is on {buffer.device}; this handle does host I/O only. Fix: "
                         "pass a CPU tensor (new_cpu_locked_tensor), or use the GDS handle for device tensors.")
    if not buffer.is_contiguous():
        raise ValueError(f"aio_handle.{what}: buffer must be contiguous. Fix: pass tensor.contiguous().")
    return buffer.data_ptr(), buffer.numel() * buffer.element_size()


class _PythonEngine:
    """Pure-Python stand-in of the native handle: same calls, buffered I/O, a thread pool."""

    ENGINE = "python"

    def __init__(self, block_size, queue_depth, single_submit, overlap_events, intra_op_parallelism):
        for name, v in (("block_size", block_size), ("queue_depth", queue_depth),
                        ("intra_op_parallelism", intra_op_parallelism)):
            if v <= 0:
                raise ValueError(f"aio_handle: {name} must be > 0, got {v}")
        self._cfg = (block_size, queue_depth, single_submit, overlap_events, intra_op_parallelism)
        self._pool = ThreadPoolExecutor(max_workers=max(1, intra_op_parallelism * (1 if single_submit else
                                                                                      min(queue_depth, 32))))
        self._async: list[Future] = []
        self._lock = threading.Lock()
        self._buffered = 0

    def _piece(self, read: bool, fd: int, view: memoryview, foff: int, path: str) -> None:
        done = 0
        while done < len(view):
            if read:
                n = os.preadv(fd, [view[done:]], foff + done)
                if n == 0:
                    raise RuntimeError(f"read from '{path}': the file ends at offset {foff + done}, before the "
                                       f"requested {len(view) - done} more bytes")
            else:
                n = os.pwrite(fd, view[done:], foff + done)
            done += n

    def submit(self, read, buffer, nbytes, path, file_offset, async_op):
        import ctypes

        flags = os.O_RDONLY if read else os.O_WRONLY | os.O_CREAT
        try:
            fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise RuntimeError(f"aio: cannot open '{path}' for {'reading' if read else 'writing'}: "
                               f"{exc.strerror} (errno {exc.errno})") from None
        view = memoryview((ctypes.c_char * nbytes).from_address(buffer)).cast("B") if nbytes else memoryview(b"")
        bs = self._cfg[0]

        def piece(off):
            try:
                self._piece(read, fd, view[off:off + bs], file_offset + off, path)
            except OSError as exc:
                raise RuntimeError(f"{'read from' if read else 'write to'} '{path}' failed at file offset "
                                   f"{file_offset + off}: {exc.strerror} (errno {exc.errno})") from None

        futures = [self._pool.submit(piece, off) for off in range(0, nbytes, bs)]

        def finish():
            try:
                errors = [f.exception() for f in futures]
            finally:
                os.close(fd)
            errors = [e for e in errors if e is not None]
            if errors:
                raise errors[0]
            with self._lock:
                self._buffered += nbytes

        if not async_op:
            finish()
            return 0
        with self._lock:
            self._async.append(self._pool.submit(lambda: None) if not futures else _Joined(futures, finish))
            return len(self._async)

    def wait(self):
        with self._lock:
            pending, self._async = self._async, []
        errors = []
        for f in pending:
            try:
                f.result()
            except Exception as exc:
                errors.append(str(exc))
        if errors:
            raise RuntimeError("; ".join(errors))
        return len(pending)

    def pending(self):
        with self._lock:
            return len(self._async)

    def block_size(self):
        return self._cfg[0]

    def queue_depth(self):
        return self._cfg[1]

    def single_submit(self):
        return self._cfg[2]

    def overlap_events(self):
        return self._cfg[3]

    def intra_op_parallelism(self):
        return self._cfg[4]

    def num_threads(self):
        return self._pool._max_workers

    def direct_bytes(self):
        return 0

    def buffered_bytes(self):
        return self._buffered


class _Joined:
    """An async request of the Python engine: its pieces' futures and the closing step."""

    def __init__(self, futures, finish):
        self._futures, self._finish, self._done = futures, finish, False

    def result(self):
        if not self._done:
            self._done = True
            self._finish()


class aio_handle:  # noqa: N801 - DeepSpeed's class name
    """DeepSpeed's ``aio_handle(block_size, queue_depth, single_submit, overlap_events,
    intra_op_parallelism)``: reads and writes of contiguous host tensors to files.

    ``sync_*``/``read``/``write`` return 0 when done and raise ``RuntimeError`` naming the file on
    failure (DeepSpeed prints and returns -1); ``async_*`` return at once and :meth:`wait`
    completes them, returning how many finished (and raising if any failed).
    """

    def __init__(self, block_size: int = 1048576, queue_depth: int = 128, single_submit: bool = False,
                 overlap_events: bool = False, intra_op_parallelism: int = 1, *, _native: Any = None):
        args = (int(block_size), int(queue_depth), bool(single_submit), bool(overlap_events),
                int(intra_op_parallelism))
        self._mod = _native
        if _native is not None:
            self._h = _native.NativeHandle(*args)
            self.engine = _native.ENGINE
        else:
            self._h = _PythonEngine(*args)
            self.engine = _PythonEngine.ENGINE
        self._keep: list = []  # tensors of in-flight async requests stay alive until wait()
        self._locked: dict[int, tuple[int, int, bool]] = {}

    # -- getters (DeepSpeed's names) --
    def get_block_size(self) -> int:
        return self._h.block_size()

    def get_queue_depth(self) -> int:
        return self._h.queue_depth()

    def get_single_submit(self) -> bool:
        return self._h.single_submit()

    def get_overlap_events(self) -> bool:
        return self._h.overlap_events()

    def get_intra_op_parallelism(self) -> int:
        return self._h.intra_op_parallelism()

    get_thread_count = get_intra_op_parallelism

    def get_alignment(self) -> int:
        return ALIGNMENT

    def get_num_threads(self) -> int:
        """I/O threads of this handle's pool."""
        return self._h.num_threads()

    def io_bytes(self) -> dict[str, int]:
        """Bytes moved so far through O_DIRECT and through buffered I/O."""
        return {"direct": self._h.direct_bytes(), "buffered": self._h.buffered_bytes()}

    # -- I/O --
    def _io(self, read: bool, buffer, filename, validate: bool, async_op: bool, file_offset: int, what: str) -> int:
        ptr, nbytes = _check_tensor(buffer, what)
        filename = os.fspath(filename)
        if read and validate:
            size = os.path.getsize(filename)
            if size < file_offset + nbytes:
                raise RuntimeError(f"aio_handle.{what}: '{filename}' holds {size} bytes, fewer than the "
                                   f"{file_offset + nbytes} the read needs (offset {file_offset} + {nbytes} bytes)")
        if async_op:
            self._keep.append(buffer)
        try:
            self._h.submit(read, ptr, nbytes, filename, int(file_offset), bool(async_op))
        except RuntimeError:
            if async_op:
                self._keep.pop()
            raise
        return 0

    def read(self, buffer, filename, validate: bool = False) -> int:
        return self._io(True, buffer, filename, validate, False, 0, "read")

    def write(self, buffer, filename, validate: bool = False) -> int:
        return self._io(False, buffer, filename, validate, False, 0, "write")

    def pread(self, buffer, filename, validate: bool = False, async_op: bool = False, file_offset: int = 0) -> int:
        return self._io(True, buffer, filename, validate, async_op, file_offset, "pread")

    def pwrite(self, buffer, filename, validate: bool = False, async_op: bool = False, file_offset: int = 0) -> int:
        return self._io(False, buffer, filename, validate, async_op, file_offset, "pwrite")

    def sync_pread(self, buffer, filename, file_offset: int = 0) -> int:
        return self._io(True, buffer, filename, False, False, file_offset, "sync_pread")

    def sync_pwrite(self, buffer, filename, file_offset: int = 0) -> int:
        return self._io(False, buffer, filename, False, False, file_offset, "sync_pwrite")

    def async_pread(self, buffer, filename, file_offset: int = 0) -> int:
        return self._io(True, buffer, filename, False, True, file_offset, "async_pread")

    def async_pwrite(self, buffer, filename, file_offset: int = 0) -> int:
        return self._io(False, buffer, filename, False, True, file_offset, "async_pwrite")

    def wait(self) -> int:
        try:
            return self._h.wait()
        finally:
            self._keep.clear()

    def pending(self) -> int:
        return self._h.pending()

    # -- locked (page-aligned, mlock'ed where allowed) host tensors --
    def new_cpu_locked_tensor(self, num_elem: int, example_tensor):
        """A ``num_elem`` tensor of ``example_tensor``'s dtype on 4096-aligned host memory (so
        O_DIRECT applies), locked in RAM when RLIMIT_MEMLOCK allows."""
        import torch

        nbytes = int(num_elem) * example_tensor.element_size()
        raw = torch.empty(nbytes + ALIGNMENT, dtype=torch.uint8)
        start = (-raw.data_ptr()) % ALIGNMENT
        t = raw[start:start + nbytes].view(example_tensor.dtype)
        locked = False
        native = self._mod
        if native is not None and nbytes:
            locked = bool(native.lock_memory(t.data_ptr(), nbytes))
        self._locked[t.data_ptr()] = (t.data_ptr(), nbytes, locked)
        return t

    def free_cpu_locked_tensor(self, tensor) -> bool:
        entry = self._locked.pop(tensor.data_ptr(), None)
        if entry is None:
            return False
        native = self._mod
        if entry[2] and native is not None:
            native.unlock_memory(entry[0], entry[1])
        return True


class AsyncIOModule:
    """What ``AsyncIOBuilder().load()`` returns: ``aio_handle`` bound to the native engine (or the
    Python one), ``ENGINE`` naming it, and ``direct_io_supported(folder)``."""

    def __init__(self, native: Any = None):
        self._native = native
        self.ENGINE = native.ENGINE if native is not None else _PythonEngine.ENGINE
        self.SOURCE_HASH = getattr(native, "SOURCE_HASH", None)
        module = self

        class _Handle(aio_handle):
            __doc__ = aio_handle.__doc__

            def __init__(self, block_size=1048576, queue_depth=128, single_submit=False, overlap_events=False,
                         intra_op_parallelism=1):
                super().__init__(block_size, queue_depth, single_submit, overlap_events, intra_op_parallelism,
                                 _native=module._native)

        _Handle.__name__ = _Handle.__qualname__ = "aio_handle"
        self.aio_handle = _Handle

    def direct_io_supported(self, folder) -> bool:
        """Whether O_DIRECT files can be written in ``folder`` (False on tmpfs). Raises
        RuntimeError naming the folder when a file cannot be created there at all."""
        folder = os.fspath(folder)
        if self._native is not None:
            return bool(self._native.direct_io_supported(folder))
        probe = os.path.join(folder, f".ds_aio_probe_{os.getpid()}")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | getattr(os, "O_DIRECT", 0), 0o644)
        except OSError as exc:
            if exc.errno == 22:
                return False
            raise RuntimeError(f"aio: cannot create a file in '{folder}': {exc.strerror} (errno {exc.errno})") \
                from None
        os.close(fd)
        os.unlink(probe)
        return hasattr(os, "O_DIRECT")
