"""``Monitor``: the base of every monitor backend (TensorBoard, CSV, WandB, Comet) and the helpers
they share. :class:`deepspeed.monitor.monitor.MonitorMaster` fans events out to the enabled ones."""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod


def _rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def _scalar(value):
    """A Python number from a float, an int or a one-element tensor."""
    if hasattr(value, "item"):
        return value.item()
    return value


class Monitor(ABC):
    """One destination for training events."""

    def __init__(self, monitor_config):
        self.monitor_config = monitor_config
        self.enabled = bool(getattr(monitor_config, "enabled", False))

    @abstractmethod
    def write_events(self, event_list) -> None:
        """Record ``[(name, value, step), ...]``."""

    def close(self) -> None:
        """Flush and release files or connections."""


def _import(package: str, section: str):
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise RuntimeError(
            f"{section}.enabled=true in the ds_config needs the {package} package, which is not installed "
            f"({exc}). Fix: pip install {package}, or set {section}.enabled to false"
        ) from None
