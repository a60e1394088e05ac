"""``deepspeed.sequence.layer``: DeepSpeed-Ulysses sequence parallelism around any attention.

:class:`DistributedAttention` takes query, key and value sharded along the sequence (each rank of
the sequence-parallel group holds ``seq / P`` positions of every head), exchanges them so that each
rank holds the whole sequence for ``heads / P`` heads, runs the local attention callable there and
exchanges the result back to sequence shards. Attention itself is untouched, so any attention
implementation (SDPA, flash, a hand-written one, causal or not) works unchanged.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from deepspeed.sequence._all_to_all import DimZeroAllToAll as _DimZeroAllToAll
from deepspeed.sequence._all_to_all import SeqAllToAll as _SeqAllToAll
from deepspeed.sequence._all_to_all import all_to_all, group_size, resolve
from deepspeed.sequence._offload import offload_saved_tensors

__all__ = ["DistributedAttention", "single_all_to_all", "apply_rotary_pos_emb", "_SeqAllToAll", "_DimZeroAllToAll"]


def single_all_to_all(input, scatter_idx, gather_idx, batch_dim_idx=None, group=None, async_op=False, handle=None,
                      type=None):
    """One sequence <-> head exchange (no autograd); DeepSpeed's signature. ``batch_dim_idx`` is
    accepted for compatibility: the exchange is defined by ``scatter_idx``/``gather_idx`` alone."""
    if async_op:
        raise NotImplementedError("single_all_to_all(async_op=True) (DeepSpeed's CUDA-stream overlap) is not "
                                  "implemented; call it with async_op=False")
    return all_to_all(input, scatter_idx, gather_idx, group)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(t: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on the first ``freqs_cos.shape[-1]`` channels of ``t`` (halves rotated,
    DeepSpeed's convention); the remaining channels pass through."""
    rot = freqs_cos.shape[-1]
    head, tail = t[..., :rot], t[..., rot:]
    head = head * freqs_cos + _rotate_half(head) * freqs_sin
    return head if tail.shape[-1] == 0 else torch.cat((head, tail), dim=-1)


