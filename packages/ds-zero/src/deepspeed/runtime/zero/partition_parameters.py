"""``deepspeed.zero.Init`` (partition parameters as modules are built) and ``GatheredParameters``.

Also DeepSpeed's module-level names that integrations touch: the ``_orig_torch_*`` factories and
``zero_wrapper_for_fp_tensor_constructor`` (Transformers swaps the latter before entering ``Init``,
so ``Init`` looks it up in this module's globals when it is entered).
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Callable

import torch

from deepspeed.accelerator import get_accelerator
from deepspeed.runtime.zero import _ranks
from deepspeed.runtime.zero._optimizer_base import offload_device
from deepspeed.runtime.zero._fetch import saved_tensor_hooks_suspended
from deepspeed.runtime.zero._partitioned_param import (ZeroParamStatus, ZeroParamType, gather, is_zero_param, partition_param,
                                            release, scatter_full_value)

_orig_torch_tensor = torch.tensor
_orig_torch_empty = torch.empty
_orig_torch_zeros = torch.zeros
_orig_torch_ones = torch.ones
_orig_torch_full = torch.full
_orig_torch_arange = torch.arange
_orig_torch_eye = torch.eye
_orig_torch_randn = torch.randn

_FACTORIES = ("empty", "zeros", "ones", "full", "arange", "eye", "randn")


def zero_wrapper_for_fp_tensor_constructor(fn: Callable, target_fp_dtype: torch.dtype) -> Callable:
    """``fn`` (a torch factory) that puts tensors on the current device and floating ones in ``target_fp_dtype``."""

    def wrapped_fn(*args, **kwargs):
        if kwargs.get("device") is None:
            kwargs["device"] = torch.device(get_accelerator().current_device_name())
        tensor = fn(*args, **kwargs)
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(target_fp_dtype)
        return tensor

    return wrapped_fn


def register_external_parameter(module: torch.nn.Module, parameter: torch.nn.Parameter) -> None:
    """Gather ``parameter`` whenever ``module``'s forward runs (it belongs to another module).

    Needed when a forward reads a parameter of a module it does not own (tied or shared weights
    used through ``other.weight``), so ZeRO-3 gathers it before the forward.
    """
    if not isinstance(parameter, torch.nn.Parameter):
        raise ValueError(f"register_external_parameter expects a torch.nn.Parameter, got {type(parameter).__name__}")
    if not hasattr(module, "_external_params"):
        module._external_params = {}
    module._external_params[id(parameter)] = parameter


def unregister_external_parameter(module: torch.nn.Module, parameter: torch.nn.Parameter) -> None:
    """Undo :func:`register_external_parameter`."""
    ext = getattr(module, "_external_params", {})
    if id(parameter) not in ext:
        raise ValueError(f"parameter {tuple(parameter.shape)} was not registered as external to "
                         f"{type(module).__name__}; nothing to unregister")
    del ext[id(parameter)]


def _parse_config(config_dict_or_path, mpu=None):
    """The ds_config given to ``Init`` parsed by ds-core's one loader (a dict, a JSON path, base64
    JSON or an already parsed DeepSpeedConfig), or None when none was given."""
    if config_dict_or_path is None:
        return None
    from deepspeed.runtime.config import DeepSpeedConfig

    if isinstance(config_dict_or_path, DeepSpeedConfig):
        return config_dict_or_path
    if not isinstance(config_dict_or_path, (dict, str, os.PathLike)):
        raise ValueError(f"zero.Init(config_dict_or_path={config_dict_or_path!r}): expected a dict, a path to a JSON "
                         "file or a base64-encoded JSON string")
    # Note: Init needs the precision and zero_optimization sections only; the batch sizes are
    # checked by deepspeed.initialize (Transformers calls Init before it knows them).
    return DeepSpeedConfig(config_dict_or_path, mpu, check_batch=False)


def _ensure_distributed() -> None:
    """Like DeepSpeed, initialise torch.distributed when a launcher set the environment."""
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized() and "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        import deepspeed.comm

        deepspeed.comm.init_distributed()


def _all_subclasses(cls):
    out, stack = [], [cls]
    while stack:
        c = stack.pop()
        for sub in c.__subclasses__():
            out.append(sub)
            stack.append(sub)
    return out


class Init:
    """Partition every parameter across the data-parallel ranks as soon as its module is built.

    Use as a context manager around model construction (``with deepspeed.zero.Init(): model =
    MyModel()``) or pass an existing ``module`` to partition it now. Each module's parameters are
    broadcast from rank 0 (so every rank starts from the same weights) and replaced by this rank's
    slice; floating tensors created inside take ``dtype`` (from the config's fp16/bf16 when not
    given). ``remote_device="cpu"`` (or ``offload_param.device=cpu`` in the config) keeps the
    slices in host memory. ``mem_efficient_linear`` is accepted and has no effect here (autograd's
    saved-tensor hooks already avoid keeping gathered weights alive).
    """

    def __init__(self, module=None, data_parallel_group=None, mem_efficient_linear: bool = True, remote_device=None,
                 pin_memory: bool = False, config_dict_or_path=None, config=None, enabled: bool = True, dtype=None,
                 mpu=None, zero_param_parallel_group=None, zero_quantized_weights: bool = False,
                 zero_quantized_nontrainable_weights: bool = False, sequence_data_parallel_group=None,
                 param_swapper=None, tensor_overrides=None):
        self.enabled = enabled
        if not enabled:
            return
        if zero_quantized_weights or zero_quantized_nontrainable_weights:
            raise NotImplementedError("zero.Init(zero_quantized_weights=True) (ZeRO++ qwZ) is not supported by "
                                      "ds-zero yet; leave it False.")
        if zero_param_parallel_group is not None:
            raise NotImplementedError("zero.Init(zero_param_parallel_group=...) (ZeRO++ hpZ) is not supported by "
                                      "ds-zero yet; leave it None.")
        if param_swapper is not None or tensor_overrides is not None:
            raise NotImplementedError("zero.Init(param_swapper=...) / zero.Init(tensor_overrides=...) are not "
                                      "supported by ds-zero; leave them None.")
        _ensure_distributed()
        # Note: the config goes through ds-core's parser, so "auto" values take their defaults
        # (fp16.enabled="auto" is not fp16) and a malformed config is an error naming the key.
        cfg = _parse_config(config_dict_or_path if config_dict_or_path is not None else config, mpu)
        if dtype is None:
            dtype = torch.half if cfg is not None and cfg.fp16_enabled else torch.bfloat16 if cfg is not None \
                and cfg.bfloat16_enabled else torch.get_default_dtype()
        self.dtype = dtype
        zero = getattr(cfg, "zero_config", None)
        offload = offload_device(getattr(zero, "offload_param", None))
        remote_device = remote_device or (offload if offload != "none" else None)
        if remote_device is not None and str(remote_device) == "nvme":
            raise NotImplementedError("zero.Init(remote_device='nvme') needs ds-aio's tensor swapping, which is "
                                      "not available yet; use remote_device='cpu'.")
        self.remote_device = torch.device(remote_device) if remote_device is not None else None
        self.pin_memory = pin_memory
        if data_parallel_group is None and mpu is not None:
            data_parallel_group = mpu.get_data_parallel_group()
        if data_parallel_group is None and sequence_data_parallel_group is not None:
            data_parallel_group = sequence_data_parallel_group
        self.group = data_parallel_group
        self._patched: list = []
        self._factories: dict = {}
        if module is not None:
            self._partition_module(module)

    # -- partitioning ----------------------------------------------------------------------------
    def _partition_module(self, module: torch.nn.Module) -> None:
        for p in module.parameters():
            if is_zero_param(p):
                continue
            if p.is_floating_point() and p.dtype != self.dtype:
                p.data = p.data.to(self.dtype)
            partition_param(p, self.group, 0, self.remote_device, src_rank=0)
            if self.pin_memory and p.ds_tensor.device.type == "cpu" and torch.accelerator.is_available():
                p.ds_tensor = p.ds_tensor.pin_memory()

    def _wrap_init(self, cls) -> None:
        orig = cls.__dict__.get("__init__")
        if orig is None or getattr(orig, "_zero_init_wrapped", False):
            return
        ctx = self

        @functools.wraps(orig)
        def init(module, *args, **kwargs):
            orig(module, *args, **kwargs)
            ctx._partition_module(module)

        init._zero_init_wrapped = True
        cls.__init__ = init
        self._patched.append((cls, orig))

    # -- context ---------------------------------------------------------------------------------
    def __enter__(self):
        if not self.enabled:
            return self
        for cls in _all_subclasses(torch.nn.Module):
            self._wrap_init(cls)
        ctx = self
        self._orig_init_subclass = torch.nn.Module.__dict__.get("__init_subclass__")

        def init_subclass(cls, **kwargs):
            super(torch.nn.Module, cls).__init_subclass__(**kwargs)
            ctx._wrap_init(cls)

        torch.nn.Module.__init_subclass__ = classmethod(init_subclass)
        if self.dtype != torch.get_default_dtype():
            wrapper = globals()["zero_wrapper_for_fp_tensor_constructor"]
            for name in _FACTORIES:
                self._factories[name] = getattr(torch, name)
                setattr(torch, name, wrapper(globals()[f"_orig_torch_{name}"], self.dtype))
        return self

    def __exit__(self, *exc):
        if not self.enabled:
            return False
        for cls, orig in reversed(self._patched):
            cls.__init__ = orig
        self._patched = []
        if self._orig_init_subclass is not None:
            torch.nn.Module.__init_subclass__ = self._orig_init_subclass
        else:
            del torch.nn.Module.__init_subclass__
        for name, fn in self._factories.items():
            setattr(torch, name, fn)
        self._factories = {}
        return False


class GatheredParameters:
    """Gather ZeRO-3 parameters for the ``with`` block, then partition them again.

    ``params``: one parameter or an iterable; non-partitioned ones are ignored. With
    ``modifier_rank=r``, the values rank ``r`` holds at the end of the block are broadcast and
    become every rank's new partitioned values (and the fp32 master copy, once an engine exists);
    with None, changes are discarded. ``fwd_module`` is accepted for DeepSpeed compatibility.
    Inside the block, autograd saves tensors as themselves (the ZeRO-3 saved-tensor hooks are
    suspended, see ``_fetch``), as under DeepSpeed: a backward that needs them gathers them.
    """

    _SENTINEL = -1  # keeps module hooks from releasing the parameters inside the block

    def __init__(self, params, modifier_rank=None, fwd_module=None, enabled: bool = True):
        if isinstance(params, torch.Tensor):
            params = [params]
        elif params is None:
            params = []
        self.params = [p for p in params if is_zero_param(p)]
        self.modifier_rank = modifier_rank
        self.enabled = enabled and bool(self.params)

    def __enter__(self):
        if not self.enabled:
            return None
        gather(self.params)
        for p in self.params:
            p.ds_active_sub_modules.add(self._SENTINEL)
        self._suspended = saved_tensor_hooks_suspended()
        self._suspended.__enter__()
        return None

    def __exit__(self, *exc):
        if not self.enabled:
            return False
        self._suspended.__exit__(None, None, None)
        for p in self.params:
            p.ds_active_sub_modules.discard(self._SENTINEL)
        if self.modifier_rank is not None:
            with torch.no_grad():
                for p in self.params:
                    data = p.data.contiguous()
                    _ranks.broadcast_from(data, self.modifier_rank, p.ds_process_group)
                    p.data = data
                    scatter_full_value(p)
                    opt = getattr(p, "_zero_optimizer", None)
                    opt = opt() if opt is not None else None
                    if opt is not None:
                        opt._sync_master_from_param(p)
        release(self.params)
        return False


class MultipleAllGatherHandles:
    """Several pending all-gathers waited on as one (DeepSpeed's class): ``wait()`` waits on each
    handle in order. Handles are DeepSpeed's (``wait(handle_dependency=...)``) or torch's work
    objects from ``deepspeed.comm`` collectives with ``async_op=True`` (``wait()``)."""

    def __init__(self, handles):
        self.handles = list(handles)

    def wait(self, handle_dependency: bool = True) -> None:
        for handle in self.handles:
            if _takes_keyword(handle.wait, "handle_dependency"):
                handle.wait(handle_dependency=handle_dependency)
            else:  # a torch Work object
                handle.wait()


def _takes_keyword(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins (torch's Work.wait) have no signature
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


__all__ = ["GatheredParameters", "Init", "MultipleAllGatherHandles", "ZeroParamStatus", "ZeroParamType",
           "register_external_parameter",
           "unregister_external_parameter", "zero_wrapper_for_fp_tensor_constructor", "is_zero_param"]
