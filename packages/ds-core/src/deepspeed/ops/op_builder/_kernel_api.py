"""DeepSpeed's call interface of the CPU optimizer ops, over the kernels of the ops packages.

DeepSpeed code loads ``CPUAdamBuilder().load()`` and calls ``create_adam(id, lr, beta1, beta2,
eps, weight_decay, adamw_mode, should_log)``, ``adam_update(id, step, lr, beta1, beta2, eps,
weight_decay, bias_correction, params, grads, exp_avg, exp_avg_sq)`` and ``destroy_adam(id)``
(``create_adagrad``/``adagrad_update``/``destroy_adagrad`` and ``create_lion``/``lion_update``/
``destroy_lion`` likewise). The ops packages' kernels take raw buffers and precomputed scalars
(the ABI ds-core's own CPU optimizers call), so :func:`with_deepspeed_api` wraps a loaded op
module in an object that offers DeepSpeed's functions too and forwards everything else to the
module. Tensors must be contiguous fp32 CPU tensors of equal size (DeepSpeed's optimizers pass
those); anything else is a ValueError naming the argument.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import torch

from deepspeed.ops.op_builder import _knobs

#: op name -> the DeepSpeed call interface class
_APIS: dict[str, type] = {}
_lock = threading.Lock()
_wrapped: dict[tuple[str, int], Any] = {}


def with_deepspeed_api(op_name: str, module: Any) -> Any:
    """``module`` with DeepSpeed's functions for ``op_name`` (the module itself for other ops)."""
    api = _APIS.get(op_name)
    if api is None:
        return module
    with _lock:
        key = (op_name, id(module))
        if key not in _wrapped:
            _wrapped[key] = api(module)
        return _wrapped[key]


def _check(fn: str, **tensors: torch.Tensor) -> int:
    numel = None
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or t.device.type != "cpu" or t.dtype != torch.float32 \
                or not t.is_contiguous():
            got = f"{t.dtype} on {t.device}, contiguous={t.is_contiguous()}" if isinstance(t, torch.Tensor) else type(t)
            raise ValueError(f"{fn}: {name} must be a contiguous float32 CPU tensor (got {got})")
        if numel is None:
            numel = t.numel()
        elif t.numel() != numel:
            raise ValueError(f"{fn}: {name} has {t.numel()} elements, the params have {numel}")
    return int(numel)


class _KernelAPI:
    """Forwards unknown attributes to the op module; keeps DeepSpeed's optimizer registry."""

    _KIND = ""

    def __init__(self, module: Any) -> None:
        self._module = module
        self._optimizers: dict[int, dict[str, Any]] = {}
        self._isa_index = int(module.resolve_isa(_knobs.cpu_isa()))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def __repr__(self) -> str:
        return f"<{self._KIND} op {self._module.__name__} with DeepSpeed's call interface>"

    def _create(self, optimizer_id: int, **settings: Any) -> int:
        self._optimizers[int(optimizer_id)] = settings
        return 0

    def _destroy(self, optimizer_id: int) -> int:
        self._optimizers.pop(int(optimizer_id), None)
        return 0

    def _settings(self, fn: str, optimizer_id: int) -> dict[str, Any]:
        try:
            return self._optimizers[int(optimizer_id)]
        except KeyError:
            raise ValueError(f"{fn}: no {self._KIND} optimizer with id {optimizer_id}; call "
                             f"create_{self._KIND}({optimizer_id}, ...) first") from None


class _AdamAPI(_KernelAPI):
    _KIND = "adam"

    def create_adam(self, optimizer_id, alpha=1e-3, betta1=0.9, betta2=0.999, eps=1e-8, weight_decay=0,
                    adamw_mode=True, should_log=False) -> int:
        return self._create(optimizer_id, adamw=bool(adamw_mode))

    def destroy_adam(self, optimizer_id) -> int:
        return self._destroy(optimizer_id)

    def adam_update(self, optimizer_id, step, lr, beta1, beta2, epsilon, weight_decay, bias_correction, params,
                    grads, exp_avg, exp_avg_sq) -> int:
        adamw = self._settings("adam_update", optimizer_id)["adamw"]
        n = _check("adam_update", params=params, grads=grads, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
        lr, wd = float(lr), float(weight_decay)
        if bias_correction:
            step_size, bc2_sqrt = lr / (1 - beta1**step), math.sqrt(1 - beta2**step)
        else:
            step_size, bc2_sqrt = lr, 1.0
        self._module.adam_step(params.data_ptr(), grads.data_ptr(), exp_avg.data_ptr(), exp_avg_sq.data_ptr(), n,
                               0, 0, step_size, bc2_sqrt, 1 - beta1, beta2, 1 - beta2, float(epsilon), wd, 1 - lr * wd,
                               adamw, self._isa_index, torch.get_num_threads())
        return 0


class _AdagradAPI(_KernelAPI):
    _KIND = "adagrad"

    def create_adagrad(self, optimizer_id, alpha=1e-2, eps=1e-8, weight_decay=0, should_log=False) -> int:
        return self._create(optimizer_id)

    def destroy_adagrad(self, optimizer_id) -> int:
        return self._destroy(optimizer_id)

    def adagrad_update(self, optimizer_id, step, lr, epsilon, weight_decay, params, grads, exp_avg_sq) -> int:
        self._settings("adagrad_update", optimizer_id)
        n = _check("adagrad_update", params=params, grads=grads, exp_avg_sq=exp_avg_sq)
        self._module.adagrad_step(params.data_ptr(), grads.data_ptr(), exp_avg_sq.data_ptr(), n, 0, 0, float(lr),
                                  float(epsilon), float(weight_decay), self._isa_index, torch.get_num_threads())
        return 0


class _LionAPI(_KernelAPI):
    _KIND = "lion"

    def create_lion(self, optimizer_id, alpha=1e-4, betta1=0.9, betta2=0.999, weight_decay=0, should_log=False) -> int:
        return self._create(optimizer_id)

    def destroy_lion(self, optimizer_id) -> int:
        return self._destroy(optimizer_id)

    def lion_update(self, optimizer_id, step, lr, beta1, beta2, weight_decay, params, grads, exp_avg) -> int:
        self._settings("lion_update", optimizer_id)
        n = _check("lion_update", params=params, grads=grads, exp_avg=exp_avg)
        lr = float(lr)
        self._module.lion_step(params.data_ptr(), grads.data_ptr(), exp_avg.data_ptr(), n, 0, 0, lr, float(beta1),
                               1 - beta1, float(beta2), 1 - beta2, 1 - lr * float(weight_decay), self._isa_index,
                               torch.get_num_threads())
        return 0


_APIS.update({"cpu_adam": _AdamAPI, "cpu_adagrad": _AdagradAPI, "cpu_lion": _LionAPI})
