"""FLOP and MAC counts of the torch operations the profiler intercepts.

Conventions (DeepSpeed's): a multiply-accumulate (MAC) is 2 FLOPs; ``linear`` counts
``2 * input.numel() * out_features`` (the bias add is not counted); ``addmm``/``baddbmm`` add one
FLOP per element of the added input; activations, softmax and pooling cost one FLOP per input
element; ``layer_norm``/``group_norm``/``instance_norm`` cost 5 per element with an affine weight
(4 without); ``batch_norm`` costs 1 per element in eval (2 with affine) and 4 (5) in training;
element-wise ``add``/``mul`` cost one FLOP per output element; ``scaled_dot_product_attention``
counts its two matmuls (``Q @ K^T`` and ``P @ V``), the softmax is not counted; embedding and
dropout cost nothing.

Each ``*_flops`` function takes the operation's own arguments and returns ``(flops, macs)``.
:func:`patch` replaces the functions in ``torch``, ``torch.nn.functional`` and ``torch.Tensor`` with
counting wrappers and :func:`unpatch` restores them.
"""

from __future__ import annotations

import math
import threading
from typing import Callable

import torch
import torch.nn.functional as F


def _prod(dims) -> int:
    return int(math.prod(int(d) for d in dims))


def _numel(x) -> int:
    return x.numel() if torch.is_tensor(x) else 1


# -- formulas ------------------------------------------------------------------------------------


def linear_flops(input, weight, bias=None):
    macs = input.numel() * weight.shape[0]
    return 2 * macs, macs


def elementwise_unary_flops(input, *args, **kwargs):
    return input.numel(), 0


def softmax_flops(input, *args, **kwargs):
    return input.numel(), 0


def zero_flops(*args, **kwargs):
    return 0, 0


def layer_norm_flops(input, normalized_shape=None, weight=None, bias=None, eps=1e-5):
    return input.numel() * (5 if weight is not None else 4), 0


def group_norm_flops(input, num_groups=None, weight=None, bias=None, eps=1e-5):
    return input.numel() * (5 if weight is not None else 4), 0


def instance_norm_flops(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                        momentum=0.1, eps=1e-5):
    return input.numel() * (5 if weight is not None else 4), 0


def batch_norm_flops(input, running_mean=None, running_var=None, weight=None, bias=None, training=False,
                     momentum=0.1, eps=1e-5):
    affine = weight is not None
    if training:
        return input.numel() * (5 if affine else 4), 0
    return input.numel() * (2 if affine else 1), 0


