"""Data-parallel gradient reduction: flat gradient buffers cut into buckets, each all-reduced
asynchronously from a post-accumulate-grad hook as soon as its last gradient is ready, so
communication overlaps the rest of the backward pass.

Every trainable parameter's ``.grad`` is a view into one flat buffer per dtype (laid out in reverse
registration order, roughly the order backward produces gradients), so accumulation across
micro-steps happens in place, buckets are contiguous slices (no copies before or after the
collective), and clipping/unscaling work on a few flat tensors instead of one tensor per parameter.
"""

from __future__ import annotations

from typing import Any

import torch

import deepspeed.comm as ds_comm
from deepspeed.comm import shm as _shm
from deepspeed.runtime import grad_buckets
from deepspeed.runtime.grad_buckets import Bucket, BucketCollective, BucketReducer


class _Slice:
    """One bucket's piece of a flat gradient buffer (and its copy in the communication dtype),
    reduced over ``group`` (the data-parallel group, or a gradient group's; None: nobody else)."""

    __slots__ = ("buffer", "comm", "group")

    def __init__(self, buffer: torch.Tensor, comm_dtype: torch.dtype | None, group: Any = None):
        self.buffer = buffer
        self.comm = None if comm_dtype is None or comm_dtype == buffer.dtype else torch.empty_like(buffer, dtype=comm_dtype)
        self.group = group


class _AllReduceSlices(BucketCollective):
    """All-reduce of a bucket's flat slice, averaged as the reducer's options say."""

    def __init__(self, reducer: "GradientReducer"):
        self.reducer = reducer

    def launch(self, bucket: Bucket) -> Any:
        r, piece = self.reducer, bucket.payload
        t = piece.buffer
        if piece.comm is not None:
            piece.comm.copy_(t)
            t = piece.comm
        if r.average:
            if r.prescale:
                t.mul_(1.0 / r.world_size)
            elif r.predivide != 1.0:
                t.mul_(1.0 / r.predivide)
        if piece.group is None:
            return None  # Note: a gradient group held by this rank alone: only the averaging below
        return ds_comm.all_reduce(t, group=piece.group, async_op=True)

    def complete(self, bucket: Bucket, work: Any) -> None:
        piece = bucket.payload
        if work is not None:
            work.wait()
        if piece.comm is not None:
            piece.buffer.copy_(piece.comm)
        factor = self.reducer._post_factor()
        if factor != 1.0:
            piece.buffer.mul_(factor)


