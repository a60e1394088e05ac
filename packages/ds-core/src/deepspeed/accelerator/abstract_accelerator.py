"""The accelerator interface, implemented once over ``torch.accelerator`` and the device module.

A vendor subclasses :class:`DeepSpeedAccelerator` and overrides only what differs from the generic
behaviour: the class attributes (name, torch device type, communication backend, visible-devices
variable, priority), :meth:`is_available` and :meth:`unavailable_reason` (both cheap: they must not
import a missing SDK), and any quirk. Every method name DeepSpeed users call is here.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from deepspeed import _plugins


class DeepSpeedAccelerator:
    """Base accelerator. Class attributes describe the device; methods map to its torch module."""

    #: Plugin-API version this class targets (checked when loaded through an entry point).
    DS_PLUGIN_API = "1.0"
    #: DeepSpeed name of the accelerator (``get_accelerator()._name``), also the op-builder prefix.
    _name: str = "abstract"
    #: torch device type (``torch.device(type)``); ``torch.<type>`` is the device module.
    _device_type: str = "cpu"
    _communication_backend_name: str = "gloo"
    _compile_backend: str = "inductor"
    #: Environment variable that restricts the visible devices (used by the launcher); None means
    #: ``<DEVICE_TYPE>_VISIBLE_DEVICES``. Vendors set their own (CUDA_VISIBLE_DEVICES, ZE_AFFINITY_MASK...).
    _visible_devices_env: str | None = None
    #: Auto-selection order among available plugins: highest wins; the CPU accelerator is lowest.
    priority: int = 0
    #: Environment-variable prefixes the launcher forwards to remote ranks.
    _export_env_prefixes: tuple[str, ...] = ()
    supports_nvtx_domain = False

    def __init__(self) -> None:
        self._compile_backend = type(self)._compile_backend

    # ---- availability (classmethods: called before an instance exists) ----
    @classmethod
    def is_available(cls) -> bool:
        """True when this accelerator can run here. Must be cheap and never raise."""
        try:
            mod = getattr(torch, cls._device_type, None)
            return bool(mod is not None and mod.is_available() and mod.device_count() > 0)
        except Exception:
            return False

    @classmethod
    def unavailable_reason(cls) -> str:
        """Why :meth:`is_available` is False, in words a user can act on."""
        return f"torch.{cls._device_type}.is_available() is False with torch {torch.__version__}"

    # ---- helpers ----
    @property
    def _module(self) -> Any:
        return getattr(torch, self._device_type)

    def _index(self, device_index: int | None) -> int:
        return self.current_device() if device_index is None else device_index

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self._name!r} device={self._device_type!r}>"

    # ---- behaviour flags ----
    def is_synchronized_device(self) -> bool:
        return False

    def use_host_timers(self) -> bool:
        return self.is_synchronized_device()

    def resolves_data_dependency(self) -> bool:
        return self.is_synchronized_device()

    def handles_memory_backpressure(self) -> bool:
        return self.is_synchronized_device()

    # ---- device ----
    def device_name(self, device_index: int | None = None) -> str:
        if device_index is None:
            return self._device_type
        return f"{self._device_type}:{device_index}"

    def device(self, device_index: int | None = None) -> Any:
        return self._module.device(device_index) if hasattr(self._module, "device") else torch.device(
            self.device_name(device_index)
        )

    def set_device(self, device_index: int) -> None:
        self._module.set_device(device_index)

    def current_device(self) -> int:
        return self._module.current_device()

    def current_device_name(self) -> str:
        return f"{self._device_type}:{self.current_device()}"

    def device_count(self) -> int:
        return self._module.device_count()

    def synchronize(self, device_index: int | None = None) -> None:
        self._module.synchronize(device_index)

    # ---- RNG ----
    def random(self) -> Any:
        return torch.random

    def set_rng_state(self, new_state: torch.Tensor, device_index: int | None = None) -> None:
        if device_index is None:
            self._module.set_rng_state(new_state)
        else:
            self._module.set_rng_state(new_state, device_index)

    def get_rng_state(self, device_index: int | None = None) -> torch.Tensor:
        if device_index is None:
            return self._module.get_rng_state()
        return self._module.get_rng_state(device_index)

    def manual_seed(self, seed: int) -> None:
        self._module.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        self._module.manual_seed_all(seed)

    def initial_seed(self) -> int:
        return self._module.initial_seed()

    def default_generator(self, device_index: int) -> torch.Generator:
        return self._module.default_generators[device_index]

    # ---- streams and events ----
    @property
    def Stream(self) -> Any:
        return self._module.Stream

    def stream(self, stream: Any) -> Any:
        return self._module.stream(stream)

    def current_stream(self, device_index: int | None = None) -> Any:
        return self._module.current_stream(device_index)

    def default_stream(self, device_index: int | None = None) -> Any:
        return self._module.default_stream(device_index)

    @property
    def Event(self) -> Any:
        return self._module.Event

    # ---- memory (torch.accelerator.memory where the backend supports it) ----
    def empty_cache(self) -> None:
        self._module.empty_cache()

    def memory_allocated(self, device_index: int | None = None) -> int:
        return self._module.memory_allocated(device_index)

    def max_memory_allocated(self, device_index: int | None = None) -> int:
        return self._module.max_memory_allocated(device_index)

    def reset_max_memory_allocated(self, device_index: int | None = None) -> None:
        self._module.reset_peak_memory_stats(device_index)

    def memory_cached(self, device_index: int | None = None) -> int:
        return self.memory_reserved(device_index)

    def max_memory_cached(self, device_index: int | None = None) -> int:
        return self.max_memory_reserved(device_index)

    def reset_max_memory_cached(self, device_index: int | None = None) -> None:
        self._module.reset_peak_memory_stats(device_index)

    def memory_stats(self, device_index: int | None = None) -> dict[str, Any]:
        return self._module.memory_stats(device_index)

    def reset_peak_memory_stats(self, device_index: int | None = None) -> None:
        self._module.reset_peak_memory_stats(device_index)

    def memory_reserved(self, device_index: int | None = None) -> int:
        return self._module.memory_reserved(device_index)

    def max_memory_reserved(self, device_index: int | None = None) -> int:
        return self._module.max_memory_reserved(device_index)

    def total_memory(self, device_index: int | None = None) -> int:
        return self._module.get_device_properties(self._index(device_index)).total_memory

    def available_memory(self, device_index: int | None = None) -> int:
        free, _total = self._module.mem_get_info(self._index(device_index))
        return free

    # ---- dtypes ----
    def is_bf16_supported(self) -> bool:
        fn = getattr(self._module, "is_bf16_supported", None)
        return bool(fn()) if fn is not None else True

    def is_fp16_supported(self) -> bool:
        return True

    def supported_dtypes(self) -> list[torch.dtype]:
        dtypes = [torch.float32]
        if self.is_fp16_supported():
            dtypes.append(torch.float16)
        if self.is_bf16_supported():
            dtypes.append(torch.bfloat16)
        return dtypes

    # ---- misc ----
    def range_push(self, msg: str, domain: Any = None, category: Any = None) -> None:
        return None

    def range_pop(self, domain: Any = None) -> None:
        return None

    def lazy_call(self, callback: Callable[[], Any]) -> Any:
        return callback()

    def communication_backend_name(self) -> str:
        return self._communication_backend_name

    def is_triton_supported(self) -> bool:
        return False

    def prefer_triton_grouped_mm(self) -> bool:
        return False

    # ---- graphs ----
    def create_graph(self) -> Any:
        return None

    def capture_to_graph(self, graph: Any, pool: Any = None, stream: Any = None) -> Any:
        from contextlib import nullcontext

        return nullcontext()

    def replay_graph(self, graph: Any) -> None:
        return None

    # ---- tensor types ----
    def _tensor_type(self, dtype: torch.dtype) -> Callable[..., torch.Tensor]:
        device = self._device_type

        def make(*args: Any, **kwargs: Any) -> torch.Tensor:
            return torch.tensor(*args, dtype=dtype, device=device, **kwargs) if args and not isinstance(
                args[0], int
            ) else torch.empty(*args, dtype=dtype, device=device, **kwargs)

        return make

    @property
    def BFloat16Tensor(self) -> Callable[..., torch.Tensor]:
        return self._tensor_type(torch.bfloat16)

    @property
    def ByteTensor(self) -> Callable[..., torch.Tensor]:
        return self._tensor_type(torch.uint8)

    @property
    def DoubleTensor(self) -> Callable[..., torch.Tensor]:
        return self._tensor_type(torch.float64)

    @property
    def FloatTensor(self) -> Callable[..., torch.Tensor]:
        return self._tensor_type(torch.float32)

    @property
    def HalfTensor(self) -> Callable[..., torch.Tensor]:
        return self._tensor_type(torch.float16)

    @property
    def IntTensor(self) -> Callable[..., torch.Tensor]:
        return self._tensor_type(torch.int32)

    @property
    def LongTensor(self) -> Callable[..., torch.Tensor]:
        return self._tensor_type(torch.int64)

    # ---- pinning ----
    def pin_memory(self, tensor: torch.Tensor, make_copy: bool = True, match_shape: bool = True) -> torch.Tensor:
        """A page-locked copy of ``tensor`` (or ``tensor`` itself when pinning is meaningless)."""
        if tensor.is_pinned():
            return tensor
        try:
            return tensor.pin_memory()
        except RuntimeError:
            # Note: with no accelerator driver, torch cannot pin; pinned memory only speeds up
            # host-to-device copies, so an unpinned tensor is the correct answer, not an error.
            return tensor

    def is_pinned(self, tensor: torch.Tensor) -> bool:
        try:
            return tensor.is_pinned()
        except RuntimeError:
            return False

    def unpin_memory(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clone() if self.is_pinned(tensor) else tensor

    def on_accelerator(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type == self._device_type

    # ---- op builders (found through the deepspeed.op_builders entry points) ----
    def op_builder_dir(self) -> str:
        """Entry-point prefix of this accelerator's op builders (``<name>.``)."""
        return f"{self._name}."

    def _builder_plugins(self) -> dict[str, _plugins.Plugin]:
        return _plugins.op_builders(self._name)

    def get_op_builder(self, class_name: str) -> type:
        """The builder class for ``class_name``: an op name (``cpu_adam``) or a class name
        (``CPUAdamBuilder``)."""
        plugins = self._builder_plugins()
        key = f"{self._name}.{class_name}"
        if key in plugins:
            return plugins[key].load()
        for plugin in plugins.values():
            cls = plugin.load()
            if cls.__name__ == class_name:
                return cls
        available = ", ".join(k.split(".", 1)[1] for k in plugins) or "none"
        hint = _plugins.provider_hint(_plugins.OP_BUILDERS, key)
        fix = f" Fix: pip install {hint}" if hint else ""
        raise _plugins.PluginNotFoundError(
            f"{_plugins.OP_BUILDERS}: the {self._name} accelerator has no op builder '{class_name}' "
            f"(misspelled or not installed). Installed for {self._name}: {available}.{fix}"
        )

    def create_op_builder(self, class_name: str) -> Any:
        return self.get_op_builder(class_name)()

    def build_extension(self) -> Any:
        from torch.utils.cpp_extension import BuildExtension

        return BuildExtension

    # ---- launcher ----
    def export_envs(self) -> list[str]:
        return list(self._export_env_prefixes)

    def visible_devices_envs(self) -> list[str]:
        return [self._visible_devices_env or f"{self._device_type.upper()}_VISIBLE_DEVICES"]

    def mpi_envs(self, launcher: str) -> dict[str, str]:
        """Environment the MPI ``launcher`` (``"mvapich"``, ``"openmpi"``, ...) needs for this device
        (e.g. CUDA-aware MPI switches); none by default."""
        return {}

    def set_visible_devices_envs(self, current_env: dict[str, str], local_accelerator_ids: list[int]) -> None:
        for env in self.visible_devices_envs():
            current_env[env] = ",".join(map(str, local_accelerator_ids))

    # ---- compile ----
    def get_compile_backend(self) -> str:
        return self._compile_backend

    def set_compile_backend(self, backend: str) -> None:
        known = torch._dynamo.list_backends(exclude_tags=())
        if backend not in known:
            raise ValueError(
                f"compile backend {backend!r} is not registered with torch._dynamo; "
                f"known backends: {', '.join(sorted(known))}"
            )
        self._compile_backend = backend

    # ---- env (DeepSpeed reads these from the accelerator) ----
    def get_env_var(self, name: str, default: str | None = None) -> str | None:
        return os.environ.get(name, default)