def _expand_kv(x: torch.Tensor, heads_dim: int, world: int, what: str, q_heads: int) -> torch.Tensor:
    """GQA/MQA: fewer key/value heads than ranks are replicated so every rank gets the one its
    query heads use; head counts that fit neither way are refused."""
    kv = x.shape[heads_dim]
    if kv % world == 0:
        return x
    if world % kv == 0 and q_heads % world == 0:
        return x.repeat_interleave(world // kv, dim=heads_dim)
    raise ValueError(f"DistributedAttention: {what} has {kv} heads (dimension {heads_dim}, shape {tuple(x.shape)}) "
                     f"and the sequence-parallel size is {world}: one must divide the other (uneven head counts "
                     f"are not supported); choose a sequence_parallel_size that divides {kv} or is a multiple of it")


class DistributedAttention(torch.nn.Module):
    """DeepSpeed's ``DistributedAttention(local_attention, sequence_process_group, scatter_idx=2,
    gather_idx=0, sp_stream=None)``.

    ``scatter_idx`` is the heads dimension and ``gather_idx`` the sequence dimension of the
    inputs (the defaults fit ``[seq, batch, heads, head_dim]``; ``[batch, seq, heads, dim]`` uses
    ``scatter_idx=2, gather_idx=1``; ``[batch, heads, seq, dim]`` uses ``1, 2``). Query heads must
    divide by the group size; key/value heads (GQA, MQA) must divide by it or divide it (then they
    are replicated). ``sequence_process_group=None`` (beyond DeepSpeed) uses the engine's
    sequence-parallel group (``sequence_parallel_size`` in the ds_config), looked up at each call,
    so a model can be built before ``deepspeed.initialize``. ``activation_offload=True`` (beyond DeepSpeed, Ulysses-Offload's idea) keeps
    the tensors the local attention saves for backward in host memory until backward needs them.
    """

    def __init__(self, local_attention, sequence_process_group, scatter_idx: int = 2, gather_idx: int = 0,
                 sp_stream=None, activation_offload: bool = False) -> None:
        super().__init__()
        if scatter_idx == gather_idx:
            raise ValueError(f"DistributedAttention: scatter_idx ({scatter_idx}) and gather_idx ({gather_idx}) must "
                             "differ: scatter_idx is the heads dimension, gather_idx the sequence dimension")
        self.local_attn = local_attention
        self.spg = sequence_process_group
        self.scatter_idx = scatter_idx
        self.gather_idx = gather_idx
        self.sp_stream = sp_stream  # accepted; the exchange runs on the current stream
        self.sp_overlap_comm = False
        self.overlap_handles = None
        self.activation_offload = bool(activation_offload)
        self.offload_stats = {"tensors": 0, "bytes": 0}

    def layer_sync(self, layer) -> None:  # DeepSpeed's stream-overlap hook: nothing to wait for here
        return None

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any,
                batch_dim_idx: Optional[int] = None, rotary_pos_emb=None, **kwargs: Any) -> torch.Tensor:
        # DeepSpeed's forward(query, key, value, batch_dim_idx, rotary_pos_emb=None, *args, **kwargs),
        # and the older forward(query, key, value, *args, **kwargs): a leading int is batch_dim_idx.
        if args and isinstance(args[0], int) and not isinstance(args[0], bool):
            args = args[1:]  # batch_dim_idx: the exchange is defined by scatter_idx/gather_idx
            if args and (args[0] is None or isinstance(args[0], (tuple, list))):
                rotary_pos_emb, args = args[0], args[1:]
        spg = resolve(self.spg)
        world = group_size(spg)
        s, g = self.scatter_idx, self.gather_idx
        if query.dim() < 3:
            raise ValueError(f"DistributedAttention: query must have sequence, heads and head_dim dimensions "
                             f"(got shape {tuple(query.shape)})")
        q_heads = query.shape[s]
        if q_heads % world != 0:
            raise ValueError(f"DistributedAttention: query has {q_heads} heads (dimension {s}, shape "
                             f"{tuple(query.shape)}), not divisible by the sequence-parallel size {world}; use a "
                             f"head count that is a multiple of {world} or a sequence_parallel_size that divides "
                             f"{q_heads} (uneven head counts are not supported)")
        if key.shape[g] != query.shape[g] or value.shape[g] != query.shape[g]:
            raise ValueError(f"DistributedAttention: query, key and value must hold the same local sequence "
                             f"length along dimension {g} (shapes {tuple(query.shape)}, {tuple(key.shape)}, "
                             f"{tuple(value.shape)})")
        key = _expand_kv(key, s, world, "key", q_heads)
        value = _expand_kv(value, s, world, "value", q_heads)
        q = _SeqAllToAll.apply(spg, query, s, g)
        k = _SeqAllToAll.apply(spg, key, s, g)
        v = _SeqAllToAll.apply(spg, value, s, g)
        if rotary_pos_emb is not None:
            # DeepSpeed's layout: (cos, sin) of [batch, seq, 1, dim], applied to [seq, batch, heads, dim]
            cos, sin = rotary_pos_emb[0].permute(1, 0, 2, 3), rotary_pos_emb[1].permute(1, 0, 2, 3)
            q = apply_rotary_pos_emb(q, cos, sin)
            k = apply_rotary_pos_emb(k, cos, sin)
        if self.activation_offload:
            with offload_saved_tensors(stats=self.offload_stats):
                context = self.local_attn(q, k, v, *args, **kwargs)
        else:
            context = self.local_attn(q, k, v, *args, **kwargs)
        if isinstance(context, tuple):
            raise TypeError("DistributedAttention: the local attention returned a tuple; it must return the "
                            "context tensor alone (wrap it, e.g. lambda q, k, v: attn(q, k, v)[0])")
        return _SeqAllToAll.apply(spg, context, g, s)