class GradientReducer:
    """Owns the flat gradient buffers of ``params`` and reduces them over ``group``.

    ``bucket_numel``: elements per bucket (``zero_optimization.reduce_bucket_size``);
    ``predivide``: ``gradient_predivide_factor``; ``prescale``: ``prescale_gradients`` (divide by
    the world size before the sum instead of after); ``comm_dtype``: ``communication_data_type``
    (None: the buffers' dtype); ``average``: False for ``gradient_allreduce_op: "sum"``;
    ``accum_dtype``: accumulate in this dtype instead of the parameters' (bf16 training
    accumulates in fp32): each backward's gradient is added into the flat buffer by the hook and
    ``.grad`` is set back to None, so ``.grad`` is not a view in that mode.
    ``gradient_groups``: the features' :class:`~deepspeed.protocols.feature.GradientGroup` s; their
    parameters sit in runs of their own in the flat buffers, reduced over their group (still
    averaged over ``world_size``), and :meth:`global_norm` adds their squares over each
    ``shard_group``.
    """

    def __init__(self, params: list[torch.nn.Parameter], group: Any = None, world_size: int = 1,
                 bucket_numel: int | None = None, predivide: float = 1.0, prescale: bool = False,
                 comm_dtype: torch.dtype | None = None, average: bool = True,
                 accum_dtype: torch.dtype | None = None, gradient_groups=()):
        self.params = list(params)
        self.gradient_groups = list(gradient_groups)
        domain_of = {id(p): d for d, gg in enumerate(self.gradient_groups) for p in gg.params}
        self.group = group
        self.world_size = world_size
        self.average = average
        self.prescale = prescale
        self.predivide = predivide
        self.flats: list[torch.Tensor] = []
        self.views: list[torch.Tensor] = []
        self.order: list[torch.nn.Parameter] = []
        bucket_numel = grad_buckets.bucket_numel(bucket_numel)
        buckets: list[tuple[list, _Slice]] = []
        self._reducing = False
        self._hooks = []

        self.accumulating = accum_dtype is not None and any(p.dtype != accum_dtype for p in self.params)
        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
        for p in reversed(self.params):
            by_dtype.setdefault(accum_dtype if self.accumulating else p.dtype, []).append(p)
        # Note: a gradient group's parameters form one contiguous run per flat buffer (after the
        # data-parallel ones), so a bucket never mixes two reduction groups.
        by_dtype = {dt: sorted(ps, key=lambda p: domain_of.get(id(p), -1)) for dt, ps in by_dtype.items()}
        #: ``(flat index, start, end, gradient group index or -1)`` runs, for norms.
        self.runs: list[tuple[int, int, int, int]] = []
        # Note: ranks sharing a host reduce through shared memory, synchronously, when the backward
        # pass ends (elsewhere each bucket's gloo/NCCL all-reduce starts from the hook that
        # completes it and runs asynchronously). The flat buffers then live in shared memory
        # themselves, so the all-reduce reads the other ranks' gradients where they are.
        self._shm = None
        self._shared: list = []
        # Note: shared buffers are reduced whole over the data-parallel group; gradient groups need
        # per-run groups, so they take the per-bucket collectives instead.
        if group is not None and world_size > 1 and all(p.device.type == "cpu" for p in self.params) \
                and not self.gradient_groups:
            self._shm = _shm.for_group(group)
        for dtype, ps in by_dtype.items():
            device = ps[0].device
            numel = sum(p.numel() for p in ps)
            shared = None
            if self._shm is not None and comm_dtype in (None, dtype):
                shared = self._shm.shared_buffer(numel, dtype)
            if shared is not None:
                self._shared.append(shared)
                flat = shared.local
            else:
                flat = torch.zeros(numel, dtype=dtype, device=device)
            self.flats.append(flat)
            off, start, members = 0, 0, []
            run_start = 0
            for i, p in enumerate(ps):
                n = p.numel()
                view = flat[off:off + n].view_as(p)
                if p.grad is not None:
                    view.copy_(p.grad)
                p.grad = None if self.accumulating else view
                self.views.append(view)
                self.order.append(p)
                members.append(p)
                off += n
                d = domain_of.get(id(p), -1)
                last_of_run = i == len(ps) - 1 or domain_of.get(id(ps[i + 1]), -1) != d
                if off - start >= bucket_numel or last_of_run:
                    g = group if d < 0 else self.gradient_groups[d].group
                    buckets.append((members, _Slice(flat[start:off], comm_dtype, g)))
                    start, members = off, []
                if last_of_run:
                    self.runs.append((len(self.flats) - 1, run_start, off, d))
                    run_start = off
        self._view_of = {id(p): v for p, v in zip(self.order, self.views)}
        if len(self._shared) != len(self.flats):
            self._shared = []  # some flat is private: every bucket takes the slot-based path
        # Note: buckets are launched strictly in index order so every rank issues the same
        # sequence of collectives even when gradients become ready in a different order; all of
        # them may be in flight at once (they are slices of buffers that persist anyway).
        self.buckets = BucketReducer(_AllReduceSlices(self), buckets, ordered=True, max_in_flight=len(buckets))
        # Note: shared-memory reductions are synchronous and run on this thread, so launching them
        # early overlaps nothing and makes the ranks meet once per bucket (each meeting costs the
        # ranks' current skew); with shared memory every bucket is reduced when backward ends.
        self._defer = self._shm is not None
        if (group is not None and world_size > 1) or self.accumulating:
            for p in self.order:
                self._hooks.append(p.register_post_accumulate_grad_hook(self._make_hook(self._view_of[id(p)])))

    # -- the hot path ---------------------------------------------------------------------

    def _make_hook(self, view: torch.Tensor):
        buckets = self.buckets

        if self.accumulating:
            def accumulate(p: torch.Tensor) -> None:
                view.add_(p.grad)
                p.grad = None
                if self._reducing and not self._defer:
                    buckets.ready(p)

            return accumulate

        def hook(p: torch.Tensor) -> None:
            g = p.grad
            if g is not view:
                # Note: someone set .grad to None (an optimizer's zero_grad): AccumulateGrad then
                # made a fresh tensor; fold it back into the flat buffer and restore the view.
                view.copy_(g)
                p.grad = view
            if self._reducing and not self._defer:
                buckets.ready(p)

        return hook

    def prepare(self, reduce: bool) -> None:
        """Before a backward pass: arm the hooks when this backward ends an accumulation window."""
        self._reducing = reduce and self.group is not None and self.world_size > 1
        if self._reducing:
            self.buckets.reset()

    def finish(self) -> None:
        """After the backward pass: re-attach the views, launch what is left (unused parameters),
        wait, and scale."""
        if not self.accumulating:
            self.ensure_views()
        if not self._reducing:
            return
        self._reducing = False
        if self._shared:
            self._reduce_shared()
            return
        self.buckets.flush()

    def _reduce_shared(self) -> None:
        if self.average:
            pre = 1.0 / self.world_size if self.prescale else 1.0 / self.predivide
            if pre != 1.0:
                for flat in self.flats:
                    flat.mul_(pre)
        factor = self._post_factor()
        for sb in self._shared:
            ds_comm.all_reduce_shared(sb, scale=factor)

    def _post_factor(self) -> float:
        """What the summed gradients are multiplied by after the collective."""
        if self.average and not self.prescale:
            return self.predivide / self.world_size
        return 1.0

    def reduce_now(self) -> None:
        """All-reduce every bucket now (for gradients produced outside ``engine.backward``)."""
        if self.group is None or self.world_size <= 1:
            return
        self.prepare(True)
        self.finish()

    # -- helpers --------------------------------------------------------------------------

    def ensure_views(self) -> None:
        """Fold gradients left in ``.grad`` into the flat buffers (re-attaching the views)."""
        if self.accumulating:
            for p, v in zip(self.order, self.views):
                if p.grad is not None:
                    v.add_(p.grad)
                    p.grad = None
            return
        for p, v in zip(self.order, self.views):
            g = p.grad
            if g is not v:
                if g is None:
                    v.zero_()
                else:
                    v.copy_(g)
                p.grad = v

    def zero(self, set_to_none: bool = True) -> None:
        """Zero the gradients. ``set_to_none`` (DeepSpeed's default) leaves ``.grad`` None until the
        next backward: each gradient then arrives as a fresh tensor that its hook copies into the
        flat buffer (one pass over the gradients instead of a fill and an add); buffers of
        parameters that got no gradient are zeroed when the backward ends (:meth:`finish`)."""
        if self.accumulating:
            for flat in self.flats:
                flat.zero_()
            for p in self.order:
                p.grad = None
            return
        if set_to_none:
            for p in self.order:
                p.grad = None
            return
        for flat in self.flats:
            flat.zero_()
        for p, v in zip(self.order, self.views):
            if p.grad is not v:
                p.grad = v

    def global_norm(self, flats: list[torch.Tensor] | None = None) -> torch.Tensor:
        """L2 norm of all gradients (a 0-d fp32 tensor; no host sync without gradient groups).
        ``flats``: tensors laid out like the flat buffers to take the norm of instead (the fp32
        master gradients). With gradient groups each group's squares are summed over its
        ``shard_group`` (a collective every rank makes in the same order)."""
        flats = self.flats if flats is None else flats
        if not self.gradient_groups:
            norms = [torch.linalg.vector_norm(f, dtype=torch.float32) for f in flats]
            return norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))
        squares = torch.zeros(len(self.gradient_groups) + 1, dtype=torch.float32, device=flats[0].device)
        for f, start, end, d in self.runs:
            squares[d + 1] += torch.linalg.vector_norm(flats[f][start:end], dtype=torch.float32).square()
        for d, gg in enumerate(self.gradient_groups):
            if gg.shard_group is not None:
                part = squares[d + 1:d + 2].clone()
                ds_comm.all_reduce(part, group=gg.shard_group)
                squares[d + 1] = part[0]
        return squares.sum().sqrt()

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
