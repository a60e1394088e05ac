"""ZeRO's two gradient collectives, run by ds-core's bucket reducer
(:class:`deepspeed.runtime.grad_buckets.BucketReducer`) through ``deepspeed.comm``.

* :class:`IntervalReduceScatter` (stages 1 and 2): a bucket is a contiguous interval of a param
  group's flat layout (:mod:`._flat_layout`); one reduce-scatter hands each rank the bucket's
  overlap with its partition (pieces may be uneven or empty), added into its fp32 gradient
  partition.
* :class:`RowReduceScatter` (stage 3): each parameter's gradient is padded to ``world * part``
  and seen as ``world`` rows of ``part`` elements; a bucket lays its parameters' rows side by side,
  so one reduce-scatter hands every rank its slice of every parameter in the bucket.

Gradients are averaged over the data-parallel ranks: fp16 sums are divided by the world size
before summing, as DDP does, to stay in range; other dtypes divide the (1/N-sized) result.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

import deepspeed.comm as ds_comm
from deepspeed.runtime.grad_buckets import Bucket, BucketCollective, BucketReducer, pack
from deepspeed.runtime.zero import _ranks
from deepspeed.runtime.zero._flat_layout import FlatLayout, _Interval


class IntervalReduceScatter(BucketCollective):
    """Reduce-scatter of flat intervals into ``grad_partitions`` (one fp32 tensor per group)."""

    def __init__(self, layouts: list[FlatLayout], grad_partitions: list[torch.Tensor], comm_dtype, group,
                 async_op: bool = True):
        self.layouts = layouts
        self.grad_partitions = grad_partitions
        self.comm_dtype = comm_dtype
        self.group = group
        self.async_op = async_op
        self.world_size = _ranks.world_size(group)
        self.rank = _ranks.rank(group)

    @classmethod
    def reducer(cls, layouts: list[FlatLayout], grad_partitions: list[torch.Tensor], bucket_numel: int, comm_dtype,
                group, overlap: bool = True) -> BucketReducer:
        """The bucket reducer: walking each group's parameters backwards (the order backward
        produces their gradients), consecutive parameters fill a bucket up to ``bucket_numel``.
        ``overlap``: launch each bucket asynchronously once its gradients are ready and wait for it
        only when two more are in flight or at the flush."""
        buckets = []
        for g, layout in enumerate(layouts):
            for run in pack(list(reversed(range(len(layout.params)))), bucket_numel,
                            size=lambda i, lay=layout: lay.params[i].numel()):
                indices = sorted(run)
                start = layout.offsets[indices[0]]
                end = layout.offsets[indices[-1]] + layout.params[indices[-1]].numel()
                buckets.append(([layout.params[i] for i in indices], (g, _Interval(start, end))))
        collective = cls(layouts, grad_partitions, comm_dtype, group, async_op=overlap)
        return BucketReducer(collective, buckets, max_in_flight=2 if overlap else 0)

    def launch(self, bucket: Bucket) -> Any:
        g, interval = bucket.payload
        layout = self.layouts[g]
        params = bucket.params
        dtype = self.comm_dtype or params[0].dtype
        grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=dtype, device=p.device)
                 for p in params]
        sizes = [interval.intersect(layout.partition_interval(r)).numel for r in range(self.world_size)]
        mine = interval.intersect(layout.partition_interval(self.rank))
        output = torch.empty(mine.numel, dtype=dtype, device=grads[0].device)
        if dtype == torch.float16 and self.world_size > 1:
            grads = [x.to(dtype).div(self.world_size) for x in grads]
        if self.world_size > 1:
            work = ds_comm.reduce_scatter_from(output, grads, sizes, dtype=dtype, group=self.group,
                                               async_op=self.async_op)
        else:
            output.copy_(torch.cat([x.to(dtype) for x in grads]) if len(grads) > 1 else grads[0])
            work = None
        for p in params:
            p.grad = None
        return work, output, g, mine.start - self.rank * layout.partition_numel

    def complete(self, bucket: Bucket, handle: Any) -> None:
        work, output, g, offset = handle
        if work is not None:
            work.wait()
        if output.numel():
            if output.dtype != torch.float16 and self.world_size > 1:
                output.div_(self.world_size)
            part = self.grad_partitions[g]
            part.narrow(0, offset, output.numel()).add_(output.to(part.device, torch.float32))


class RowReduceScatter(BucketCollective):
    """Reduce-scatter of ZeRO-3 gradients (given with each parameter) into per-parameter fp32
    slices ``grad_slices[ds_id]``; ``on_reduced(params)`` runs once a bucket's slices are written."""

    def __init__(self, grad_slices: dict, comm_dtype, group, on_reduced: Callable[[list], None]):
        self.grad_slices = grad_slices
        self.comm_dtype = comm_dtype
        self.group = group
        self.world = _ranks.world_size(group)
        self.on_reduced = on_reduced

    @classmethod
    def reducer(cls, grad_slices: dict, bucket_numel: int, comm_dtype, group, on_reduced) -> BucketReducer:
        """Buckets filled in arrival order up to ``bucket_numel`` partition elements."""
        return BucketReducer(cls(grad_slices, comm_dtype, group, on_reduced), limit=bucket_numel,
                             size=lambda p: p.ds_tensor.numel())

    def launch(self, bucket: Bucket) -> Any:
        grads = bucket.items
        dtype = self.comm_dtype or grads[0].dtype
        cols = []
        for p, g in zip(bucket.params, grads):
            part = p.ds_tensor.numel()
            flat = g.reshape(-1).to(dtype)
            if flat.numel() < part * self.world:
                flat = torch.cat([flat, flat.new_zeros(part * self.world - flat.numel())])
            cols.append(flat.view(self.world, part))
        staging = torch.cat(cols, dim=1) if len(cols) > 1 else cols[0].contiguous()
        if self.world > 1:
            staging.div_(self.world)
        out = staging.new_empty(staging.shape[1])
        flat = staging.reshape(-1)
        if self.world > 1:
            work = ds_comm.reduce_scatter_tensor(out, flat, group=self.group, async_op=True)
        else:
            out.copy_(flat)
            work = None
        bucket.items = []  # Note: the full gradients are no longer referenced once staged
        return work, out, staging

    def complete(self, bucket: Bucket, handle: Any) -> None:
        work, out, _staging = handle
        if work is not None:
            work.wait()
        offset = 0
        for p in bucket.params:
            n = p.ds_tensor.numel()
            dst = self.grad_slices[p.ds_id]
            dst.add_(out.narrow(0, offset, n).to(dst.device, torch.float32))
            offset += n
        self.on_reduced(bucket.params)
