"""``deepspeed.runtime.sequence_parallel.ulysses_sp``: Arctic long-sequence training (ALST).

- :class:`UlyssesSPAttentionHF`: Ulysses around a Hugging Face attention function
  (``attn(module, query, key, value, attention_mask, **kwargs) -> (output, weights)`` with
  ``[batch, heads, seq, head_dim]`` inputs); :meth:`UlyssesSPAttentionHF.register_with_transformers`
  puts it in place of a transformers attention implementation and returns the ``mpu``.
- :class:`UlyssesSPDataLoaderAdapter`: shards each batch's sequence across the group.
- :class:`TiledMLP`, :class:`TiledFusedLogitsLoss`, :func:`sequence_tiled_compute`: compute in
  sequence tiles (see :mod:`deepspeed.runtime.sequence_parallel._tiled`).

transformers is only imported by :meth:`~UlyssesSPAttentionHF.register_with_transformers`.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections import deque
from typing import Optional

import torch

import deepspeed.comm as dist
from deepspeed.runtime.sequence_parallel._tiled import (SequenceTiledCompute, TiledFusedLogitsLoss, TiledMLP,
                                                        sequence_tiled_compute)
from deepspeed.sequence._all_to_all import SeqAllToAll, group_rank, group_size

__all__ = ["UlyssesSPAttentionHF", "UlyssesSPDataLoaderAdapter", "TiledMLP", "TiledFusedLogitsLoss",
           "SequenceTiledCompute", "sequence_tiled_compute"]

_MIN_TRANSFORMERS = (4, 51, 3)


class UlyssesSPAttentionHF(torch.nn.Module):
    """DeepSpeed's ``UlyssesSPAttentionHF(attn, batch_size, attn_head_count, attn_head_size,
    kv_head_count, num_hidden_layers, process_group, seq_length_is_variable=False,
    local_seq_length=None, global_seq_length=None, disable_in_eval=False)``.

    ``forward(module, query, key, value, attention_mask, *args, position_ids=..., **kwargs)`` takes
    this rank's sequence shard (``[batch, heads, seq/P, head_dim]``), exchanges it for the whole
    sequence of ``heads/P`` heads (key/value heads replicated when there are fewer than ``P``),
    gathers ``position_ids`` over the group (attention backends mask causally from them), calls
    ``attn`` and returns ``([batch, seq/P, heads * head_dim], weights)``.
    """

    def __init__(self, attn, batch_size: int, attn_head_count: int, attn_head_size: int, kv_head_count: int,
                 num_hidden_layers: int, process_group, seq_length_is_variable: bool = False,
                 local_seq_length: Optional[int] = None, global_seq_length: Optional[int] = None,
                 disable_in_eval: bool = False) -> None:
        super().__init__()
        self.attn = attn
        self.process_group = process_group
        self.world_size = group_size(process_group)
        self.sp_rank = group_rank(process_group)
        self.batch_size = batch_size
        self.seq_length_is_variable = seq_length_is_variable
        self.local_seq_length = local_seq_length
        self.global_seq_length = global_seq_length
        self.disable_in_eval = disable_in_eval
        self.attn_head_size = attn_head_size
        self.attn_head_count = attn_head_count
        self.global_kv_head_count = kv_head_count
        self.num_hidden_layers = num_hidden_layers
        self.core_attn_implementation = None
        w = self.world_size
        if attn_head_count % w != 0:
            raise ValueError(f"UlyssesSPAttentionHF: attention head count {attn_head_count} is not divisible by the "
                             f"sequence-parallel size {w}; choose a sequence_parallel_size that divides "
                             f"{attn_head_count}")
        if not (kv_head_count % w == 0 or w % kv_head_count == 0):
            raise ValueError(f"UlyssesSPAttentionHF: key/value head count {kv_head_count} and the sequence-parallel "
                             f"size {w} must divide one another; choose a sequence_parallel_size that divides "
                             f"{kv_head_count} or is a multiple of it")
        if not seq_length_is_variable:
            if local_seq_length is None or global_seq_length is None:
                raise ValueError("UlyssesSPAttentionHF: local_seq_length and global_seq_length are required when "
                                 "seq_length_is_variable=False")
            if global_seq_length != local_seq_length * w:
                raise ValueError(f"UlyssesSPAttentionHF: global_seq_length {global_seq_length} != local_seq_length "
                                 f"{local_seq_length} x sequence-parallel size {w}")
        self.local_q_head_count = attn_head_count // w
        self.kv_replication_factor = w // kv_head_count if w > kv_head_count else 1
        self.local_kv_head_count = max(kv_head_count // w, 1)

    def _exchange_in(self, t: torch.Tensor, replicate: int) -> torch.Tensor:
        if replicate > 1:
            t = t.repeat_interleave(replicate, dim=1)
        return SeqAllToAll.apply(self.process_group, t, 1, 2)  # heads split, sequence gathered

    def forward(self, module, query, key, value, attention_mask, *args, **kwargs):
        if self.disable_in_eval and not module.training:
            return self.attn(module, query, key, value, attention_mask, *args, **kwargs)
        w = self.world_size
        bs, hc, sl_l, hs = query.shape
        if self.seq_length_is_variable:
            self.local_seq_length, self.global_seq_length = sl_l, sl_l * w
        want_q = (self.batch_size, self.attn_head_count, self.local_seq_length, self.attn_head_size)
        want_kv = (self.batch_size, self.global_kv_head_count, self.local_seq_length, self.attn_head_size)
        if tuple(query.shape) != want_q or tuple(key.shape) != want_kv or tuple(value.shape) != want_kv:
            raise ValueError(f"UlyssesSPAttentionHF: expected query {want_q} and key/value {want_kv} ([batch, heads, "
                             f"local seq, head_dim]); got {tuple(query.shape)}, {tuple(key.shape)}, "
                             f"{tuple(value.shape)}")
        if kwargs.get("position_ids") is None:
            raise ValueError("UlyssesSPAttentionHF: position_ids are required in every forward call: after the "
                             "sequence is gathered, attention masks causally from them (each rank's local 0..n-1 "
                             "would look like packed sequences). Pass position_ids = arange(seq_len) per sample "
                             "(reset at document boundaries for packed samples); UlyssesSPDataLoaderAdapter "
                             "shards them with the batch.")
        pos = kwargs["position_ids"]
        if w > 1:
            parts = [torch.empty_like(pos) for _ in range(w)]
            dist.all_gather(parts, pos.contiguous(), group=self.process_group)
            kwargs["position_ids"] = torch.cat(parts, dim=1)
        q = self._exchange_in(query, 1)
        k = self._exchange_in(key, self.kv_replication_factor)
        v = self._exchange_in(value, self.kv_replication_factor)
        if self.kv_replication_factor > 1 and hasattr(module, "num_key_value_groups"):
            module.num_key_value_groups = q.shape[1] // k.shape[1]
        context, weights = self.attn(module, q, k, v, attention_mask, *args, **kwargs)
        # [bs, sl, hc_l, hs] -> [bs, sl_l, hc, hs]: sequence split, heads gathered
        out = SeqAllToAll.apply(self.process_group, context.contiguous(), 1, 2)
        return out.reshape(bs, sl_l, -1), weights

    @classmethod
    def register_with_transformers(cls, model_name_or_path, core_attn_implementation, sequence_parallel_size,
                                   micro_batch_size, seq_length=None, seq_length_is_variable=True,
                                   disable_in_eval=False, max_length=None):
        """Replace ``core_attn_implementation`` in transformers' ``ALL_ATTENTION_FUNCTIONS`` by
        Ulysses around it and return the mpu (:mod:`.parallel_state_sp`); None when
        ``sequence_parallel_size`` is 1. ``model_name_or_path``: a model (or anything with a
        ``config``) or a name for ``AutoConfig.from_pretrained``."""
        if sequence_parallel_size == 1:
            return None
        if max_length is not None and seq_length is None:
            seq_length = max_length
        if not seq_length_is_variable and seq_length is None:
            raise ValueError("register_with_transformers: pass seq_length (the fixed sequence length of every "
                             "batch) or seq_length_is_variable=True")
        try:
            have = importlib.metadata.version("transformers")
        except importlib.metadata.PackageNotFoundError:
            raise ImportError("UlyssesSPAttentionHF.register_with_transformers needs transformers: "
                              "pip install 'transformers>=4.51.3'") from None
        if tuple(int(x) for x in re.findall(r"\d+", have)[:3]) < _MIN_TRANSFORMERS:
            raise ValueError(f"transformers>=4.51.3 is required, but you have transformers=={have}")
        from transformers import AutoConfig
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        from deepspeed.runtime.sequence_parallel import parallel_state_sp as mpu

        mpu.initialize_sequence_parallel(sequence_parallel_size=sequence_parallel_size)
        config = model_name_or_path.config if hasattr(model_name_or_path, "config") else \
            AutoConfig.from_pretrained(model_name_or_path)
        model_impl = getattr(config, "_attn_implementation", None)
        if model_impl is not None and model_impl != core_attn_implementation:
            raise ValueError(f"core_attn_implementation={core_attn_implementation!r} does not match the model "
                             f"config's attn_implementation={model_impl!r}; set both to the same value")
        if core_attn_implementation in ("eager", "paged|eager"):
            raise ValueError(f"{core_attn_implementation!r} attention is not supported by Ulysses sequence parallelism "
                             "(it materialises a 4-D attention mask); use 'sdpa', 'flex_attention' or a flash "
                             "attention implementation")
        if core_attn_implementation not in ALL_ATTENTION_FUNCTIONS:
            raise ValueError(f"{core_attn_implementation!r} is not a valid attn_implementation; the choices are "
                             f"{list(ALL_ATTENTION_FUNCTIONS.valid_keys())}")
        core = ALL_ATTENTION_FUNCTIONS[core_attn_implementation]
        arch = config.get_text_config() if hasattr(config, "get_text_config") else config
        sp = mpu.get_sequence_parallel_world_size()
        uattn = cls(attn=core, batch_size=micro_batch_size, attn_head_count=arch.num_attention_heads,
                    attn_head_size=getattr(arch, "head_dim", None) or arch.hidden_size // arch.num_attention_heads,
                    kv_head_count=getattr(arch, "num_key_value_heads", None) or arch.num_attention_heads,
                    num_hidden_layers=arch.num_hidden_layers, process_group=mpu.get_sequence_parallel_group(),
                    seq_length_is_variable=seq_length_is_variable,
                    local_seq_length=None if seq_length_is_variable else seq_length // sp,
                    global_seq_length=None if seq_length_is_variable else seq_length,
                    disable_in_eval=disable_in_eval)
        uattn.core_attn_implementation = core_attn_implementation

        def uattn_wrapper(module, query, key, value, attention_mask, *args, **kwargs):
            # the mask transformers built is for the local shard: attention masks from position_ids
            return uattn(module, query, key, value, None, *args, **kwargs)

        ALL_ATTENTION_FUNCTIONS[core_attn_implementation] = uattn_wrapper
        return mpu


class UlyssesSPDataLoaderAdapter:
    """DeepSpeed's ``UlyssesSPDataLoaderAdapter(dl, sp_rank, sp_group, sp_world_size, device)``.

    Each refill reads one batch on every rank of the group, gathers them, and yields them one at
    a time: the ``i``-th yielded micro-batch is rank ``i``'s batch, of which each rank gets its
    own slice of the sequence. ``labels`` are replaced by ``shift_labels`` (labels shifted left
    by one, ``-100`` last) before sharding, so each shard's loss needs no neighbouring token.
    Batches need ``input_ids`` and ``position_ids``; every tensor must be ``[batch, seq, ...]``
    with the same ``seq``, which must divide by the group size. Non-tensors are copied.
    """

    def __init__(self, dl, sp_rank: int, sp_group, sp_world_size: int, device) -> None:
        self.dl = dl
        self.sp_rank = sp_rank
        self.sp_group = sp_group
        self.sp_world_size = sp_world_size
        self.device = device
        self.iter = iter(dl)
        self.micro_batches: deque = deque()

    def __len__(self) -> int:
        return len(self.dl) * self.sp_world_size

    def __iter__(self):
        return self

    def __next__(self):
        if not self.micro_batches:
            self.refill()
        return self.micro_batches.popleft()

    def refill(self) -> None:
        try:
            batch = next(self.iter)
        except StopIteration:
            self.iter = iter(self.dl)  # the next epoch starts over
            raise
        for key in ("input_ids", "position_ids"):
            if key not in batch:
                raise ValueError(f"UlyssesSPDataLoaderAdapter: every batch needs {key!r} (got keys "
                                 f"{sorted(batch)}); position_ids = arange(seq_len) per sample keeps each token's "
                                 "global position after sharding")
        w = self.sp_world_size
        seqlen = batch["input_ids"].shape[1]
        lens = [torch.zeros(1, dtype=torch.int64, device=self.device) for _ in range(w)]
        dist.all_gather(lens, torch.tensor([seqlen], dtype=torch.int64, device=self.device), group=self.sp_group)
        lens = [int(x.item()) for x in lens]
        per_rank: list[dict] = [{} for _ in range(w)]
        for k, v in batch.items():
            if torch.is_tensor(v):
                if v.dim() < 2 or v.shape[1] != seqlen:
                    raise ValueError(f"UlyssesSPDataLoaderAdapter: {k!r} has shape {tuple(v.shape)}; every tensor "
                                     f"must be [batch, seq={seqlen}, ...] like input_ids")
                v = v.to(self.device)
                longest = max(lens)
                if v.shape[1] < longest:  # gloo gathers equal sizes only: pad, gather, trim
                    pad = torch.zeros((v.shape[0], longest - v.shape[1], *v.shape[2:]), dtype=v.dtype, device=v.device)
                    v = torch.cat([v, pad], dim=1)
                v = v.contiguous()
                parts = [torch.empty_like(v) for _ in lens]
                dist.all_gather(parts, v, group=self.sp_group)
                parts = [p[:, :n] for p, n in zip(parts, lens)]
            else:
                parts = [None] * w
                dist.all_gather_object(parts, v, group=self.sp_group)
            for r, part in enumerate(parts):
                per_rank[r][k] = part
        for src, b in enumerate(per_rank):
            n = b["input_ids"].shape[1]
            if n % w != 0:
                raise ValueError(f"UlyssesSPDataLoaderAdapter: the batch of rank {src} has sequence length {n}, not "
                                 f"divisible by the sequence-parallel size {w}; pad sequences to a multiple of {w}")
            if "labels" in b:
                labels = b.pop("labels")
                b["shift_labels"] = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:].contiguous()
            chunk = n // w
            lo = chunk * self.sp_rank
            self.micro_batches.append({k: v[:, lo:lo + chunk].contiguous() if torch.is_tensor(v) else v
                                       for k, v in b.items()})
