"""The rocm accelerator. Importing this module never imports a vendor SDK."""

from __future__ import annotations


import torch

from deepspeed.accelerator.abstract_accelerator import DeepSpeedAccelerator


class ROCM_Accelerator(DeepSpeedAccelerator):
    DS_PLUGIN_API = "1.0"  # the plugin API this class was written for (never inherited)
    _name = "rocm"
    _device_type = "cuda"
    _communication_backend_name = "nccl"
    _visible_devices_env = "HIP_VISIBLE_DEVICES"
    _export_env_prefixes = ("NCCL_", "HIP_", "ROCR_", "HSA_")
    priority = 50

    @classmethod
    def is_available(cls) -> bool:
        if getattr(torch.version, "hip", None) is None:
            return False
        try:
            return torch.cuda.is_available() and torch.cuda.device_count() > 0
        except Exception:
            return False

    @classmethod
    def unavailable_reason(cls) -> str:
        if getattr(torch.version, "hip", None) is None:
            return f"torch {torch.__version__} was built without ROCm (torch.version.hip is None)"
        return "torch.cuda.is_available() is False: no ROCm device or driver was found"

    def visible_devices_envs(self) -> list[str]:
        # Note: ROCm honours both; DeepSpeed sets the CUDA name, HIP_VISIBLE_DEVICES wins on ROCm.
        return ["HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"]
