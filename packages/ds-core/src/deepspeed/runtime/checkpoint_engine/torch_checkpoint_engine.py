"""The default checkpoint engine: ``torch.save`` to a temporary file, fsync, then rename.

A process killed mid-write leaves at most a ``<file>.tmp-<pid>`` beside the previous complete
files, and the next save removes those of processes that are gone (:func:`remove_stale_tmp`).
A write that fails removes its temporary file; a full disk is reported as such, with the path and
the bytes the file needs. Each file's size and CRC-32 are computed while it is written
(:meth:`TorchCheckpointEngine.records`, for the tag's manifest). Loading goes through
:func:`~deepspeed.runtime.checkpoint_engine._safe_load.safe_load` (``weights_only=True``), so a
checkpoint cannot run code when read.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from typing import Any

import torch

from deepspeed.runtime.checkpoint_engine._manifest import FileRecord, HashingWriter
from deepspeed.runtime.checkpoint_engine._safe_load import safe_load
from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine
from deepspeed.utils.logging import logger

_TMP = re.compile(r"\.tmp-(\d+)$")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_path(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


def _state_bytes(obj: Any, seen: set | None = None) -> int:
    """Bytes of tensor storage in ``obj`` (nested containers): what a save of it needs, roughly."""
    seen = set() if seen is None else seen
    if torch.is_tensor(obj):
        try:
            key = obj.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):
            return obj.numel() * obj.element_size()
        if key in seen and key != 0:
            return 0
        seen.add(key)
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_state_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_state_bytes(v, seen) for v in obj)
    return 0


def _disk_full(path: str, needed: int, written: int) -> OSError:
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
        free_text = f"{free} bytes are free"
    except OSError:
        free_text = "the free space is unknown"
    return OSError(errno.ENOSPC, f"No space left on device while saving checkpoint file {path}: it needs about "
                   f"{needed} bytes, {written} were written before the disk filled and {free_text}; free space or "
                   "save to another folder (the previous checkpoint is untouched)", path)


def _write(path: str, write) -> FileRecord:
    """Write ``path`` atomically through ``write(file_like)``; remove the temporary on any error."""
    tmp = _tmp_path(path)
    w = None
    try:
        with open(tmp, "wb") as f:
            w = HashingWriter(f)
            write(w)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.remove(tmp)
        except OSError:
            pass
        cause = exc if isinstance(exc, OSError) else (w.error if w is not None else None)
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(path, getattr(write, "needed", 0) or (w.size if w else 0), w.size if w else 0) from exc
        if isinstance(cause, OSError) and cause is not exc:
            raise OSError(cause.errno, f"cannot write checkpoint file {path}: {cause.strerror}", path) from exc
        raise
    return w.record()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + fsync + rename)."""

    def write(f):
        f.write(data)

    write.needed = len(data)
    _write(path, write)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(save_dir: str) -> list[str]:
    """Remove ``*.tmp-<pid>`` files of processes that no longer run from ``save_dir`` and its tag
    folders (left by a crash during an earlier save); returns the removed paths."""
    removed = []
    if not os.path.isdir(save_dir):
        return removed
    folders = [save_dir] + [e.path for e in os.scandir(save_dir) if e.is_dir(follow_symlinks=False)]
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            m = _TMP.search(entry.name)
            if m and entry.is_file(follow_symlinks=False) and not _pid_alive(int(m.group(1))):
                try:
                    os.remove(entry.path)
                    removed.append(entry.path)
                except OSError:
                    pass
    if removed:
        logger.info(f"removed {len(removed)} temporary file(s) left by an interrupted save: {removed}")
    return removed


class TorchCheckpointEngine(CheckpointEngine):
    def __init__(self, config_params: Any = None):
        super().__init__(config_params)
        self._records: dict[str, FileRecord] = {}

    def create(self, tag: str) -> None:
        self._records = {}
        logger.debug(f"[Torch] Checkpoint {tag} is about to be saved!")

    def save(self, state_dict: Any, path: str) -> None:
        def write(f):
            torch.save(state_dict, f)

        write.needed = _state_bytes(state_dict)
        self._records[os.path.abspath(path)] = _write(path, write)

    def records(self) -> dict[str, FileRecord]:
        return dict(self._records)

    def load(self, path: str, map_location: Any = None) -> Any:
        return safe_load(path, map_location=map_location, unsafe=self.unsafe_load, expected=self.expected_record(path))

    def commit(self, tag: str) -> bool:
        logger.info(f"[Torch] Checkpoint {tag} is ready now!")
        return True
