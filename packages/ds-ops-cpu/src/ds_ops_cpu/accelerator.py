"""The CPU accelerator of ds-ops-cpu: core's CPU accelerator plus this package's op builders
(registered as ``cpu.<op>`` in the ``deepspeed.op_builders`` group)."""

from __future__ import annotations

from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator as _CoreCPU


class CPU_Accelerator(_CoreCPU):
    DS_PLUGIN_API = "1.0"  # the plugin API this class was written for (never inherited)
    # Note: above core's plain CPU fallback, below every device accelerator, so a machine with a
    # GPU plugin installed picks the GPU and a CPU-only machine picks this.
    priority = 0
    # Note: DeepSpeed's CPU accelerator names CUDA_VISIBLE_DEVICES (a placeholder the launcher never
    # sets on CPU); kept so tools reading visible_devices_envs() see what they expect.
    _visible_devices_env = "CUDA_VISIBLE_DEVICES"
