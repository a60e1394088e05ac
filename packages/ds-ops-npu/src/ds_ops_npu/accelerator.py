"""The npu accelerator. Importing this module never imports a vendor SDK."""

from __future__ import annotations

import importlib.util

import torch

from deepspeed.accelerator.abstract_accelerator import DeepSpeedAccelerator


class NPU_Accelerator(DeepSpeedAccelerator):
    DS_PLUGIN_API = "1.0"  # the plugin API this class was written for (never inherited)
    _name = "npu"
    _device_type = "npu"
    _communication_backend_name = "hccl"
    _visible_devices_env = "ASCEND_RT_VISIBLE_DEVICES"
    _export_env_prefixes = ("ASCEND_", "HCCL_")
    priority = 40

    @classmethod
    def is_available(cls) -> bool:
        if importlib.util.find_spec("torch_npu") is None:
            return False
        try:
            import torch_npu  # noqa: F401

            return bool(torch.npu.is_available() and torch.npu.device_count() > 0)
        except Exception:
            return False

    @classmethod
    def unavailable_reason(cls) -> str:
        if importlib.util.find_spec("torch_npu") is None:
            return "the Ascend PyTorch adapter (torch_npu) is not installed"
        return "torch.npu.is_available() is False: no Ascend NPU or driver was found"
