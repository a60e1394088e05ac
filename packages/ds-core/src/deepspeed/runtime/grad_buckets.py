"""Gradient buckets: the one bucket reducer of the engine and of every feature that reduces
gradients (ZeRO's stages included), parameterised by the collective that reduces one bucket.

Backward produces gradients one parameter at a time. A post-accumulate-grad hook calls
:meth:`BucketReducer.ready` for each; once a bucket holds all its gradients (fixed buckets) or
``bucket_numel`` elements of them (buckets filled in arrival order), its collective is launched,
so communication overlaps the rest of the backward pass. At most ``max_in_flight`` launched
buckets wait for completion at once (bounding staging memory); :meth:`flush` launches what is left
and completes everything.

The collective is an object (FSDP2 passes its collectives the same way): :class:`BucketCollective`
says how one bucket is packed, sent through :mod:`deepspeed.comm` and unpacked. The engine
all-reduces flat buffer slices; ZeRO 1/2 reduce-scatter flat intervals; ZeRO 3 reduce-scatter
per-parameter rows.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Iterable

import torch

# Note: when reduce_bucket_size is not given, gradients are reduced in buckets of 1M elements
# rather than DeepSpeed's documented 5e8, which makes one bucket for most models: launched only
# after the whole backward (no overlap) while holding every gradient. On the tiny-GPT bench (2
# gloo ranks) 1M-element buckets overlap the reduction with backward and beat both one bucket
# and DDP's 25 MiB buckets, at every ZeRO stage and without ZeRO.
DEFAULT_BUCKET_NUMEL = 1_000_000


def bucket_numel(configured: int | None) -> int:
    """Elements per bucket: the configured ``reduce_bucket_size``, or :data:`DEFAULT_BUCKET_NUMEL`."""
    return DEFAULT_BUCKET_NUMEL if configured is None else max(1, int(configured))


class Bucket:
    """Parameters reduced by one collective. ``payload`` is the collective's own description of
    the bucket (a buffer slice, an interval); ``items`` what :meth:`BucketReducer.ready` was given
    with each parameter (buckets filled in arrival order)."""

    __slots__ = ("index", "params", "payload", "items", "numel", "pending", "launched")

    def __init__(self, index: int, params: list, payload: Any = None, numel: int = 0):
        self.index = index
        self.params = params
        self.payload = payload
        self.items: list = []
        self.numel = numel
        self.pending = len(params)
        self.launched = False


class BucketCollective(abc.ABC):
    """How one bucket is reduced."""

    @abc.abstractmethod
    def launch(self, bucket: Bucket) -> Any:
        """Start reducing ``bucket`` (a :mod:`deepspeed.comm` call, usually ``async_op=True``);
        return what :meth:`complete` needs."""

    @abc.abstractmethod
    def complete(self, bucket: Bucket, handle: Any) -> None:
        """Wait for ``handle`` and write the reduced gradients where they belong."""


def pack(params: Iterable, limit: int, size: Callable[[Any], int] = lambda p: p.numel()) -> list[list]:
    """Consecutive runs of ``params`` holding at least ``limit`` elements each (the last one less)."""
    out, current, n = [], [], 0
    for p in params:
        current.append(p)
        n += size(p)
        if n >= limit:
            out.append(current)
            current, n = [], 0
    if current:
        out.append(current)
    return out


class BucketReducer:
    """Launches ``collective`` on buckets of gradients as they become ready.

    ``buckets``: fixed buckets, ``[(params, payload), ...]``; a bucket is launched once all its
    parameters are ready (``ordered``: and every bucket before it was launched, so all ranks issue
    collectives in the same order whatever order gradients arrive in). Without ``buckets``,
    parameters are appended in arrival order to an open bucket that is launched once it holds
    ``limit`` elements (``size(param)`` each).
    """

    def __init__(self, collective: BucketCollective, buckets: list[tuple[list, Any]] | None = None,
                 limit: int = DEFAULT_BUCKET_NUMEL, ordered: bool = False, max_in_flight: int = 2,
                 size: Callable[[Any], int] = lambda p: p.numel()):
        self.collective = collective
        self.limit = max(1, int(limit))
        self.ordered = ordered
        self.max_in_flight = max_in_flight
        self.size = size
        self.fixed = buckets is not None
        self.buckets: list[Bucket] = []
        self._bucket_of: dict[int, Bucket] = {}
        if buckets is not None:
            for i, (params, payload) in enumerate(buckets):
                b = Bucket(i, list(params), payload, sum(size(p) for p in params))
                self.buckets.append(b)
                for p in b.params:
                    self._bucket_of[id(p)] = b
        self._open: Bucket | None = None
        self._next = 0
        self._in_flight: list[tuple[Bucket, Any]] = []

    def __len__(self) -> int:
        return len(self.buckets)

    # -- the hot path ------------------------------------------------------------------------

    def ready(self, param, item: Any = None) -> None:
        """``param``'s gradient is complete (``item``: stored with it, arrival-order buckets)."""
        if not self.fixed:
            b = self._open
            if b is None:
                b = self._open = Bucket(len(self.buckets), [])
            b.params.append(param)
            b.items.append(item)
            b.numel += self.size(param)
            if b.numel >= self.limit:
                self._open = None
                self._launch(b)
            return
        b = self._bucket_of[id(param)]
        if b.launched:
            # Note: a second backward before flush() (retain_graph, or a parameter reached through
            # two graphs) reduces this bucket again; the collective adds the contributions up.
            self._complete_all()
            b.launched = False
            b.pending = len(b.params)
        b.pending -= 1
        if b.pending == 0:
            if self.ordered:
                self._launch_ordered()
            else:
                self._launch(b)

    def _launch_ordered(self) -> None:
        buckets = self.buckets
        while self._next < len(buckets) and buckets[self._next].pending == 0 and not buckets[self._next].launched:
            self._launch(buckets[self._next])
            self._next += 1

    def _launch(self, b: Bucket) -> None:
        b.launched = True
        self._in_flight.append((b, self.collective.launch(b)))
        while len(self._in_flight) > self.max_in_flight:
            self._complete_one()

    def _complete_one(self) -> None:
        b, handle = self._in_flight.pop(0)
        self.collective.complete(b, handle)

    def _complete_all(self) -> None:
        while self._in_flight:
            self._complete_one()

    # -- boundaries --------------------------------------------------------------------------

    def flush(self) -> None:
        """Launch every bucket not launched yet (fixed buckets: missing gradients count as zeros,
        the collective decides how), complete all of them, and start over."""
        if self.fixed:
            for b in self.buckets:
                if not b.launched:
                    self._launch(b)
        elif self._open is not None:
            b, self._open = self._open, None
            self._launch(b)
        self._complete_all()
        self.reset()

    def reset(self) -> None:
        """Forget which gradients arrived (a new backward pass starts)."""
        for b in self.buckets:
            b.pending = len(b.params)
            b.launched = False
        self._next = 0

    def has_pending(self) -> bool:
        """Something arrived or is in flight since the last :meth:`flush`."""
        if self._in_flight or self._open is not None:
            return True
        return any(b.launched or b.pending != len(b.params) for b in self.buckets)


def zeros_for(param: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A flat zero gradient for ``param`` (a parameter that got no gradient this backward)."""
    return torch.zeros(param.numel(), dtype=dtype or param.dtype, device=param.device)
