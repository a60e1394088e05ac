"""The manifest of a checkpoint tag: ``<save_dir>/<tag>/ds_manifest.json``.

Written by rank 0 after every rank's files are durable and before ``latest`` names the tag::

    {"format": 1, "tag": "global_step10", "world_size": 2, "dp_world_size": 2, "mp_world_size": 1,
     "zero_stage": 2, "checksum": "crc32",
     "files": {"mp_rank_00_model_states.pt": {"size": 5123, "crc32": "9a0c31f2"}, ...}}

Load checks that every listed file is there with its size (a missing or truncated file is refused
by name before anything is read) and the CRC-32 of each file as it is read (a flipped byte is
refused by name). Checkpoints without a manifest (DeepSpeed's, or older ones) load unverified.

# Note: CRC-32 (zlib) is computed while ``torch.save`` writes, ~2 GB/s on one core; it catches
# accidental damage (truncation, bit flips), not tampering, which is what weights_only loading
# guards against.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import zlib
from typing import Any, Iterable

from deepspeed.runtime.checkpoint_engine._safe_load import CheckpointError

MANIFEST_NAME = "ds_manifest.json"
FORMAT = 1
_CHUNK = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """Size in bytes and CRC-32 (8 hex digits) of one checkpoint file."""

    size: int
    crc32: str

    def to_json(self) -> dict:
        return {"size": self.size, "crc32": self.crc32}

    def verify(self, path: str) -> None:
        """Raise :class:`CheckpointError` naming ``path`` unless it has this size and checksum."""
        actual = os.path.getsize(path)
        if actual != self.size:
            raise CheckpointError(f"checkpoint file {path} is truncated or overwritten: it has {actual} bytes, "
                                  f"its manifest says {self.size}; load another tag, or save it again")
        crc = file_record(path).crc32
        if crc != self.crc32:
            raise CheckpointError(f"checkpoint file {path} is corrupt: its CRC-32 is {crc}, its manifest says "
                                  f"{self.crc32}; load another tag, or save it again")


def _hex(crc: int) -> str:
    return f"{crc & 0xFFFFFFFF:08x}"


def file_record(path: str) -> FileRecord:
    """Size and CRC-32 of the file at ``path`` (read in 16 MiB chunks)."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return FileRecord(size, _hex(crc))


_THREADED = 1 << 20
_POOL = None


def _crc_pool():
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ds-ckpt-crc")
    return _POOL


class HashingWriter:
    """A binary file wrapper for ``torch.save``: counts and CRCs the bytes as they are written, and
    keeps the first ``OSError`` of a write (torch reports it as an unrelated RuntimeError)."""

    def __init__(self, f) -> None:
        self._f = f
        self._crc = 0
        self.size = 0
        self.error: OSError | None = None

    def write(self, data) -> int:
        # Note: a large chunk (a tensor's storage) is CRC'd on a helper thread while this thread
        # copies it into the file; zlib and the write both release the GIL, so on two or more
        # cores the checksum hides behind the write. The chunk is only used during this call.
        pending = _crc_pool().submit(zlib.crc32, data, self._crc) if len(data) >= _THREADED else None
        try:
            n = self._f.write(data)
        except OSError as exc:
            if self.error is None:
                self.error = exc
            raise
        finally:
            if pending is not None:
                crc = pending.result()
        self._crc = crc if pending is not None else zlib.crc32(data, self._crc)
        self.size += len(data)
        return n

    def flush(self) -> None:
        self._f.flush()

    def record(self) -> FileRecord:
        return FileRecord(self.size, _hex(self._crc))


@dataclasses.dataclass
class Manifest:
    """What a tag holds: the job's sizes, the ZeRO stage, and every file with size and CRC-32."""

    tag: str
    world_size: int
    dp_world_size: int
    mp_world_size: int
    zero_stage: int
    files: dict[str, FileRecord]

    def to_json(self) -> dict:
        return {"format": FORMAT, "tag": self.tag, "world_size": self.world_size, "dp_world_size": self.dp_world_size,
                "mp_world_size": self.mp_world_size, "zero_stage": self.zero_stage, "checksum": "crc32",
                "files": {name: rec.to_json() for name, rec in sorted(self.files.items())}}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=1).encode()

    @classmethod
    def read(cls, ckpt_dir: str) -> "Manifest | None":
        """The manifest of ``ckpt_dir``, or None when the tag has none (DeepSpeed's or older checkpoints)."""
        path = os.path.join(ckpt_dir, MANIFEST_NAME)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                data = json.load(f)
            files = {str(name): FileRecord(int(rec["size"]), str(rec["crc32"])) for name, rec in data["files"].items()}
            return cls(str(data["tag"]), int(data["world_size"]), int(data["dp_world_size"]),
                       int(data["mp_world_size"]), int(data["zero_stage"]), files)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"checkpoint manifest {path} is unreadable ({type(exc).__name__}: {exc}); "
                                  "the tag is damaged: load another tag") from None

    def names_matching(self, prefix: str, suffix: str) -> list[str]:
        return sorted(n for n in self.files if n.startswith(prefix) and n.endswith(suffix))

    def check_present(self, ckpt_dir: str) -> None:
        """Every listed file exists with its recorded size; else one error naming each bad file."""
        problems = []
        for name, rec in sorted(self.files.items()):
            path = os.path.join(ckpt_dir, name)
            if not os.path.exists(path):
                problems.append(f"{path} is missing")
            elif os.path.getsize(path) != rec.size:
                problems.append(f"{path} has {os.path.getsize(path)} bytes, the manifest says {rec.size} (truncated)")
        if problems:
            raise CheckpointError(f"checkpoint {ckpt_dir} (saved by {self.world_size} rank(s), ZeRO stage "
                                  f"{self.zero_stage}) is incomplete: " + "; ".join(problems)
                                  + ". Load another tag, or save it again.")

    def record_for(self, path: str, ckpt_dir: str) -> FileRecord | None:
        if os.path.dirname(os.path.abspath(path)) != os.path.abspath(ckpt_dir):
            return None
        return self.files.get(os.path.basename(path))


def merge_records(per_rank: Iterable[dict[str, Any]]) -> dict[str, FileRecord]:
    """The union of each rank's ``{basename: FileRecord}``."""
    out: dict[str, FileRecord] = {}
    for records in per_rank:
        out.update(records or {})
    return out
