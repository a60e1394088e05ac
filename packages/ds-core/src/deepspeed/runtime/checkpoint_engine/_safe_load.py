"""The one way this repo reads a checkpoint file: :func:`safe_load`.

Every loader (the engine, ZeRO, ``zero_to_fp32`` and the copy of it written beside checkpoints)
goes through it, so every loader behaves the same:

* ``torch.load(weights_only=True)``: a file that needs more than tensors and plain containers is
  refused (loading it would run code it carries), with the global torch refused and the way out;
* ``unsafe=True`` is the only way to unpickle arbitrary objects, and it logs a warning naming the
  file each time;
* a missing, truncated or corrupt file raises an error that names the file (torch alone says
  ``EOFError`` with no message, ``KeyError: '101'`` or "failed finding central directory");
* with a :class:`~deepspeed.runtime.checkpoint_engine._manifest.FileRecord` the file's size and
  CRC-32 are checked first, so one flipped byte is refused by name.
"""

from __future__ import annotations

import errno
import os
import pickle
from typing import Any

import torch

from deepspeed.utils.logging import logger

#: How to allow arbitrary unpickling, per loader (named in the refusal message).
UNSAFE_HINT = ("if you trust this file, load it with unsafe_load=True (engine: ds_config "
               "checkpoint.unsafe_load=true; zero_to_fp32: --unsafe_load)")


#: Read failures that are about the machine (permissions, I/O), not the file's contents.
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT, errno.EISDIR, errno.EMFILE, errno.ENOMEM}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: refused, missing from its tag, truncated or corrupt.
    The message names the file."""


def _first_line_with(text: str, needle: str) -> str:
    for line in text.splitlines():
        if needle in line:
            return line.strip()
    return text.splitlines()[0].strip() if text else ""


def safe_load(path: str, map_location: Any = "cpu", *, unsafe: bool = False, expected: Any = None) -> Any:
    """Read the checkpoint file ``path`` without running code from it.

    ``expected``: a ``FileRecord`` (size and CRC-32 from the checkpoint's manifest) the file must
    match. ``unsafe``: unpickle arbitrary objects (``weights_only=False``); only for files you trust.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if expected is not None:
        expected.verify(path)
    if unsafe:
        logger.warning(f"loading {path} with weights_only=False (unsafe_load): a checkpoint file loaded this way "
                       "can run any code it carries; use it only for files you trust")
    try:
        return torch.load(path, map_location=map_location, weights_only=not unsafe)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights only" in text.lower() or "weights_only" in text:
            reason = _first_line_with(text, "Unsupported global") or _first_line_with(text, "GLOBAL")
            raise CheckpointError(
                f"refused to load {path}: it holds objects other than tensors and plain containers, and "
                f"unpickling them could run code ({reason}); {UNSAFE_HINT}") from None
        raise CheckpointError(f"cannot read checkpoint file {path}: it is corrupt ({text or type(exc).__name__})") from None
    except (EOFError, RuntimeError, KeyError, ValueError, OSError, IndexError, AttributeError, TypeError) as exc:
        if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
            raise type(exc)(exc.errno, f"cannot read checkpoint file {path}: {exc.strerror}", path) from None
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint file {path}: it is truncated or corrupt ({detail}); "
                              "load another tag, or save it again") from None