def _tuple(value, n):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def conv_flops(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    n_spatial = weight.dim() - 2
    batch = input.shape[0] if input.dim() == n_spatial + 2 else 1
    in_dims = input.shape[-n_spatial:]
    kernel = weight.shape[2:]
    stride, dilation = _tuple(stride, n_spatial), _tuple(dilation, n_spatial)
    if padding == "same":
        out_dims = list(in_dims)
    else:
        pad = (0,) * n_spatial if padding == "valid" else _tuple(padding, n_spatial)
        out_dims = [(in_dims[i] + 2 * pad[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
                    for i in range(n_spatial)]
    out_channels = weight.shape[0]
    in_per_group = weight.shape[1]  # in_channels // groups
    positions = batch * _prod(out_dims)
    macs = positions * out_channels * in_per_group * _prod(kernel)
    flops = 2 * macs + (out_channels * positions if bias is not None else 0)
    return flops, macs


def conv_transpose_flops(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    n_spatial = weight.dim() - 2
    batch = input.shape[0] if input.dim() == n_spatial + 2 else 1
    in_dims = input.shape[-n_spatial:]
    kernel = weight.shape[2:]
    stride, dilation = _tuple(stride, n_spatial), _tuple(dilation, n_spatial)
    pad, out_pad = _tuple(padding, n_spatial), _tuple(output_padding, n_spatial)
    out_dims = [(in_dims[i] - 1) * stride[i] - 2 * pad[i] + dilation[i] * (kernel[i] - 1) + out_pad[i] + 1
                for i in range(n_spatial)]
    in_channels = weight.shape[0]
    out_per_group = weight.shape[1]
    # every input position scatters into kernel-many outputs of its group's channels
    macs = batch * _prod(in_dims) * in_channels * out_per_group * _prod(kernel)
    out_channels = out_per_group * groups
    flops = 2 * macs + (out_channels * batch * _prod(out_dims) if bias is not None else 0)
    return flops, macs


def attention_flops(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    q_len, head_dim = query.shape[-2], query.shape[-1]
    k_len, v_dim = key.shape[-2], value.shape[-1]
    rows = _prod(query.shape[:-2])
    macs = rows * q_len * k_len * head_dim + rows * q_len * k_len * v_dim
    return 2 * macs, macs


def matmul_flops(input, other, *args, **kwargs):
    a, b = input, other
    if a.dim() == 1 and b.dim() == 1:
        macs = a.shape[0]
    elif b.dim() == 1:
        macs = a.numel()
    elif a.dim() == 1:
        macs = b.numel()
    else:
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        macs = _prod(batch) * a.shape[-2] * a.shape[-1] * b.shape[-1]
    return 2 * macs, macs


def addmm_flops(input, mat1, mat2, *args, **kwargs):
    macs = mat1.shape[0] * mat1.shape[1] * mat2.shape[1]
    return 2 * macs + _numel(input), macs


def baddbmm_flops(input, batch1, batch2, *args, **kwargs):
    macs = batch1.shape[0] * batch1.shape[1] * batch1.shape[2] * batch2.shape[2]
    return 2 * macs + _numel(input), macs


def elementwise_binary_flops(input, other, *args, **kwargs):
    if torch.is_tensor(input) and torch.is_tensor(other):
        return _prod(torch.broadcast_shapes(input.shape, other.shape)), 0
    return (_numel(input) if torch.is_tensor(input) else _numel(other)), 0


def einsum_flops(equation, *operands):
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for term, op in zip(lhs, operands):
        if "..." in term:
            n_ellipsis = op.dim() - (len(term) - 3)
            term = term.replace("...", "".join(chr(0x3B1 + i) for i in range(n_ellipsis)))
        for letter, dim in zip(term, op.shape):
            sizes[letter] = max(sizes.get(letter, 1), int(dim))
    if len(operands) == 1:
        return operands[0].numel(), 0
    # Note: counted as the naive contraction over every index, one MAC per term product.
    macs = _prod(sizes.values()) * (len(operands) - 1)
    return 2 * macs, macs


# -- patching ------------------------------------------------------------------------------------

# (owner, attribute name, formula). Owners are modules or classes whose attribute is swapped.
_ACTIVATIONS = ("relu", "prelu", "elu", "leaky_relu", "relu6", "silu", "gelu", "sigmoid", "tanh", "mish",
                "hardswish", "glu")
_POOLS = ("avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d",
          "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
          "adaptive_max_pool2d", "adaptive_max_pool3d")


def _targets() -> list[tuple[object, str, Callable]]:
    targets: list[tuple[object, str, Callable]] = [
        (F, "linear", linear_flops),
        (F, "conv1d", conv_flops), (F, "conv2d", conv_flops), (F, "conv3d", conv_flops),
        (F, "conv_transpose1d", conv_transpose_flops), (F, "conv_transpose2d", conv_transpose_flops),
        (F, "conv_transpose3d", conv_transpose_flops),
        (F, "softmax", softmax_flops), (F, "log_softmax", softmax_flops),
        (F, "layer_norm", layer_norm_flops), (F, "group_norm", group_norm_flops),
        (F, "instance_norm", instance_norm_flops), (F, "batch_norm", batch_norm_flops),
        (F, "embedding", zero_flops), (F, "dropout", zero_flops),
        (F, "scaled_dot_product_attention", attention_flops),
    ]
    targets += [(F, name, elementwise_unary_flops) for name in _ACTIVATIONS + _POOLS if hasattr(F, name)]
    for owner in (torch, torch.Tensor):
        targets += [(owner, "matmul", matmul_flops), (owner, "mm", matmul_flops), (owner, "bmm", matmul_flops),
                    (owner, "addmm", addmm_flops), (owner, "baddbmm", baddbmm_flops),
                    (owner, "mul", elementwise_binary_flops), (owner, "add", elementwise_binary_flops)]
    # Note: DeepSpeed does not count ``a @ b``; it is the same matmul as torch.matmul, so we do.
    targets += [(torch.Tensor, "__matmul__", matmul_flops), (torch, "einsum", einsum_flops)]
    return targets


class _Recorder(threading.local):
    """Where counted operations go: a stack of frames, one per module being run."""

    def __init__(self):
        self.frames: list[list[tuple[str, int, int]]] = []
        self.inside_op = False


RECORDER = _Recorder()
_ORIGINALS: dict[tuple[int, str], tuple[object, Callable]] = {}


def _wrap(name: str, original: Callable, formula: Callable) -> Callable:
    def counting(*args, **kwargs):
        rec = RECORDER
        # Note: an op implemented with other patched ops (in Python) is counted once, at the top.
        if rec.inside_op or not rec.frames:
            return original(*args, **kwargs)
        flops, macs = formula(*args, **kwargs)
        rec.frames[-1].append((name, int(flops), int(macs)))
        rec.inside_op = True
        try:
            return original(*args, **kwargs)
        finally:
            rec.inside_op = False

    counting.__wrapped__ = original
    counting.__name__ = getattr(original, "__name__", name)
    counting.__doc__ = getattr(original, "__doc__", None)
    return counting


def patch() -> None:
    """Swap the counted torch functions for counting wrappers (idempotent)."""
    if _ORIGINALS:
        return
    for owner, attr, formula in _targets():
        original = getattr(owner, attr, None)
        if original is None:
            continue
        _ORIGINALS[(id(owner), attr)] = (owner, original)
        setattr(owner, attr, _wrap(attr, original, formula))


def unpatch() -> None:
    """Put the original torch functions back."""
    for (_, attr), (owner, original) in list(_ORIGINALS.items()):
        setattr(owner, attr, original)
    _ORIGINALS.clear()


def is_patched() -> bool:
    return bool(_ORIGINALS)
