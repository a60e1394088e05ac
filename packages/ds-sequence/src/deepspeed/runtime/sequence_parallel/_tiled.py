"""Compute in sequence tiles so activation memory stays bounded (ALST's tiled MLP and loss).

The forward pass runs the function one tile of the sequence at a time without keeping any
intermediate activation; the backward pass recomputes one tile at a time (:class:`TiledMLP`,
:class:`SequenceTiledCompute`) or the gradients are computed tile by tile during the forward pass
(:class:`TiledFusedLogitsLoss`, which never holds more than one tile of logits).

Unlike DeepSpeed's, the parameters the function uses are inputs of the autograd function: their
gradients are summed over the tiles inside it and handed to autograd once, so every engine hook
(the data-parallel reducer, ZeRO-1/2's buckets) sees one complete gradient per parameter, and an
upstream gradient other than 1 (a loss weight, a loss scale) scales the parameters' gradients too.
``compute_params`` names those parameters (default: the parameters of ``self`` when it is a
module); a parameter the function uses that is in neither is trained by nothing, as with DeepSpeed.
ZeRO-3 partitions parameters and gathers them per module call: tiled compute under ZeRO-3 is
refused (a parameter with ``ds_id``) instead of producing wrong gradients.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch


def _params(module: Any, compute_params: Optional[list]) -> list:
    if compute_params is None:
        compute_params = list(module.parameters()) if isinstance(module, torch.nn.Module) else []
    seen, out = set(), []
    for p in compute_params:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"compute_params must hold tensors (got {type(p).__name__})")
        if hasattr(p, "ds_id"):
            raise NotImplementedError("tiled compute under ZeRO stage 3 is not supported (its parameters are "
                                      "partitioned and gathered per module call); use ZeRO stage 0-2")
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _check_shards(shards: Any, length: int, what: str) -> int:
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"{what}: shards must be a positive integer (got {shards!r})")
    if length < 1:
        raise ValueError(f"{what}: the sequence to tile is empty")
    return min(shards, length)


def _grads(output, inputs, grad_output):
    return torch.autograd.grad(output, inputs, grad_output, allow_unused=True)


def _accumulate(acc: list, grads) -> None:
    for i, g in enumerate(grads):
        if g is not None:
            acc[i] = g if acc[i] is None else acc[i] + g


class TiledMLP(torch.autograd.Function):
    """``TiledMLP.apply(fn, self, x, shards, compute_params=None)``: ``fn(self, x_tile)`` over
    ``shards`` tiles of ``x`` along dimension -2 (``[batch, seq, hidden]`` or ``[tokens, hidden]``),
    concatenated. Equal to ``fn(self, x)`` (values and gradients) for any function that treats
    positions independently (an MLP)."""

    @classmethod
    def apply(cls, fn: Callable, self: Any, x: torch.Tensor, shards: int, compute_params: Optional[list] = None):
        if x.dim() < 2:
            raise ValueError(f"TiledMLP: x must be at least 2-D, [..., seq, hidden] (got shape {tuple(x.shape)})")
        shards = _check_shards(shards, x.shape[-2], "TiledMLP")
        params = _params(self, compute_params)
        return super().apply(fn, self, x, shards, len(params), *params)

    @staticmethod
    def forward(ctx, fn, module, x, shards, n_params, *params):
        ctx.fn, ctx.module, ctx.shards, ctx.params = fn, module, shards, params
        ctx.save_for_backward(x)
        with torch.no_grad():
            return torch.cat([fn(module, t) for t in x.chunk(shards, dim=-2)], dim=-2)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        want_x = ctx.needs_input_grad[2]
        x_grad = torch.empty_like(x) if want_x else None
        acc = [None] * len(ctx.params)
        off = 0
        for xt, gt in zip(x.chunk(ctx.shards, dim=-2), grad.chunk(ctx.shards, dim=-2)):
            xt = xt.detach().requires_grad_(want_x)
            with torch.enable_grad():
                out = ctx.fn(ctx.module, xt)
            grads = _grads(out, ([xt] if want_x else []) + list(ctx.params), gt)
            if want_x:
                x_grad.narrow(-2, off, xt.shape[-2]).copy_(grads[0])
                grads = grads[1:]
            _accumulate(acc, grads)
            off += xt.shape[-2]
        return (None, None, x_grad, None, None, *acc)


class TiledFusedLogitsLoss(torch.autograd.Function):
    """``TiledFusedLogitsLoss.apply(fn, self, x, y, mask, shards, compute_params, output_reduction)``:
    ``fn(self, x_tile, y_tile[, mask_tile])`` (typically ``lm_head`` + cross-entropy) over
    ``shards`` tiles of the flattened ``[batch * seq]`` rows, reduced by ``"mean"`` (of the tiles'
    outputs, DeepSpeed's definition) or ``"sum"``. Gradients are computed tile by tile during the
    forward pass, so at most one tile of logits exists at a time."""

    @classmethod
    def apply(cls, fn, self, x, y, mask, shards, compute_params=None, output_reduction="mean"):
        if output_reduction not in ("mean", "sum"):
            raise ValueError(f'TiledFusedLogitsLoss: unknown output_reduction {output_reduction!r}: valid values '
                             f'are "mean" and "sum"')
        if x.dim() < 2 or y.dim() < 2:
            raise ValueError(f"TiledFusedLogitsLoss: x and y must be at least 2-D, [batch, seq, ...] (got shapes "
                             f"{tuple(x.shape)} and {tuple(y.shape)})")
        if x.shape[:2] != y.shape[:2]:
            raise ValueError(f"TiledFusedLogitsLoss: x and y must agree on [batch, seq] (got {tuple(x.shape[:2])} "
                             f"and {tuple(y.shape[:2])})")
        if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"TiledFusedLogitsLoss: mask must be [batch, seq] = {tuple(x.shape[:2])} (got "
                             f"{tuple(mask.shape)})")
        shards = _check_shards(shards, x.shape[0] * x.shape[1], "TiledFusedLogitsLoss")
        params = _params(self, compute_params)
        return super().apply(fn, self, x, y, mask, shards, output_reduction, len(params), *params)

    @staticmethod
    def forward(ctx, fn, module, x, y, mask, shards, reduction, n_params, *params):
        want_x = x.requires_grad
        bs, seq = x.shape[:2]
        xf = x.detach().reshape(bs * seq, *x.shape[2:])
        yf = y.reshape(bs * seq, *y.shape[2:])
        mf = mask.reshape(-1) if mask is not None else None
        x_grad = torch.zeros_like(xf) if want_x else None
        acc = [None] * len(params)
        weight = torch.tensor(1.0 / shards if reduction == "mean" else 1.0, dtype=x.dtype, device=x.device)
        outs, off = [], 0
        chunks = zip(xf.chunk(shards), yf.chunk(shards), mf.chunk(shards) if mf is not None else [None] * shards)
        for xt, yt, mt in chunks:
            xt = xt.detach().requires_grad_(want_x)
            args = (module, xt, yt) + ((mt,) if mt is not None else ())
            with torch.enable_grad():
                out = fn(*args)
            inputs = ([xt] if want_x else []) + list(params)
            if inputs and out.requires_grad:
                grads = _grads(out, inputs, weight)
                if want_x:
                    if grads[0] is not None:
                        x_grad.narrow(0, off, xt.shape[0]).copy_(grads[0])
                    grads = grads[1:]
                _accumulate(acc, grads)
            outs.append(out.detach())
            off += xt.shape[0]
        stacked = torch.stack(outs)
        ctx.x_grad = x_grad.view(x.shape) if want_x else None
        ctx.acc = acc
        return stacked.mean() if reduction == "mean" else stacked.sum()

    @staticmethod
    def backward(ctx, grad):
        x_grad = ctx.x_grad * grad if ctx.x_grad is not None else None
        acc = [g * grad if g is not None else None for g in ctx.acc]
        ctx.x_grad = ctx.acc = None
        return (None, None, x_grad, None, None, None, None, None, *acc)


class SequenceTiledCompute(torch.autograd.Function):
    """The generic tiled compute behind :func:`sequence_tiled_compute` (DeepSpeed's positional
    order: ``fn, seqlen, shards, keys_to_shard, keys_to_pass, grad_requiring_tensor_key,
    compute_params, output_unshard_dimension, output_reduction, *tensors``)."""

    @classmethod
    def apply(cls, fn, seqlen, shards, keys_to_shard, keys_to_pass, grad_requiring_tensor_key, compute_params,
              output_unshard_dimension, output_reduction, *args):
        if output_reduction not in (None, "mean", "sum"):
            raise ValueError(f"sequence_tiled_compute: unknown output_reduction {output_reduction!r}: valid values "
                             f"are None, \"mean\" and \"sum\"")
        keys = list(keys_to_shard) + list(keys_to_pass)
        if grad_requiring_tensor_key not in keys_to_shard:
            raise ValueError(f"sequence_tiled_compute: grad_requiring_tensor_key {grad_requiring_tensor_key!r} is "
                             f"not one of kwargs_to_shard ({', '.join(map(repr, keys_to_shard))})")
        for k, v in zip(keys_to_shard, args):
            if not isinstance(v, torch.Tensor) or v.dim() < 2 or v.shape[1] != seqlen:
                shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"sequence_tiled_compute: kwargs_to_shard[{k!r}] must be a [batch, seqlen={seqlen}, "
                                 f"...] tensor (got {shape})")
        shards = _check_shards(shards, seqlen, "sequence_tiled_compute")
        params = _params(None, compute_params)
        meta = (fn, seqlen, shards, list(keys_to_shard), keys, grad_requiring_tensor_key, output_unshard_dimension,
                output_reduction, len(args))
        return super().apply(meta, *args, *params)

    @staticmethod
    def forward(ctx, meta, *tensors):
        fn, seqlen, shards, keys_to_shard, keys, key, dim, reduction, n_args = meta
        args, params = tensors[:n_args], tensors[n_args:]
        ctx.meta, ctx.params = meta, params
        ctx.save_for_backward(*[a if isinstance(a, torch.Tensor) else None for a in args])
        ctx.others = [None if isinstance(a, torch.Tensor) else a for a in args]
        step = math.ceil(seqlen / shards)
        sharded = {k: v for k, v in zip(keys, args) if k in keys_to_shard}
        passed = {k: v for k, v in zip(keys, args) if k not in keys_to_shard}
        outs = []
        with torch.no_grad():
            for i in range(0, seqlen, step):
                outs.append(fn(**{k: v[:, i:i + step] for k, v in sharded.items()}, **passed))
        out = torch.stack(outs) if dim == 0 else torch.cat(outs, dim=dim)
        ctx.out_sizes = [1 if dim == 0 else o.shape[dim] for o in outs]
        ctx.out_shape, ctx.step = out.shape, step
        if reduction is None:
            return out
        return out.mean() if reduction == "mean" else out.sum()

    @staticmethod
    def backward(ctx, grad):
        fn, seqlen, shards, keys_to_shard, keys, key, dim, reduction, n_args = ctx.meta
        saved = ctx.saved_tensors
        args = [s if s is not None else o for s, o in zip(saved, ctx.others)]
        if reduction == "sum":
            grad = grad.expand(ctx.out_shape)
        elif reduction == "mean":
            grad = (grad / math.prod(ctx.out_shape)).expand(ctx.out_shape)
        target_i = keys.index(key)
        target = args[target_i]
        want_x = ctx.needs_input_grad[1 + target_i]
        x_grad = torch.zeros_like(target) if want_x else None
        acc = [None] * len(ctx.params)
        passed = {k: v for k, v in zip(keys, args) if k not in keys_to_shard}
        step, off = ctx.step, 0
        for n, i in zip(ctx.out_sizes, range(0, seqlen, step)):
            tiles = {k: v[:, i:i + step] for k, v in zip(keys, args) if k in keys_to_shard}
            xt = tiles[key].detach().requires_grad_(want_x)
            tiles[key] = xt
            with torch.enable_grad():
                out = fn(**tiles, **passed)
            g = grad.narrow(0, off // 1, 1)[0] if dim == 0 else grad.narrow(dim, off, n)
            grads = _grads(out, ([xt] if want_x else []) + list(ctx.params), g)
            if want_x:
                if grads[0] is not None:
                    x_grad[:, i:i + step] = grads[0]
                grads = grads[1:]
            _accumulate(acc, grads)
            off += n
        arg_grads = [None] * n_args
        arg_grads[target_i] = x_grad
        return (None, *arg_grads, *acc)


def sequence_tiled_compute(fn, seqlen, shards, kwargs_to_shard, kwargs_to_pass, grad_requiring_tensor_key,
                           compute_params=None, output_unshard_dimension=1, output_reduction="mean"):
    """``fn(**tile_of(kwargs_to_shard), **kwargs_to_pass)`` over ``shards`` tiles of the sequence
    (dimension 1 of every ``kwargs_to_shard`` tensor, tiles of ``ceil(seqlen / shards)``), the
    outputs concatenated along ``output_unshard_dimension`` (0: scalar outputs, stacked) and reduced
    (``None``, ``"mean"`` or ``"sum"``). The backward pass recomputes one tile at a time. Gradients
    flow to ``kwargs_to_shard[grad_requiring_tensor_key]`` and ``compute_params``."""
    return SequenceTiledCompute.apply(fn, seqlen, shards, list(kwargs_to_shard), list(kwargs_to_pass),
                                      grad_requiring_tensor_key, compute_params, output_unshard_dimension,
                                      output_reduction, *kwargs_to_shard.values(), *kwargs_to_pass.values())
