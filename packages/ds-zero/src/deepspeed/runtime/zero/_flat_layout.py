"""Flat layout of one parameter group, split into equal per-rank partitions (ZeRO 1 and 2).

The group's parameters are laid end to end, in their order, in one flat buffer whose length is
padded up to a multiple of the data-parallel world size; rank ``r`` owns the slice
``[r * P, (r + 1) * P)``, ``P = padded / world_size``. This is DeepSpeed's layout, so a rank's
``single_partition_of_fp32_groups[i]`` is the same slice DeepSpeed would save.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class _Interval:
    """A half-open range ``[start, end)`` of flat indices."""

    start: int
    end: int

    @property
    def numel(self) -> int:
        return max(0, self.end - self.start)

    def intersect(self, other: "_Interval") -> "_Interval":
        return _Interval(max(self.start, other.start), min(self.end, other.end))


class FlatLayout:
    """Offsets of ``params`` in a flat buffer padded to ``world_size`` equal partitions."""

    def __init__(self, params: list[torch.Tensor], world_size: int):
        self.params = list(params)
        self.world_size = world_size
        self.offsets: list[int] = []
        total = 0
        for p in self.params:
            self.offsets.append(total)
            total += p.numel()
        self.numel = total
        # Note: at least one element per rank, so an empty or tiny group still partitions.
        self.padded_numel = max(world_size, -(-total // world_size) * world_size)
        self.padding = self.padded_numel - total
        self.partition_numel = self.padded_numel // world_size

    def param_interval(self, index: int) -> _Interval:
        start = self.offsets[index]
        return _Interval(start, start + self.params[index].numel())

    def partition_interval(self, rank: int) -> _Interval:
        return _Interval(rank * self.partition_numel, (rank + 1) * self.partition_numel)

    def flatten_into_buffer(self, dtype: torch.dtype, device) -> torch.Tensor:
        """Copy the parameters into a new flat buffer and make each ``p.data`` a view of it."""
        flat = torch.zeros(self.padded_numel, dtype=dtype, device=device)
        for p, off in zip(self.params, self.offsets):
            view = flat.narrow(0, off, p.numel()).view_as(p)
            view.copy_(p.data)
            p.data = view
        return flat

    def owned_fragment(self, index: int, rank: int) -> tuple[_Interval, _Interval] | None:
        """``(slice of the param's flat data, slice of rank's partition)`` it owns, or None."""
        hit = self.param_interval(index).intersect(self.partition_interval(rank))
        if hit.numel == 0:
            return None
        off = self.offsets[index]
        base = rank * self.partition_numel
        return (_Interval(hit.start - off, hit.end - off), _Interval(hit.start - base, hit.end - base))
