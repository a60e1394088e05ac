"""The plain CPU accelerator core falls back to when no plugin is available.

It has no kernels of its own (op builders come from ds-ops-cpu, which subclasses this class).
Memory figures are the process's resident memory, since a CPU has no separate device pool.
"""

from __future__ import annotations

import os
import resource
from typing import Any

import torch

from deepspeed.accelerator.abstract_accelerator import DeepSpeedAccelerator

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class CPU_Accelerator(DeepSpeedAccelerator):
    """CPU: gloo, host RNG, process-RSS memory figures, no op builders unless ds-ops-cpu adds them."""

    _name = "cpu"
    _device_type = "cpu"
    _communication_backend_name = "gloo"
    priority = -100
    _export_env_prefixes = ("KMP_", "OMP_", "MKL_", "I_MPI_")

    def __init__(self) -> None:
        super().__init__()
        self._peak_baseline = 0

    @classmethod
    def is_available(cls) -> bool:
        return True

    @classmethod
    def unavailable_reason(cls) -> str:
        return "the CPU is always available"

    def is_synchronized_device(self) -> bool:
        return True

    # device
    def device_name(self, device_index: int | None = None) -> str:
        return "cpu"

    def device(self, device_index: int | None = None) -> torch.device:
        return torch.device("cpu")

    def set_device(self, device_index: int) -> None:
        return None

    def current_device(self) -> int:
        return int(os.environ.get("LOCAL_RANK", "0"))

    def current_device_name(self) -> str:
        return "cpu"

    def device_count(self) -> int:
        # Note: DeepSpeed counts CPU "devices" as NUMA nodes/ranks; the launcher uses local processes
        # as slots, so one device per process is the honest answer here.
        return int(os.environ.get("LOCAL_SIZE", "1"))

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    # RNG
    def set_rng_state(self, new_state: torch.Tensor, device_index: int | None = None) -> None:
        torch.set_rng_state(new_state)

    def get_rng_state(self, device_index: int | None = None) -> torch.Tensor:
        return torch.get_rng_state()

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def initial_seed(self) -> int:
        return torch.initial_seed()

    def default_generator(self, device_index: int) -> torch.Generator:
        return torch.default_generator

    # streams
    @property
    def Stream(self) -> Any:
        return torch.cpu.Stream

    def stream(self, stream: Any) -> Any:
        return torch.cpu.stream(stream)

    def current_stream(self, device_index: int | None = None) -> Any:
        return torch.cpu.current_stream(device_index)

    def default_stream(self, device_index: int | None = None) -> Any:
        return torch.cpu.current_stream(device_index)

    @property
    def Event(self) -> Any:
        return torch.Event

    # memory: resident set of this process
    def empty_cache(self) -> None:
        return None

    def memory_allocated(self, device_index: int | None = None) -> int:
        return _rss_bytes()

    def max_memory_allocated(self, device_index: int | None = None) -> int:
        return max(_peak_rss_bytes(), _rss_bytes())

    def reset_max_memory_allocated(self, device_index: int | None = None) -> None:
        # Note: the kernel's peak RSS cannot be reset from inside the process; this is a no-op,
        # as in DeepSpeed's CPU accelerator.
        return None

    def memory_stats(self, device_index: int | None = None) -> dict[str, Any]:
        return {"allocated_bytes.all.current": _rss_bytes(), "allocated_bytes.all.peak": _peak_rss_bytes()}

    def reset_peak_memory_stats(self, device_index: int | None = None) -> None:
        return None

    def memory_reserved(self, device_index: int | None = None) -> int:
        return _rss_bytes()

    def max_memory_reserved(self, device_index: int | None = None) -> int:
        return self.max_memory_allocated(device_index)

    def reset_max_memory_cached(self, device_index: int | None = None) -> None:
        return None

    def total_memory(self, device_index: int | None = None) -> int:
        return os.sysconf("SC_PHYS_PAGES") * _PAGE

    def available_memory(self, device_index: int | None = None) -> int:
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return os.sysconf("SC_AVPHYS_PAGES") * _PAGE

    # dtypes
    def is_bf16_supported(self) -> bool:
        return True

    def is_fp16_supported(self) -> bool:
        return True

    def is_triton_supported(self) -> bool:
        return False

    # pinning: meaningless without a device
    def pin_memory(self, tensor: torch.Tensor, make_copy: bool = True, match_shape: bool = True) -> torch.Tensor:
        return tensor

    def is_pinned(self, tensor: torch.Tensor) -> bool:
        return False

    def on_accelerator(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type == "cpu"
