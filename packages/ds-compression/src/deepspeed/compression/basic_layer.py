"""Compression-aware layers (DeepSpeed's names): ``LinearLayer_Compress``,
``Conv2dLayer_Compress``, ``Embedding_Compress``.

Each is a subclass of its torch layer with the same parameters (``weight``, ``bias``), so state
dicts load into it unchanged. A technique is first *configured* on a layer (``enable_*``, by
:func:`deepspeed.compression.compress.init_compression`) and then *switched on* by the
scheduler at its ``schedule_offset`` (``*_enabled = True``). The forward pass uses the effective
weight: the stored weight with every switched-on mask applied, then fake-quantized when weight
quantization runs in the forward pass. :meth:`effective_weight` is what ``redundancy_clean``
makes permanent.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from deepspeed.compression import _fake_quant as fq


def _topk_mask(scores: torch.Tensor, dense_ratio: float) -> torch.Tensor:
    """1 for the ``round(dense_ratio * n)`` largest scores (at least one), else 0."""
    flat = scores.detach().flatten()
    k = max(1, int(round(dense_ratio * flat.numel())))
    mask = torch.zeros_like(flat)
    mask[torch.topk(flat, k, sorted=False).indices] = 1.0
    return mask.view_as(scores)


class _TopK(torch.autograd.Function):
    """Mask of the top ``dense_ratio`` scores; the gradient passes straight through to the scores
    (movement pruning's TopKBinarizer)."""

    @staticmethod
    def forward(ctx, scores, dense_ratio):
        return _topk_mask(scores, dense_ratio)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


TopKBinarizer = _TopK


class _CompressMixin:
    """State and masks shared by the compress layers. ``_out_dim_view`` shapes a per-output-row
    mask for the weight."""

    def _init_compress(self) -> None:
        self.weight_quantization_enabled = False
        self.wq = None  # dict(start_bits, target_bits, period, type, groups, in_forward, bits, steps)
        self.activation_quantization_enabled = False
        self.aq = None  # dict(bits, type, range)
        self.sparse_pruning_enabled = False
        self.sparse_cfg = None  # dict(dense_ratio, method); not `sparse`: nn.Embedding owns that name
        self.row_pruning_enabled = False
        self.row = None
        self.head_pruning_enabled = False
        self.head = None
        self.channel_pruning_enabled = False
        self.channel = None

    # -- configuration (init_compression) ----------------------------------------------------

    def enable_weight_quantization(self, start_bits, target_bits, quantization_period,
                                   weight_quantization_enabled_in_forward, quantization_type, num_groups):
        fq._groups(self.weight.detach(), num_groups, "compression_training.weight_quantization."
                   "shared_parameters.quantize_groups")
        if target_bits <= 2 and quantization_type != "symmetric":
            raise ValueError(f"compression_training.weight_quantization: target_bits={target_bits} (binary/ternary) "
                             f"needs quantization_type 'symmetric', got {quantization_type!r}")
        self.wq = dict(start_bits=start_bits, target_bits=target_bits, period=quantization_period,
                       type=quantization_type, groups=num_groups, in_forward=weight_quantization_enabled_in_forward,
                       bits=target_bits if weight_quantization_enabled_in_forward else start_bits, steps=0)

    def enable_activation_quantization(self, bits, quantization_type, range_calibration):
        self.aq = dict(bits=bits, type=quantization_type, range=range_calibration)
        self.register_buffer("act_range", torch.zeros(2, dtype=self.weight.dtype, device=self.weight.device))
        self.register_buffer("act_range_set", torch.zeros((), dtype=torch.bool, device=self.weight.device))

    def enable_sparse_pruning(self, dense_ratio, method):
        self.sparse_cfg = dict(dense_ratio=dense_ratio, method=method)
        self.register_buffer("sparse_pruning_mask", torch.ones_like(self.weight))
        if method == "topk":
            self.sparse_mask_scores = nn.Parameter(self.weight.detach().abs().clone())

    def enable_row_pruning(self, dense_ratio, method):
        self.row = dict(dense_ratio=dense_ratio, method=method)
        rows = self.weight.shape[0]
        self.register_buffer("row_pruning_mask", torch.ones(rows, dtype=self.weight.dtype, device=self.weight.device))
        if method == "topk":
            self.row_mask_scores = nn.Parameter(self._row_norms().clone())

    def _row_norms(self) -> torch.Tensor:
        return self.weight.detach().abs().reshape(self.weight.shape[0], -1).sum(dim=1)

    # -- switching on (scheduler) ------------------------------------------------------------

    def start_sparse_pruning(self) -> None:
        if self.sparse_cfg["method"] == "l1":
            self.sparse_pruning_mask.copy_(_topk_mask(self.weight.detach().abs(), self.sparse_cfg["dense_ratio"]))
        self.sparse_pruning_enabled = True

    def start_row_pruning(self) -> None:
        if self.row["method"] == "l1":
            self.row_pruning_mask.copy_(_topk_mask(self._row_norms(), self.row["dense_ratio"]))
        self.row_pruning_enabled = True

    # -- the masks in use --------------------------------------------------------------------

    def current_sparse_mask(self) -> torch.Tensor | None:
        if not self.sparse_pruning_enabled:
            return None
        if self.sparse_cfg["method"] == "topk":
            return _TopK.apply(self.sparse_mask_scores, self.sparse_cfg["dense_ratio"])
        return self.sparse_pruning_mask

    def current_row_mask(self) -> torch.Tensor | None:
        if not self.row_pruning_enabled:
            return None
        if self.row["method"] == "topk":
            return _TopK.apply(self.row_mask_scores, self.row["dense_ratio"])
        return self.row_pruning_mask

    def effective_weight(self, bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) as the forward pass uses them: masked, then fake-quantized (when weight
        quantization runs in the forward pass, or at ``bits`` when given) and masked again, so
        pruned weights stay exactly zero whatever the quantization grid."""
        w, b = self.weight, getattr(self, "bias", None)
        mask = self.weight_mask()
        if mask is not None:
            w = w * mask
        bm = self.bias_mask()
        if bm is not None and b is not None:
            b = b * bm
        if bits is None and self.weight_quantization_enabled and self.wq["in_forward"]:
            bits = self.wq["bits"]
        if bits is not None:
            w = fq.ste(w, self._quantize_weight(w, bits))
            if mask is not None:
                w = w * mask
        return w, b

    def _quantize_weight(self, w: torch.Tensor, bits: int) -> torch.Tensor:
        return fq.weight(w, bits, self.wq["type"], self.wq["groups"])

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        if not self.activation_quantization_enabled:
            return x
        aq = self.aq
        if aq["range"] == "dynamic":
            return fq.ste(x, fq.activation(x, aq["bits"], aq["type"]))
        # Note: static ranges follow an exponential moving average (momentum 0.95) of each
        # training batch's min/max; evaluation uses the range as it stands.
        if self.training:
            with torch.no_grad():
                now = torch.stack([x.detach().amin(), x.detach().amax()]).to(self.act_range.dtype)
                if bool(self.act_range_set):
                    self.act_range.mul_(0.95).add_(now, alpha=0.05)
                else:
                    self.act_range.copy_(now)
                    self.act_range_set.fill_(True)
        lo, hi = self.act_range[0].to(x.dtype), self.act_range[1].to(x.dtype)
        return fq.ste(x, fq.activation(x, aq["bits"], aq["type"], lo, hi))


class LinearLayer_Compress(_CompressMixin, nn.Linear):
    """``nn.Linear`` with weight/activation quantization, sparse, row (output) and head (input
    column blocks of an attention output projection) pruning."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_compress()

    @classmethod
    def from_linear(cls, m: nn.Linear) -> "LinearLayer_Compress":
        new = cls(m.in_features, m.out_features, bias=m.bias is not None, device=m.weight.device, dtype=m.weight.dtype)
        new.weight = m.weight
        new.bias = m.bias
        return new

    def enable_head_pruning(self, dense_ratio, method, num_heads):
        if self.in_features % num_heads:
            raise ValueError(f"compression_training.head_pruning.shared_parameters.num_heads={num_heads} does not "
                             f"divide the {self.in_features} input features of the output projection")
        self.head = dict(dense_ratio=dense_ratio, method=method, num_heads=num_heads)
        self.register_buffer("head_pruning_mask", torch.ones(num_heads, dtype=self.weight.dtype,
                                                              device=self.weight.device))
        if method == "topk":
            self.head_pruning_scores = nn.Parameter(self._head_norms().clone())

    def _head_norms(self) -> torch.Tensor:
        h = self.head["num_heads"]
        return self.weight.detach().abs().reshape(self.out_features, h, -1).sum(dim=(0, 2))

    def start_head_pruning(self) -> None:
        if self.head["method"] == "l1":
            self.head_pruning_mask.copy_(_topk_mask(self._head_norms(), self.head["dense_ratio"]))
        self.head_pruning_enabled = True

    def current_head_mask(self) -> torch.Tensor | None:
        if not self.head_pruning_enabled:
            return None
        if self.head["method"] == "topk":
            return _TopK.apply(self.head_pruning_scores, self.head["dense_ratio"])
        return self.head_pruning_mask

    def weight_mask(self) -> torch.Tensor | None:
        """The product of the switched-on masks, shaped like the weight (None: no mask)."""
        mask = self.current_sparse_mask()
        rm = self.current_row_mask()
        if rm is not None:
            mask = rm.unsqueeze(1) if mask is None else mask * rm.unsqueeze(1)
        hm = self.current_head_mask()
        if hm is not None:
            cols = hm.repeat_interleave(self.in_features // self.head["num_heads"]).unsqueeze(0)
            mask = cols if mask is None else mask * cols
        return mask

    def bias_mask(self) -> torch.Tensor | None:
        return self.current_row_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.effective_weight()
        return F.linear(self._act(x), w, b)


class Conv2dLayer_Compress(_CompressMixin, nn.Conv2d):
    """``nn.Conv2d`` with weight/activation quantization, sparse and channel (output channel)
    pruning."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_compress()

    @classmethod
    def from_conv(cls, m: nn.Conv2d) -> "Conv2dLayer_Compress":
        new = cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                  dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
                  device=m.weight.device, dtype=m.weight.dtype)
        new.weight = m.weight
        new.bias = m.bias
        return new

    def enable_channel_pruning(self, dense_ratio, method):
        self.channel = dict(dense_ratio=dense_ratio, method=method)
        self.register_buffer("channel_pruning_mask", torch.ones(self.out_channels, dtype=self.weight.dtype,
                                                                 device=self.weight.device))
        if method == "topk":
            self.channel_mask_scores = nn.Parameter(self._row_norms().clone())

    def start_channel_pruning(self) -> None:
        if self.channel["method"] == "l1":
            self.channel_pruning_mask.copy_(_topk_mask(self._row_norms(), self.channel["dense_ratio"]))
        self.channel_pruning_enabled = True

    def current_channel_mask(self) -> torch.Tensor | None:
        if not self.channel_pruning_enabled:
            return None
        if self.channel["method"] == "topk":
            return _TopK.apply(self.channel_mask_scores, self.channel["dense_ratio"])
        return self.channel_pruning_mask

    def weight_mask(self) -> torch.Tensor | None:
        mask = self.current_sparse_mask()
        cm = self.bias_mask()
        if cm is not None:
            mask = cm.view(-1, 1, 1, 1) if mask is None else mask * cm.view(-1, 1, 1, 1)
        return mask

    def bias_mask(self) -> torch.Tensor | None:
        cm = self.current_channel_mask()
        return self.current_row_mask() if cm is None else cm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.effective_weight()
        return self._conv_forward(self._act(x), w, b)


class Embedding_Compress(_CompressMixin, nn.Embedding):
    """``nn.Embedding`` with weight quantization (rows are the groups' natural unit)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_compress()

    @classmethod
    def from_embedding(cls, m: nn.Embedding) -> "Embedding_Compress":
        new = cls(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx, max_norm=m.max_norm,
                  norm_type=m.norm_type, scale_grad_by_freq=m.scale_grad_by_freq, sparse=m.sparse,
                  device=m.weight.device, dtype=m.weight.dtype)
        new.weight = m.weight
        return new

    def weight_mask(self) -> torch.Tensor | None:
        return self.current_sparse_mask()

    def bias_mask(self) -> None:
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, _ = self.effective_weight()
        return F.embedding(x, w, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq,
                           self.sparse)


COMPRESS_LAYERS = (LinearLayer_Compress, Conv2dLayer_Compress, Embedding_Compress)
