"""``FlopsProfiler`` and ``get_model_profile``: per-module parameters, MACs, FLOPs, forward
latency and FLOPS of a model.

While profiling, the counted torch functions (see :mod:`.op_counts`) record their FLOPs and MACs
into the innermost module that is running, through forward pre/post hooks on every module. A
module's totals are its own operations plus its children's.

    prof = FlopsProfiler(model)
    prof.start_profile()
    model(batch)
    flops = prof.get_total_flops()
    prof.print_model_profile(profile_step=1)
    prof.end_profile()
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn as nn

from deepspeed.profiling.flops_profiler import op_counts
from deepspeed.profiling.flops_profiler.module_stats import get_module_duration, get_module_flops, get_module_macs
from deepspeed.profiling.flops_profiler.report import (
    duration_to_string,
    flops_to_string,
    macs_to_string,
    number_to_string,
    params_to_string,
    write_profile,
)


def _synchronize() -> None:
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    if not acc.is_synchronized_device():
        acc.synchronize()


def _param_count(module: nn.Module) -> int:
    # Note: every parameter counts, trainable or frozen; a ZeRO-3 partitioned parameter counts
    # its full size (ds_numel), not the local shard.
    return sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())


class FlopsProfiler:
    """Measures the forward pass of ``model``. ``ds_engine`` (a DeepSpeedEngine) adds the
    backward and step latencies, batch size and parallel sizes to the printed summary;
    ``recompute_fwd_factor`` (0 to 1) is the share of the forward recomputed in the backward by
    activation checkpointing."""

    def __init__(self, model: nn.Module, ds_engine=None, recompute_fwd_factor: float = 0.0):
        if not isinstance(model, nn.Module):
            raise ValueError(f"FlopsProfiler needs a torch.nn.Module, got {type(model).__name__}")
        if not 0.0 <= recompute_fwd_factor <= 1.0:
            raise ValueError(f"recompute_fwd_factor={recompute_fwd_factor} must be between 0 and 1")
        self.model = model
        self.ds_engine = ds_engine
        self.recompute_fwd_factor = recompute_fwd_factor
        self.started = False
        self.func_patched = False
        self._handles: list = []

    # -- profiling ---------------------------------------------------------------------------

    def start_profile(self, ignore_list=None) -> None:
        """Reset the counts, patch the torch functions and hook every module (except instances
        of the classes in ``ignore_list``, whose operations count toward their parent)."""
        self.reset_profile()
        op_counts.patch()
        self.func_patched = True
        ignore = tuple(ignore_list or ())
        frames = op_counts.RECORDER.frames

        def pre_hook(module, _inputs):
            frames.append([])
            _synchronize()
            module.__start_time__ = time.perf_counter()

        def post_hook(module, _inputs, _outputs):
            _synchronize()
            module.__duration__ += time.perf_counter() - module.__start_time__
            ops = frames.pop() if frames else []
            module.__flops__ += sum(f for _, f, _ in ops)
            module.__macs__ += sum(m for _, _, m in ops)

        for module in self.model.modules():
            if ignore and isinstance(module, ignore):
                continue
            self._handles.append(module.register_forward_pre_hook(pre_hook))
            self._handles.append(module.register_forward_hook(post_hook))
        self.started = True

    def stop_profile(self) -> None:
        """Stop counting (remove hooks, restore torch); the counts stay readable."""
        if self.started and self.func_patched:
            op_counts.unpatch()
            self.func_patched = False
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        op_counts.RECORDER.frames.clear()

    def reset_profile(self) -> None:
        """Zero every module's counts."""
        for module in self.model.modules():
            module.__flops__ = 0
            module.__macs__ = 0
            module.__params__ = _param_count(module)
            module.__start_time__ = 0.0
            module.__duration__ = 0.0

    def end_profile(self) -> None:
        """Stop and remove the profiler's attributes from the modules."""
        if not self.started:
            return
        self.stop_profile()
        self.started = False
        for module in self.model.modules():
            for attr in ("__flops__", "__macs__", "__params__", "__start_time__", "__duration__"):
                if hasattr(module, attr):
                    delattr(module, attr)

    # -- totals --------------------------------------------------------------------------------

    def get_total_flops(self, as_string: bool = False):
        total = get_module_flops(self.model)
        return number_to_string(total) if as_string else total

    def get_total_macs(self, as_string: bool = False):
        total = get_module_macs(self.model)
        return macs_to_string(total) if as_string else total

    def get_total_duration(self, as_string: bool = False):
        total = get_module_duration(self.model)
        return duration_to_string(total) if as_string else total

    def get_total_params(self, as_string: bool = False):
        total = _param_count(self.model)
        return params_to_string(total) if as_string else total

    def module_profile(self, module: nn.Module) -> dict:
        """``{"params", "macs", "flops", "duration", "flops_per_s"}`` of one module (with children)."""
        flops = get_module_flops(module)
        duration = get_module_duration(module)
        return {"params": getattr(module, "__params__", _param_count(module)), "macs": get_module_macs(module),
                "flops": flops, "duration": duration, "flops_per_s": flops / duration if duration else 0.0}

    # -- reports -------------------------------------------------------------------------------

    def print_model_profile(self, profile_step: int = 1, module_depth: int = -1, top_modules: int = 1,
                            detailed: bool = True, output_file: str | None = None) -> str:
        """Print (or write to ``output_file``) the summary, the aggregated profile per depth and,
        with ``detailed``, the annotated module tree. Returns the text."""
        if not self.started:
            return ""
        text = write_profile(self, profile_step, module_depth, top_modules, detailed)
        if output_file:
            with open(output_file, "w") as fd:
                fd.write(text)
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
        return text

    def print_model_aggregated_profile(self, module_depth: int = -1, top_modules: int = 1) -> str:
        from deepspeed.profiling.flops_profiler.report import aggregated_profile

        text = aggregated_profile(self.model, module_depth, top_modules)
        sys.stdout.write(text)
        return text


