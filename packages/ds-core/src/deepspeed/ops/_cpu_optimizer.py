"""What the CPU optimizers (``DeepSpeedCPUAdam``, ``DeepSpeedCPUAdagrad``, ``DeepSpeedCPULion``)
share: finding their native kernel through the accelerator's op builder, the per-tensor choice
between that kernel and the pure-PyTorch reference path, state handling, and the optional fused
write-back of updated parameters into bf16/fp16 copies.

The native op is found through ``get_accelerator().create_op_builder(name).load()``; when the
current accelerator has no such builder (a GPU accelerator), the ``cpu.<name>`` builder is used.
If neither can load (no ops package, no compiler), the optimizer runs the reference path and warns
once per op, naming the cause.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any, Callable, Iterable

import torch

from deepspeed.ops.op_builder import _knobs

_LOWP_KIND = {torch.bfloat16: 1, torch.float16: 2}

_lock = threading.Lock()
_native: dict[str, Any] = {}


class NativeOpFallbackWarning(RuntimeWarning):
    """A CPU optimizer runs its pure-PyTorch reference path because its native op cannot load."""


def _builder(op_name: str) -> Any:
    from deepspeed import _plugins
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    try:
        return acc.create_op_builder(op_name)
    except _plugins.PluginNotFoundError:
        # Note: host optimizers run on the CPU whatever the device accelerator is, so a GPU
        # accelerator without its own builder of this op uses the CPU plugin's.
        if getattr(acc, "_name", "cpu") == "cpu":
            raise
        return _plugins.load(_plugins.OP_BUILDERS, f"cpu.{op_name}")()


def load_native(op_name: str, owner: str) -> Any | None:
    """The loaded native module of ``op_name``, or None (warning once per op with the cause)."""
    with _lock:
        if op_name in _native:
            return _native[op_name]
    try:
        module = _builder(op_name).load(verbose=False)
    except Exception as exc:  # any failure means: run the reference path, and say why
        module = None
        warnings.warn(
            f"{owner}: native CPU op '{op_name}' is unavailable, using the PyTorch reference path "
            f"(same results, slower). Cause: {type(exc).__name__}: {exc}",
            NativeOpFallbackWarning,
            stacklevel=4,
        )
    with _lock:
        _native.setdefault(op_name, module)
        return _native[op_name]


def _reset_native() -> None:
    """Forget loaded/failed native ops (tests that change knobs or the environment)."""
    with _lock:
        _native.clear()


def _flat_lowp_groups(fp16_param_groups: Any, n_groups: int) -> list[list[torch.Tensor | None] | None]:
    if fp16_param_groups is None:
        return [None] * n_groups
    groups = list(fp16_param_groups)
    if len(groups) != n_groups:
        raise ValueError(
            f"fp16_param_groups has {len(groups)} entries but the optimizer has {n_groups} param groups. "
            "Fix: pass one list of low-precision copies (or None) per param group."
        )
    return [None if g is None else ([g] if isinstance(g, torch.Tensor) else list(g)) for g in groups]


class CPUOptimizer(torch.optim.Optimizer):
    """Base of the CPU optimizers: fp32 master parameters and states on the host, updated by the
    native kernel when it can run on a tensor, otherwise by the reference path (same math)."""

    #: Native op name (``cpu_adam``) and the state tensors it keeps per parameter.
    _OP = ""
    _STATES: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], fp32_optimizer_states: bool = True) -> None:
        super().__init__(params, defaults)
        self.fp32_optimizer_states = fp32_optimizer_states
        self._op = load_native(self._OP, type(self).__name__)
        self.isa = "pytorch"
        self._isa_index = -1
        if self._op is not None:
            requested = _knobs.cpu_isa()
            try:
                self._isa_index = int(self._op.resolve_isa(requested))
            except ValueError as exc:
                raise ValueError(f"DS_CPU_ISA={requested!r}: {exc}. Fix: unset DS_CPU_ISA or pick a listed variant.") from exc
            self.isa = self._op.runnable_isas()[0] if requested == "auto" else requested

    @property
    def uses_native(self) -> bool:
        """Whether steps run the native kernel (False: the pure-PyTorch reference path)."""
        return self._op is not None

    # ---- state ----
    def _init_state(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        dtype = torch.float32 if self.fp32_optimizer_states else p.dtype
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        for key in self._STATES:
            state[key] = torch.zeros_like(p, dtype=dtype, memory_format=torch.contiguous_format)

    def _native_ok(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], lowp: torch.Tensor | None) -> bool:
        if self._op is None or p.dtype != torch.float32 or not p.is_contiguous() or p.device.type != "cpu":
            return False
        if grad.device.type != "cpu" or grad.is_sparse:
            return False
        for key in self._STATES:
            s = state[key]
            if s.dtype != torch.float32 or not s.is_contiguous() or s.device.type != "cpu":
                return False
        return True

    # ---- subclasses ----
    def _scalars(self, group: dict[str, Any], step: float) -> dict[str, float]:
        raise NotImplementedError

    def _native_step(
        self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], lowp_ptr: int, lowp_kind: int,
        s: dict[str, float], threads: int,
    ) -> None:
        raise NotImplementedError

    def _reference_step(self, p: torch.Tensor, grad: torch.Tensor, states: list[torch.Tensor], s: dict[str, float]) -> None:
        raise NotImplementedError

    # ---- step ----
    def _check_param(self, p: torch.Tensor) -> None:
        if p.device.type != "cpu":
            raise ValueError(
                f"{type(self).__name__}: parameter is on {p.device}; it must be on 'cpu'. Fix: enable "
                "\"offload_optimizer\": {\"device\": \"cpu\"} in the ZeRO config, or use FusedAdam/torch.optim on the device."
            )
        if p.grad is not None and p.grad.is_sparse:
            raise NotImplementedError(f"{type(self).__name__} does not support sparse gradients. Fix: use torch.optim.SparseAdam.")

    def _update(self, p: torch.Tensor, group: dict[str, Any], lowp: torch.Tensor | None, threads: int) -> None:
        state = self.state[p]
        if len(state) == 0:
            self._init_state(p, state)
        self._migrate_state(state)
        if isinstance(state["step"], torch.Tensor):
            state["step"] += 1
            step = float(state["step"].item())
        else:
            state["step"] += 1
            step = float(state["step"])
        s = self._scalars(group, step)
        grad = p.grad
        if lowp is not None:
            if lowp.numel() != p.numel():
                raise ValueError(
                    f"{type(self).__name__}: low-precision copy has {lowp.numel()} elements, its parameter "
                    f"{p.numel()}. Fix: pass copies matching fp16_param_groups[group][param] one to one."
                )
            if lowp.dtype not in _LOWP_KIND:
                raise ValueError(
                    f"{type(self).__name__}: low-precision copy has dtype {lowp.dtype}; bfloat16 or float16 "
                    "expected. Fix: pass bf16/fp16 tensors in fp16_param_groups."
                )
        if self._native_ok(p, grad, state, lowp):
            g = grad if (grad.dtype == torch.float32 and grad.is_contiguous()) else grad.to(torch.float32).contiguous()
            fused_lowp = lowp is not None and lowp.device.type == "cpu" and lowp.is_contiguous()
            ptr, kind = (lowp.data_ptr(), _LOWP_KIND[lowp.dtype]) if fused_lowp else (0, 0)
            self._native_step(p, g, state, ptr, kind, s, threads)
            if lowp is not None and not fused_lowp:
                lowp.copy_(p.view_as(lowp))
            return
        # Reference path: fp32 working copies where the stored tensors are not fp32.
        work = p if p.dtype == torch.float32 else p.detach().to(torch.float32)
        states = [state[k] if state[k].dtype == torch.float32 else state[k].to(torch.float32) for k in self._STATES]
        self._reference_step(work, grad.to(torch.float32), states, s)
        if work is not p:
            p.copy_(work)
        for key, t in zip(self._STATES, states):
            if t is not state[key]:
                state[key].copy_(t)
        if lowp is not None:
            lowp.copy_(p.reshape(lowp.shape))

    def _migrate_state(self, state: dict[str, Any]) -> None:
        """Adapt state loaded from another optimizer's checkpoint (subclasses rename keys)."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, fp16_param_groups: Any = None) -> Any:
        """One optimizer step over every parameter with a gradient.

        ``fp16_param_groups``: optional, one entry per param group, each a list (one per parameter,
        ``None`` to skip) of bf16/fp16 tensors that receive the updated parameters, written in the
        same pass over memory as the update (what ZeRO-Offload copies back to the device).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lowp_groups = _flat_lowp_groups(fp16_param_groups, len(self.param_groups))
        threads = torch.get_num_threads()
        for group, lowps in zip(self.param_groups, lowp_groups):
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                self._check_param(p)
                lowp = lowps[i] if lowps is not None and i < len(lowps) else None
                self._update(p, group, lowp, threads)
        return loss
