"""ZeRO-Infinity's optimizer-state offload to NVMe (``offload_optimizer.device: "nvme"``).

The wrapped optimizer's fp32 masters live on the host as with ``device: "cpu"``; their optimizer
states (Adam's moments) live in swap files under ``nvme_path`` and are read back one ZeRO
sub-group at a time for the step. The swapping is ds-aio's (``deepspeed.io``), reached through
a guarded import; the I/O through the installed ops package's ``async_io`` op.
"""

from __future__ import annotations

from typing import Any

from deepspeed.runtime.zero._optimizer_base import cfg_get, offload_device


def _aio_section(value: Any) -> dict | None:
    """The ``aio`` block from an aio section, a ds_config dict or a DeepSpeedConfig (or None)."""
    if value is None:
        return None
    for attr in ("aio_config", "_param_dict"):  # DeepSpeedConfig: ds-aio's attribute, else the raw dict
        if hasattr(value, attr) and not isinstance(value, dict):
            value = getattr(value, attr)
            break
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict) and isinstance(value.get("aio"), dict):
        value = value["aio"]
    return value if isinstance(value, dict) else None


def attach_optimizer_swapper(optimizer, offload_optimizer_config: Any, aio_config: Any = None, rank: int = 0):
    """The swapper now stepping ``optimizer`` when the config offloads it to NVMe, else None."""
    if offload_device(offload_optimizer_config) != "nvme":
        return None
    try:
        from deepspeed.io.optimizer_swapper import OptimizerStateSwapper
    except ImportError:
        raise ImportError("zero_optimization.offload_optimizer.device='nvme' needs ds-aio (its tensor swapping). "
                          "Fix: pip install ds-aio, or use device='cpu'.") from None
    aio_config = _aio_section(aio_config)
    return OptimizerStateSwapper(
        optimizer, cfg_get(offload_optimizer_config, "nvme_path"), aio_config=aio_config,
        pipeline_read=bool(cfg_get(offload_optimizer_config, "pipeline_read", False)),
        pipeline_write=bool(cfg_get(offload_optimizer_config, "pipeline_write", False)),
        buffer_count=int(cfg_get(offload_optimizer_config, "buffer_count", 4) or 4),
        key="zero_optimization.offload_optimizer.nvme_path", rank=rank)
