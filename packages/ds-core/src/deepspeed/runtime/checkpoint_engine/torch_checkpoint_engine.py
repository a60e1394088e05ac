"""The default checkpoint engine: ``torch.save`` to a temporary file, fsync, then rename.

A process killed mid-write leaves at most a ``*.tmp-*`` file beside the previous complete files;
loading uses ``torch.load(weights_only=True)``, so a checkpoint cannot run code when read.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine
from deepspeed.utils.logging import logger


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


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + fsync + rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


class TorchCheckpointEngine(CheckpointEngine):
    def create(self, tag: str) -> None:
        logger.debug(f"[Torch] Checkpoint {tag} is about to be saved!")

    def save(self, state_dict: Any, path: str) -> None:
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            torch.save(state_dict, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, path: str, map_location: Any = None) -> Any:
        return torch.load(path, map_location=map_location, weights_only=True)

    def commit(self, tag: str) -> bool:
        logger.info(f"[Torch] Checkpoint {tag} is ready now!")
        return True
