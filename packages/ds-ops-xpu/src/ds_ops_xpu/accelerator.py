"""The xpu accelerator. Importing this module never imports a vendor SDK."""

from __future__ import annotations


import torch

from deepspeed.accelerator.abstract_accelerator import DeepSpeedAccelerator


class XPU_Accelerator(DeepSpeedAccelerator):
    DS_PLUGIN_API = "1.0"  # the plugin API this class was written for (never inherited)
    _name = "xpu"
    _device_type = "xpu"
    _communication_backend_name = "xccl"
    _visible_devices_env = "ZE_AFFINITY_MASK"
    _export_env_prefixes = ("CCL_", "I_MPI_", "ZE_")
    priority = 40

    @classmethod
    def is_available(cls) -> bool:
        xpu = getattr(torch, "xpu", None)
        try:
            return bool(xpu is not None and xpu.is_available() and xpu.device_count() > 0)
        except Exception:
            return False

    @classmethod
    def unavailable_reason(cls) -> str:
        return f"torch.xpu.is_available() is False with torch {torch.__version__}: no Intel GPU or driver was found"
