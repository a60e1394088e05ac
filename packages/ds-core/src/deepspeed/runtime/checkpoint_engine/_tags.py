"""Checkpoint tags: plain folder names inside the save folder, and the ``latest`` file that names one.

A tag such as ``../x``, ``/abs/path``, ``a/b``, ``.`` or an empty string would read or write
outside the checkpoint folder (or in the folder itself); :func:`validate_tag` refuses it when a
checkpoint is saved and when one is loaded, whether the tag came from the caller or from ``latest``.
"""

from __future__ import annotations

import os

from deepspeed.runtime.checkpoint_engine._safe_load import CheckpointError

LATEST = "latest"


def validate_tag(tag: str, source: str = "tag") -> str:
    """``tag`` if it is a plain folder name; else ValueError naming ``source`` and the value."""
    bad = None
    if not isinstance(tag, str) or not tag.strip():
        bad = "is empty"
    elif tag != tag.strip():
        bad = "has leading or trailing whitespace"
    elif tag in (".", ".."):
        bad = "names the checkpoint folder or its parent"
    elif os.path.isabs(tag) or "/" in tag or (os.sep != "/" and os.sep in tag) or (os.altsep and os.altsep in tag):
        bad = "is a path, not a folder name"
    elif "\0" in tag:
        bad = "contains a NUL byte"
    if bad:
        raise ValueError(f"checkpoint {source} {tag!r} {bad}: a tag must be a plain folder name inside the "
                         "checkpoint folder, such as 'global_step100'")
    return tag


def read_latest(load_dir: str) -> str | None:
    """The tag named by ``<load_dir>/latest``; None when there is no such file; an error when it is
    empty or names something that is not a plain tag."""
    path = os.path.join(load_dir, LATEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            tag = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {path} ({type(exc).__name__}: {exc}); pass an explicit tag= to "
                              "load_checkpoint") from None
    if not tag:
        raise CheckpointError(f"{path} is empty: it should name the tag to resume from; write the tag into it "
                              "or pass tag= to load_checkpoint")
    validate_tag(tag, source=f"tag in {path}")
    return tag
