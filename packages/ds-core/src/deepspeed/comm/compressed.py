"""Error-compensated 1-bit compressed all-reduce (the collective behind 1-bit Adam, 0/1 Adam and
1-bit LAMB), built on :mod:`deepspeed.comm`'s own collectives so it runs on every backend (gloo
included) and the comms logger records what it sends.

One call averages a flat fp32 buffer over the group in two 1-bit phases:

1. *worker*: add the worker error, take each segment's scale ``||x|| / sqrt(numel)`` and its signs
   (``x >= 0`` is +1), keep ``x - scale * sign`` as the new worker error, pack the signs 8 per
   byte and ``all_to_all_single`` them: rank ``r`` receives every rank's signs of chunk ``r``.
   The per-segment scales travel in one ``all_gather_into_tensor``.
2. *server*: rank ``r`` averages ``scale_w * sign_w`` over the workers for its chunk, adds its
   server error, compresses the result the same way (one scale for the chunk) and
   ``all_gather_into_tensor`` s the packed signs and the chunk scales.

Every rank then rebuilds the same average from the gathered signs and scales, so the result is
bit-identical on all ranks. Per element a rank sends 1 bit in each phase, against 32 bits for an
fp32 all-reduce: 1/16 of the logged message bytes plus the scales (4 bytes per segment per rank
and 4 per rank).

``segments`` are the lengths of the tensors laid end to end in the buffer (one scale each, as
DeepSpeed compresses each tensor with its own scale); None: one scale for the whole buffer.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

import deepspeed.comm as ds_comm

_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_signs(positive: torch.Tensor) -> torch.Tensor:
    """Bool tensor (numel a multiple of 8) -> uint8, 8 signs per byte, lowest bit first."""
    bits = positive.reshape(-1, 8).to(torch.uint8)
    return (bits * _BITS.to(bits.device)).sum(dim=1, dtype=torch.uint8)


def unpack_signs(packed: torch.Tensor) -> torch.Tensor:
    """uint8 from :func:`pack_signs` -> float32 of +1/-1, 8 per byte."""
    bits = (packed.reshape(-1, 1) & _BITS.to(packed.device)).ne(0)
    return bits.reshape(-1).to(torch.float32).mul_(2.0).sub_(1.0)


def padded_numel(numel: int, world_size: int) -> int:
    """Buffer length the compressed all-reduce works on: a multiple of 8 * world_size."""
    unit = 8 * world_size
    return int(math.ceil(numel / unit) * unit)


class CompressedBackend:
    """1-bit compressed all-reduce over ``group`` (DeepSpeed's ``CompressedBackend`` role; the
    NCCL/MPI/HCCL backend classes DeepSpeed scripts import are aliases of this one, see
    :mod:`deepspeed.runtime.comm`).

    ``worker_error`` has the padded length (:func:`padded_numel`) and ``server_error`` a
    ``1/world_size`` share of it; both start at zero and are updated in place."""

    def __init__(self, mpu=None, group=None):
        self.mpu = mpu
        self.world_group = mpu.get_data_parallel_group() if mpu is not None else group
        self.size = ds_comm.get_world_size(self.world_group)
        self.rank = ds_comm.get_rank(self.world_group)
        self._seg_cache: dict = {}

    def _segment_ids(self, segments: Sequence[int] | None, padded: int) -> tuple[torch.Tensor, int]:
        key = (tuple(segments) if segments is not None else None, padded)
        hit = self._seg_cache.get(key)
        if hit is None:
            if segments is None:
                ids, count = torch.zeros(padded, dtype=torch.long), 1
            else:
                sizes = list(segments) + [padded - sum(segments)]
                ids = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
                count = len(segments) + 1  # the padding has a segment (scale) of its own
            hit = self._seg_cache[key] = (ids, count)
        return hit

    def compressed_allreduce(self, buffer_m: torch.Tensor, worker_error: torch.Tensor, server_error: torch.Tensor,
                             local_rank=None, segments: Sequence[int] | None = None) -> torch.Tensor:
        """Average ``buffer_m`` (any shape, fp32) over the group in place and return it."""
        world = self.size
        n = buffer_m.numel()
        padded = worker_error.numel()
        if padded != padded_numel(n, world) or server_error.numel() * world != padded:
            raise ValueError(
                f"compressed_allreduce: worker_error has {padded} elements and server_error {server_error.numel()} "
                f"for a buffer of {n} on {world} ranks; allocate padded_numel(numel, world) = "
                f"{padded_numel(n, world)} and that / world"
            )
        chunk = padded // world
        ids, count = self._segment_ids(segments, padded)
        x = torch.zeros(padded, dtype=torch.float32, device=buffer_m.device)
        x[:n].copy_(buffer_m.reshape(-1))
        x.add_(worker_error)

        # Phase 1: workers' signs to the servers, workers' per-segment scales to everyone.
        sq = torch.zeros(count, dtype=torch.float32, device=x.device).index_add_(0, ids, x * x)
        lens = torch.bincount(ids, minlength=count).clamp_(min=1).to(torch.float32)
        scales = sq.div_(lens).sqrt_()
        positive = x >= 0
        signs = positive.to(torch.float32).mul_(2.0).sub_(1.0)
        worker_error.copy_(x - scales[ids] * signs)
        sent = pack_signs(positive)
        received = torch.empty_like(sent)
        ds_comm.all_to_all_single(received, sent, group=self.world_group)
        all_scales = torch.empty(world * count, dtype=torch.float32, device=x.device)
        ds_comm.all_gather_into_tensor(all_scales, scales, group=self.world_group)

        # Phase 2: this rank's chunk averaged over the workers, compressed again, gathered.
        mine = ids[self.rank * chunk:(self.rank + 1) * chunk]
        worker_signs = unpack_signs(received).view(world, chunk)
        weights = all_scales.view(world, count)[:, mine]
        server = (worker_signs * weights).sum(dim=0).div_(world).add_(server_error)
        s_scale = server.norm().div(math.sqrt(chunk)).reshape(1)
        s_positive = server >= 0
        s_signs = s_positive.to(torch.float32).mul_(2.0).sub_(1.0)
        server_error.copy_(server - s_scale * s_signs)
        gathered = torch.empty(padded // 8, dtype=torch.uint8, device=x.device)
        ds_comm.all_gather_into_tensor(gathered, pack_signs(s_positive), group=self.world_group)
        server_scales = torch.empty(world, dtype=torch.float32, device=x.device)
        ds_comm.all_gather_into_tensor(server_scales, s_scale, group=self.world_group)

        out = unpack_signs(gathered).view(world, chunk).mul_(server_scales.view(world, 1)).reshape(-1)
        buffer_m.copy_(out[:n].view_as(buffer_m))
        return buffer_m


def compressed_all_reduce(tensor: torch.Tensor, worker_error: torch.Tensor, server_error: torch.Tensor,
                          group=None, segments: Sequence[int] | None = None) -> torch.Tensor:
    """Functional form: average ``tensor`` over ``group`` with 1-bit compression (in place)."""
    return CompressedBackend(group=group).compressed_allreduce(tensor, worker_error, server_error,
                                                               segments=segments)


__all__ = ["CompressedBackend", "compressed_all_reduce", "pack_signs", "padded_numel", "unpack_signs"]
