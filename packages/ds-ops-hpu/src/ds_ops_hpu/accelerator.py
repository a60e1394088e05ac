"""The hpu accelerator. Importing this module never imports a vendor SDK."""

from __future__ import annotations

import importlib.util


from deepspeed.accelerator.abstract_accelerator import DeepSpeedAccelerator


class HPU_Accelerator(DeepSpeedAccelerator):
    DS_PLUGIN_API = "1.0"  # the plugin API this class was written for (never inherited)
    _name = "hpu"
    _device_type = "hpu"
    _communication_backend_name = "hccl"
    _visible_devices_env = "HABANA_VISIBLE_MODULES"
    _export_env_prefixes = ("HABANA_", "PT_HPU_")
    priority = 40

    @classmethod
    def is_available(cls) -> bool:
        # Note: find_spec only looks for the SDK; it is imported only once it is known to exist.
        if importlib.util.find_spec("habana_frameworks") is None:
            return False
        try:
            import habana_frameworks.torch.hpu as hpu  # noqa: F401

            return bool(hpu.is_available() and hpu.device_count() > 0)
        except Exception:
            return False

    @classmethod
    def unavailable_reason(cls) -> str:
        if importlib.util.find_spec("habana_frameworks") is None:
            return "the Intel Gaudi SDK (habana_frameworks) is not installed"
        return "habana_frameworks.torch.hpu reports no available HPU"
