"""The checkpoint-engine interface (DeepSpeed's method names)."""

from __future__ import annotations

import abc
import os
from typing import Any


class CheckpointEngine(abc.ABC):
    """Writes and reads the files of one checkpoint tag.

    The engine calls ``create(tag)``, then ``save(state, path)`` for each file, then
    ``commit(tag)`` once every file of the tag is durable; only after ``commit`` returns True
    does it point ``latest`` at the tag.

    Integrity (optional for other engines): :meth:`records` returns ``{abspath: FileRecord}`` of
    the files saved since ``create`` (the engine hashes the files of an engine that returns
    nothing); while a tag loads, :attr:`manifest` holds its manifest and :meth:`expected_record`
    what a file must match. :attr:`unsafe_load` (ds_config ``checkpoint.unsafe_load``) allows
    unpickling arbitrary objects.
    """

    unsafe_load: bool = False
    manifest: Any = None
    manifest_dir: str | None = None

    def __init__(self, config_params: Any = None):
        self.config_params = config_params

    def create(self, tag: str) -> None:
        """Start writing checkpoint ``tag``."""

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        os.makedirs(path, exist_ok=exist_ok)

    @abc.abstractmethod
    def save(self, state_dict: Any, path: str) -> None:
        """Write ``state_dict`` to ``path`` so that ``path`` is either complete or absent."""

    @abc.abstractmethod
    def load(self, path: str, map_location: Any = None) -> Any:
        """Read what :meth:`save` wrote."""

    def commit(self, tag: str) -> bool:
        """Every file of ``tag`` is written; return True when it is durable."""
        return True

    def records(self) -> dict:
        """``{absolute path: FileRecord}`` of the files saved since :meth:`create` (none by default)."""
        return {}

    def expected_record(self, path: str):
        """The size and checksum ``path`` must have (from the manifest of the tag being loaded)."""
        if self.manifest is None or self.manifest_dir is None:
            return None
        return self.manifest.record_for(path, self.manifest_dir)

    def is_decoupled(self) -> bool:
        return False

    def wait(self) -> None:
        """Block until pending writes are done (asynchronous engines)."""
