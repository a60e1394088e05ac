"""The cuda accelerator. Importing this module never imports a vendor SDK."""

from __future__ import annotations

import importlib.util

import torch

from deepspeed.accelerator.abstract_accelerator import DeepSpeedAccelerator


class CUDA_Accelerator(DeepSpeedAccelerator):
    DS_PLUGIN_API = "1.0"  # the plugin API this class was written for (never inherited)
    _name = "cuda"
    _device_type = "cuda"
    _communication_backend_name = "nccl"
    _visible_devices_env = "CUDA_VISIBLE_DEVICES"
    _export_env_prefixes = ("NCCL_", "CUDA_")
    priority = 50

    @classmethod
    def is_available(cls) -> bool:
        if torch.version.cuda is None:
            return False
        try:
            return torch.cuda.is_available() and torch.cuda.device_count() > 0
        except Exception:
            return False

    @classmethod
    def unavailable_reason(cls) -> str:
        if torch.version.cuda is None:
            return f"torch {torch.__version__} was built without CUDA (torch.version.cuda is None)"
        return "torch.cuda.is_available() is False: no CUDA device or driver was found"

    def mpi_envs(self, launcher: str) -> dict[str, str]:
        # MVAPICH2-GDR moves device buffers itself only when told so.
        return {"MV2_USE_CUDA": "1"} if launcher == "mvapich" else {}

    def is_triton_supported(self) -> bool:
        if importlib.util.find_spec("triton") is None:
            return False
        major, _minor = torch.cuda.get_device_capability()
        return major >= 7
