"""int8 / int4 group quantization (DeepSpeed's ``ds_quantizer`` plus the functional
``quantize`` / ``dequantize``). The numbers are :mod:`deepspeed.ops.quantizer.reference`'s; the
work runs in the accelerator's ``quantizer`` op when it loads (ds-ops-cpu on the CPU), else in
that reference."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from deepspeed.compression import _native
from deepspeed.ops.quantizer import reference as ref


class QuantizedTensor(NamedTuple):
    """Packed codes ``[groups, code_bytes]`` (uint8), fp32 ``scale`` / ``offset`` per group
    (``offset`` None when symmetric), and what it takes to restore the tensor."""

    codes: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor | None
    shape: tuple
    dtype: torch.dtype
    bits: int
    group_size: int

    @property
    def symmetric(self) -> bool:
        return self.offset is None


def _op(backend: str, device: torch.device):
    if backend not in ("auto", "native", "reference"):
        raise ValueError(f"backend={backend!r}; use 'auto', 'native' or 'reference'")
    if backend == "reference" or device.type != "cpu":
        return None
    op = _native.load("quantizer")
    if op is None and backend == "native":
        raise RuntimeError("backend='native' but the quantizer op cannot load (see the warning for the cause)")
    return op


def quantize(x: torch.Tensor, group_size: int, bits: int = 8, symmetric: bool = True,
             backend: str = "auto") -> QuantizedTensor:
    """Group-quantize ``x`` (fp32, bf16 or fp16) to ``bits`` (8 or 4)."""
    if bits not in (8, 4):
        raise ValueError(f"bits={bits}: the int group quantizer supports 8 and 4. Fix: pass bits=8 or bits=4.")
    if not x.is_floating_point():
        raise ValueError(f"quantize: input dtype {x.dtype} is not floating point")
    if group_size < 1 or x.numel() % group_size:
        raise ValueError(f"group_size={group_size} does not divide the input's {x.numel()} elements. Fix: use a "
                         f"divisor of {x.numel()}.")
    groups = x.numel() // group_size
    op = _op(backend, x.device)
    if op is None:
        codes, scale, offset, bad = ref.quantize(x, group_size, bits, symmetric)
    else:
        module, isa = op
        src = x.detach().to(torch.float32).contiguous()
        codes = torch.empty(groups, ref.code_bytes(group_size, bits), dtype=torch.uint8)
        scale = torch.empty(groups, dtype=torch.float32)
        offset = None if symmetric else torch.empty(groups, dtype=torch.float32)
        bad = module.quantize(src.data_ptr(), codes.data_ptr(), scale.data_ptr(),
                              0 if offset is None else offset.data_ptr(), groups, group_size, codes.shape[1], bits,
                              int(symmetric), isa, _native.threads())
    if bad:
        raise ValueError(f"quantize: the input has {bad} NaN/inf values; int{bits} has no encoding for them. Fix: "
                         f"clean the input, or use deepspeed.ops.fp_quantizer (e5m2 keeps inf and NaN).")
    return QuantizedTensor(codes, scale, offset, tuple(x.shape), x.dtype, bits, group_size)


def dequantize(qt: QuantizedTensor, dtype: torch.dtype | None = None, backend: str = "auto") -> torch.Tensor:
    """The values of ``qt`` in its shape, as ``dtype`` (its original dtype when None)."""
    groups, gs = qt.codes.shape[0], qt.group_size
    if qt.codes.shape[1] != ref.code_bytes(gs, qt.bits) or qt.scale.numel() != groups:
        raise ValueError(f"dequantize: codes {tuple(qt.codes.shape)} / scales {tuple(qt.scale.shape)} do not hold "
                         f"groups of {gs} int{qt.bits} values")
    op = _op(backend, qt.codes.device)
    if op is None:
        out = ref.dequantize(qt.codes, qt.scale, qt.offset, gs, qt.bits)
    else:
        module, isa = op
        codes, scale = qt.codes.contiguous(), qt.scale.to(torch.float32).contiguous()
        offset = None if qt.offset is None else qt.offset.to(torch.float32).contiguous()
        out = torch.empty(groups, gs, dtype=torch.float32)
        module.dequantize(codes.data_ptr(), scale.data_ptr(), 0 if offset is None else offset.data_ptr(),
                          out.data_ptr(), groups, gs, codes.shape[1], qt.bits, int(offset is None), isa,
                          _native.threads())
    if math.prod(qt.shape) != groups * gs:
        raise ValueError(f"dequantize: shape {qt.shape} does not hold {groups * gs} values")
    return out.reshape(qt.shape).to(dtype or qt.dtype)


def ds_quantizer(input: torch.Tensor, groups: int = 1, bit_num: int = 8, sr: bool = False,
                 asym: bool = False) -> torch.Tensor:
    """DeepSpeed's fake quantization: ``input`` quantized to ``bit_num`` bits in ``groups`` equal
    groups and dequantized, same shape and dtype. ``sr`` (stochastic rounding) is not supported."""
    if sr:
        raise NotImplementedError("ds_quantizer: sr=True (stochastic rounding) is not implemented. Fix: pass sr=False.")
    if groups < 1 or input.numel() % groups:
        raise ValueError(f"ds_quantizer: groups={groups} does not divide the input's {input.numel()} elements")
    return dequantize(quantize(input, input.numel() // groups, bit_num, symmetric=not asym))