def get_model_profile(model: nn.Module, input_shape=None, args=None, kwargs=None, print_profile: bool = True,
                      detailed: bool = True, module_depth: int = -1, top_modules: int = 1, warm_up: int = 1,
                      as_string: bool = True, output_file: str | None = None, ignore_modules=None,
                      mode: str = "forward"):
    """Profile one forward pass of ``model`` and return ``(flops, macs, params)``.

    The input is ``model(*args, **kwargs)``, or a tensor of ``input_shape`` (of the model's
    parameter dtype and device, filled with ones) when ``input_shape`` is given. ``warm_up``
    unprofiled passes run first. ``mode="generate"`` profiles ``model.generate`` instead. With
    ``as_string`` the results are strings such as ``"1.23 G"``.
    """
    args = list(args or [])
    kwargs = dict(kwargs or {})
    if not isinstance(model, nn.Module):
        raise ValueError(f"get_model_profile needs a torch.nn.Module, got {type(model).__name__}")
    if mode not in ("forward", "generate"):
        raise ValueError(f"mode={mode!r} is not supported; use 'forward' or 'generate'")
    if input_shape is not None:
        if args:
            raise ValueError("pass either input_shape or args, not both")
        if not isinstance(input_shape, (tuple, list)) or not input_shape:
            raise ValueError(f"input_shape must be a non-empty tuple of sizes, got {input_shape!r}")
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        device = param.device if param is not None else torch.device("cpu")
        args = [torch.ones(tuple(input_shape), dtype=dtype, device=device)]
    if not args and not kwargs:
        raise ValueError("get_model_profile needs an input: input_shape, args or kwargs")
    run = model.generate if mode == "generate" else model

    with torch.no_grad():
        for _ in range(warm_up):
            run(*args, **kwargs)
        prof = FlopsProfiler(model)
        prof.start_profile(ignore_list=ignore_modules)
        try:
            run(*args, **kwargs)
            flops, macs, params = prof.get_total_flops(), prof.get_total_macs(), prof.get_total_params()
            if print_profile:
                prof.print_model_profile(profile_step=warm_up, module_depth=module_depth, top_modules=top_modules,
                                         detailed=detailed, output_file=output_file)
        finally:
            prof.end_profile()
    if as_string:
        return number_to_string(flops), macs_to_string(macs), params_to_string(params)
    return flops, macs, params


__all__ = ["FlopsProfiler", "get_model_profile", "flops_to_string", "macs_to_string", "params_to_string",
           "duration_to_string", "number_to_string"]
