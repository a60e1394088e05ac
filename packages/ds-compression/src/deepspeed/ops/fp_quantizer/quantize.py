"""``FP_Quantize`` (DeepSpeed's class and arguments) and the functional ``fp_quantize`` /
``fp_dequantize`` / ``fp_selective_dequantize``: group-scaled FP8 (e4m3, e5m2), FP6 (e3m2) and
FP4 (e2m1). The numbers and the layout are :mod:`deepspeed.ops.fp_quantizer.reference`'s; the
work runs in the accelerator's ``fp_quantizer`` op when it loads (ds-ops-cpu on the CPU), else in
that reference."""

from __future__ import annotations

import abc
import math

import torch

from deepspeed.compression import _native
from deepspeed.ops.fp_quantizer import reference as ref

#: (q_bits, q_mantisa_bits) -> format. DeepSpeed forces the mantissa for 6 and 4 bits.
_BY_BITS = {(8, 3): "e4m3", (8, 2): "e5m2", (6, 2): "e3m2", (4, 1): "e2m1"}
_FORCED_MANTISSA = {6: 2, 4: 1}


def format_of(q_bits: int, q_mantisa_bits: int = 3) -> str:
    """The format name of DeepSpeed's ``(q_bits, q_mantisa_bits)``."""
    q_mantisa_bits = _FORCED_MANTISSA.get(q_bits, q_mantisa_bits)
    if (q_bits, q_mantisa_bits) not in _BY_BITS:
        raise ValueError(f"q_bits={q_bits}, q_mantisa_bits={q_mantisa_bits} is not a supported FP format. Fix: use "
                         f"q_bits=8 with q_mantisa_bits=3 (e4m3) or 2 (e5m2), q_bits=6 (e3m2) or q_bits=4 (e2m1).")
    return _BY_BITS[(q_bits, q_mantisa_bits)]


def _check_groups(numel: int, group_size: int) -> int:
    if group_size < 1 or numel % group_size:
        raise ValueError(f"group_size={group_size} does not divide the input's {numel} elements. Fix: use a divisor "
                         f"of {numel} (or pad the input).")
    return numel // group_size


def _use_native(backend: str):
    if backend not in ("auto", "native", "reference"):
        raise ValueError(f"backend={backend!r}; use 'auto', 'native' or 'reference'")
    if backend == "reference":
        return None
    op = _native.load("fp_quantizer")
    if op is None and backend == "native":
        raise RuntimeError("backend='native' but the fp_quantizer op cannot load (see the warning for the cause)")
    return op


def fp_quantize(x: torch.Tensor, fmt: str = "e4m3", group_size: int = 512, backend: str = "auto") -> torch.Tensor:
    """Rows of codes and scales (uint8 ``[numel / group_size, row_bytes]``) of ``x`` (fp32, bf16 or fp16)."""
    f = ref.fmt(fmt)
    if not x.is_floating_point():
        raise ValueError(f"fp_quantize: input dtype {x.dtype} is not floating point")
    groups = _check_groups(x.numel(), group_size)
    op = _use_native(backend) if x.device.type == "cpu" else None
    if op is None:
        rows, missing = ref.quantize(x, f, group_size)
    else:
        module, isa = op
        src = x.detach().to(torch.float32).contiguous()
        rows = torch.empty(groups, ref.row_bytes(group_size, f), dtype=torch.uint8)
        missing = module.quantize(src.data_ptr(), rows.data_ptr(), groups, group_size, rows.shape[1], ref.KIND[fmt],
                                  isa, _native.threads())
    if missing:
        raise ValueError(f"fp_quantize: the input has {missing} NaN values and {fmt} has no NaN encoding. Fix: use "
                         f"e4m3 or e5m2, or remove the NaNs.")
    return rows


def fp_dequantize(rows: torch.Tensor, fmt: str = "e4m3", group_size: int = 512, shape=None,
                  dtype: torch.dtype = torch.float32, scale: torch.Tensor | None = None,
                  backend: str = "auto") -> torch.Tensor:
    """Values of ``rows`` (from :func:`fp_quantize`) as ``dtype``, shaped ``shape`` (flat when None);
    ``scale`` ([groups] or [groups, 1]) replaces the stored group scales."""
    f = ref.fmt(fmt)
    want = ref.row_bytes(group_size, f)
    if rows.dim() != 2 or rows.shape[1] != want:
        raise ValueError(f"fp_dequantize: rows of shape {tuple(rows.shape)} do not hold {fmt} groups of {group_size} "
                         f"(expected [groups, {want}])")
    groups = rows.shape[0]
    op = _use_native(backend) if rows.device.type == "cpu" and scale is None else None
    if op is None:
        out = ref.dequantize(rows, f, group_size, scale)
    else:
        module, isa = op
        src = rows.contiguous()
        out = torch.empty(groups, group_size, dtype=torch.float32)
        module.dequantize(src.data_ptr(), out.data_ptr(), groups, group_size, want, ref.KIND[fmt], isa,
                          _native.threads())
    shape = (groups * group_size,) if shape is None else tuple(shape)
    if math.prod(shape) != groups * group_size:
        raise ValueError(f"fp_dequantize: shape {shape} does not hold {groups * group_size} values")
    return out.reshape(shape).to(dtype)


