"""Bucketed gradient reduce-scatter into each rank's flat gradient partition (ZeRO 1 and 2).

Buckets are fixed at construction: walking each group's parameters backwards (the order in which
backward produces their gradients), consecutive parameters are packed until a bucket holds
``reduce_bucket_size`` elements. Because the flat layout keeps parameters in order, a bucket is one
contiguous interval of the group's flat index space, so its reduction is a single reduce-scatter
whose per-rank pieces are the bucket's overlaps with each rank's partition (pieces may be uneven
or empty). Each rank adds the piece it receives to its fp32 gradient partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from deepspeed.runtime.zero import _comm
from deepspeed.runtime.zero._partition import FlatLayout, _Interval


@dataclass
class _Bucket:
    group: int
    indices: list[int]  # ascending parameter indices inside the group
    interval: _Interval
    ready: set = field(default_factory=set)
    launched: bool = False


class GradientReducer:
    """Reduces parameter gradients into ``grad_partitions`` (one fp32 tensor per group).

    ``overlap``: launch each bucket's collective asynchronously as soon as its last gradient is
    ready (from a post-accumulate-grad hook) and wait for it only when the result is needed.
    """

    #: Launched buckets allowed in flight before the oldest is waited for (bounds staging memory).
    max_in_flight = 2

    def __init__(self, layouts: list[FlatLayout], grad_partitions: list[torch.Tensor], bucket_numel: int,
                 comm_dtype: torch.dtype | None, process_group=None, overlap: bool = True):
        self.layouts = layouts
        self.grad_partitions = grad_partitions
        self.comm_dtype = comm_dtype
        self.group = process_group
        self.overlap = overlap
        self.world_size = _comm.world_size(process_group)
        self.rank = _comm.rank(process_group)
        self.buckets: list[_Bucket] = []
        self._bucket_of: dict[int, tuple[int, int]] = {}  # id(param) -> (bucket index, param index)
        self._pending: list[tuple] = []
        self._hooks = []
        bucket_numel = max(1, int(bucket_numel))
        for g, layout in enumerate(layouts):
            current: list[int] = []
            size = 0
            for i in reversed(range(len(layout.params))):
                current.append(i)
                size += layout.params[i].numel()
                if size >= bucket_numel:
                    self._add_bucket(g, current)
                    current, size = [], 0
            if current:
                self._add_bucket(g, current)

    def _add_bucket(self, group: int, indices: list[int]) -> None:
        indices = sorted(indices)
        layout = self.layouts[group]
        start = layout.offsets[indices[0]]
        end = layout.offsets[indices[-1]] + layout.params[indices[-1]].numel()
        self.buckets.append(_Bucket(group, indices, _Interval(start, end)))
        for i in indices:
            self._bucket_of[id(layout.params[i])] = (len(self.buckets) - 1, i)

    # -- hooks (ZeRO 2) -------------------------------------------------------------------------
    def register_hooks(self) -> None:
        for layout in self.layouts:
            for p in layout.params:
                self._hooks.append(p.register_post_accumulate_grad_hook(self._on_grad_ready))

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _on_grad_ready(self, param: torch.Tensor) -> None:
        b, i = self._bucket_of[id(param)]
        bucket = self.buckets[b]
        if bucket.launched:
            # Note: a second backward before the epilogue (retain_graph, or a param reached twice
            # through separate graphs) reduces this bucket again; its contributions add up.
            self._wait_all()
            bucket.launched = False
            bucket.ready.clear()
        bucket.ready.add(i)
        if len(bucket.ready) == len(bucket.indices):
            self._launch(bucket)

    # -- reduction ------------------------------------------------------------------------------
    def _launch(self, bucket: _Bucket) -> None:
        layout = self.layouts[bucket.group]
        params = [layout.params[i] for i in bucket.indices]
        dtype = self.comm_dtype or params[0].dtype
        grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=dtype, device=p.device)
                 for p in params]
        sizes = [bucket.interval.intersect(layout.partition_interval(r)).numel for r in range(self.world_size)]
        mine = bucket.interval.intersect(layout.partition_interval(self.rank))
        output = torch.empty(mine.numel, dtype=dtype, device=grads[0].device)
        # Note: fp16 sums are divided by the world size before summing, as DDP does, to stay in
        # range; other dtypes divide the (1/N-sized) result.
        if dtype == torch.float16 and self.world_size > 1:
            grads = [g.to(dtype).div(self.world_size) for g in grads]
        work, staging = _comm.reduce_scatter_sources(output, grads, sizes, dtype, group=self.group,
                                                     async_op=self.overlap)
        for p in params:
            p.grad = None
        bucket.launched = True
        self._pending.append((work, output, staging, bucket.group, mine.start - self.rank * layout.partition_numel))
        if not self.overlap:
            self._complete(self._pending.pop())
        while len(self._pending) > self.max_in_flight:
            self._complete(self._pending.pop(0))

    def _complete(self, entry) -> None:
        work, output, _staging, group, offset = entry
        if work is not None:
            work.wait()
        if output.numel():
            if output.dtype != torch.float16 and self.world_size > 1:
                output.div_(self.world_size)
            self.grad_partitions[group].narrow(0, offset, output.numel()).add_(output.to(self.grad_partitions[group].device, torch.float32))

    def _wait_all(self) -> None:
        while self._pending:
            self._complete(self._pending.pop(0))

    def reduce_all(self) -> None:
        """Launch every bucket not launched yet (missing gradients count as zeros), then wait.

        After this, every rank's ``grad_partitions`` hold the averaged gradients of its slice.
        """
        for bucket in self.buckets:
            if not bucket.launched:
                self._launch(bucket)
        self._wait_all()
        for bucket in self.buckets:
            bucket.launched = False
            bucket.ready.clear()

    def has_pending(self) -> bool:
        return bool(self._pending) or any(b.ready or b.launched for b in self.buckets)
