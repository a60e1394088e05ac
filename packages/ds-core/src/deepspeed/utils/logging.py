"""The ``DeepSpeed`` logger and rank-aware logging (``log_dist``)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Iterable

_FORMAT = "[%(asctime)s] [%(levelname)s] [%(filename)s:%(lineno)d:%(funcName)s] %(message)s"


def _create_logger(name: str = "DeepSpeed", level: int = logging.INFO) -> logging.Logger:
    lg = logging.getLogger(name)
    if not lg.handlers:
        lg.setLevel(level)
        lg.propagate = False
        handler = logging.StreamHandler(stream=sys.stdout)
        handler.setFormatter(logging.Formatter(_FORMAT))
        lg.addHandler(handler)
    return lg


logger = _create_logger()
if "DS_LOG_LEVEL" in os.environ:
    logger.setLevel(os.environ["DS_LOG_LEVEL"].upper())


def _rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def log_dist(message: str, ranks: Iterable[int] | None = None, level: int = logging.INFO) -> None:
    """Log ``message`` on the given ranks (all ranks when ``ranks`` is None or contains -1)."""
    rank = _rank()
    ranks = None if ranks is None else list(ranks)
    if ranks is None or -1 in ranks or rank in ranks:
        logger.log(level, f"[Rank {rank}] {message}")


def print_dist(message: str, ranks: Iterable[int] | None = None) -> None:
    ranks = None if ranks is None else list(ranks)
    rank = _rank()
    if ranks is None or -1 in ranks or rank in ranks:
        print(f"[Rank {rank}] {message}", flush=True)


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}


def get_log_level_from_string(log_level_str: str) -> int:
    """``"info"`` -> ``logging.INFO`` (DeepSpeed's helper; case-insensitive)."""
    level = _LEVELS.get(str(log_level_str).lower())
    if level is None:
        raise ValueError(f"log level {log_level_str!r} is not one of {', '.join(_LEVELS)}")
    return level


def set_log_level_from_string(log_level_str: str, custom_logger: logging.Logger | None = None) -> None:
    """Set ``custom_logger`` (DeepSpeed's logger by default) and its handlers to the level named
    ``log_level_str``."""
    level = get_log_level_from_string(log_level_str)
    target = logger if custom_logger is None else custom_logger
    target.setLevel(level)
    for handler in target.handlers:
        handler.setLevel(level)