def fp_selective_dequantize(rows: torch.Tensor, indexes: torch.Tensor, shape, fmt: str = "e4m3",
                            group_size: int = 512, dtype: torch.dtype = torch.float32,
                            backend: str = "auto") -> torch.Tensor:
    """Dequantize only the slices ``indexes`` of the first dimension of a tensor of ``shape``
    (e.g. some experts of a stacked expert weight): ``[len(indexes), *shape[1:]]``."""
    shape = tuple(shape)
    per = math.prod(shape[1:])
    if per % group_size:
        raise ValueError(f"fp_selective_dequantize: a slice of shape {shape[1:]} ({per} values) is not a whole "
                         f"number of groups of {group_size}")
    gps = per // group_size
    idx = torch.as_tensor(indexes, dtype=torch.int64).flatten()
    if idx.numel() and (idx.min() < 0 or idx.max() >= shape[0]):
        raise ValueError(f"fp_selective_dequantize: indexes {idx.tolist()} out of range for {shape[0]} slices")
    sel = (idx.unsqueeze(1) * gps + torch.arange(gps)).flatten()
    return fp_dequantize(rows.index_select(0, sel), fmt, group_size, (idx.numel(), *shape[1:]), dtype,
                         backend=backend)


class Quantizer(abc.ABC):
    """DeepSpeed's abstract quantizer: ``quantize`` / ``dequantize`` over groups of ``group_size``."""

    def __init__(self, group_size: int = 512) -> None:
        self.group_size = group_size

    @abc.abstractmethod
    def quantize(self, input, q_bits=8, q_mantisa_bits=3, stochastic_mode=False, return_meta_tensor=False):
        ...

    @abc.abstractmethod
    def dequantize(self, input_q, fp_out=None, q_bits=8, q_mantisa_bits=3, scale=None):
        ...


class FP_Quantize(Quantizer):  # noqa: N801 (DeepSpeed's name)
    """DeepSpeed's FP quantizer: ``quantize`` returns the rows (uint8 ``[groups, row_bytes]``,
    codes then the fp32 scale); ``dequantize`` / ``selective_dequantize`` give the values back in
    the input's dtype and shape. ``quantization_config`` may be DeepSpeed's config object (its
    ``group_size`` is used) or None."""

    def __init__(self, quantization_config=None, group_size: int = 512) -> None:
        if quantization_config is not None and hasattr(quantization_config, "group_size"):
            group_size = quantization_config.group_size
        super().__init__(group_size=group_size)
        self.orig_dtype = None
        self.orig_shape = None
        self._rows = None

    def quantize(self, input, q_bits=8, q_mantisa_bits=3, stochastic_mode=False, return_meta_tensor=False):
        if stochastic_mode:
            raise NotImplementedError("FP_Quantize: stochastic_mode=True is not implemented; rounding is to nearest "
                                      "(ties to even). Fix: pass stochastic_mode=False.")
        fmt = format_of(q_bits, q_mantisa_bits)
        self.orig_dtype, self.orig_shape = input.dtype, tuple(input.shape)
        rows = fp_quantize(input, fmt, self.group_size)
        self._rows = rows
        if return_meta_tensor:
            return rows[:, :-4], ref.scales_of(rows)
        return rows

    def get_scales(self) -> torch.Tensor:
        if self._rows is None:
            raise RuntimeError("FP_Quantize.get_scales: call quantize first")
        return ref.scales_of(self._rows)

    def _need_quantized(self, what: str) -> None:
        if self.orig_dtype is None:
            raise RuntimeError(f"FP_Quantize.{what}: call quantize before dequantizing (it records the shape and dtype)")

    def _full_rows(self, input_q: torch.Tensor, fmt: str, scale) -> torch.Tensor:
        """Rows with scales: a meta-tensor pair's codes (``return_meta_tensor``) get room for them;
        the values come from ``scale`` then."""
        codes = ref.code_bytes(self.group_size, ref.fmt(fmt))
        if input_q.dim() == 2 and input_q.shape[1] == codes:
            if scale is None:
                raise ValueError("FP_Quantize.dequantize: codes without scales (return_meta_tensor) need scale=")
            pad = torch.zeros(input_q.shape[0], 4, dtype=torch.uint8)
            return torch.cat([input_q.to(torch.uint8), pad], dim=1)
        return input_q

    def dequantize(self, input_q, fp_out=None, q_bits=8, q_mantisa_bits=3, scale=None) -> torch.Tensor:
        self._need_quantized("dequantize")
        fmt = format_of(q_bits, q_mantisa_bits)
        rows = self._full_rows(input_q, fmt, scale)
        out = fp_dequantize(rows, fmt, self.group_size, self.orig_shape, self.orig_dtype, scale=scale)
        if fp_out is not None:
            fp_out.copy_(out)
            return fp_out
        return out

    def selective_dequantize(self, input_q, indexes, fp_out=None, q_bits=8, q_mantisa_bits=3,
                             scale=None) -> torch.Tensor:
        self._need_quantized("selective_dequantize")
        if len(self.orig_shape) != 3:
            raise ValueError(f"FP_Quantize.selective_dequantize works on 3-d tensors; the quantized tensor has shape "
                             f"{self.orig_shape}. Fix: reshape to [slices, rows, cols] before quantize.")
        fmt = format_of(q_bits, q_mantisa_bits)
        out = fp_selective_dequantize(input_q, indexes, self.orig_shape, fmt, self.group_size, self.orig_dtype)
        if fp_out is not None:
            fp_out.copy_(out)
            return fp_out
        return out
