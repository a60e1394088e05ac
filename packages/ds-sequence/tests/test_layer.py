"""DistributedAttention, UlyssesSPAttentionHF, UlyssesSPDataLoaderAdapter and the weighted loss on
2 gloo ranks against the full-sequence computation in one process; bad input refused with the
values. Tolerance: fp32, 1e-5 relative (max |a - b| / max |b|)."""

import math

import pytest
import torch

from deepspeed.testing.distributed import run_distributed

REL = 1e-5
S, B, H, DH = 8, 2, 4, 3


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _sdpa(q, k, v):
    """Causal attention over [b, h, s, d], key/value heads repeated for GQA."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    s = q.shape[2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf")).softmax(-1) @ v


def _inputs(kv_heads, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, S, DH, generator=g)
    k = torch.randn(B, kv_heads, S, DH, generator=g)
    v = torch.randn(B, kv_heads, S, DH, generator=g)
    up = torch.randn(B, H, S, DH, generator=g)
    return q, k, v, up


def _full(kv_heads):
    q, k, v, up = (t.requires_grad_(i < 3) for i, t in enumerate(_inputs(kv_heads)))
    out = _sdpa(q, k, v)
    (out * up).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


def _dist_attention(layout, kv_heads, offload):
    import deepspeed.comm as dist
    from deepspeed.sequence.layer import DistributedAttention

    rank, world = dist.get_rank(), dist.get_world_size()
    ref = _full(kv_heads)
    n = S // world
    sl = slice(rank * n, (rank + 1) * n)
    # the same tensors in the layout under test; local attention converts to [b, h, s, d]
    perm = {"sbhd": (2, 0, 1, 3), "bshd": (0, 2, 1, 3), "bhsd": (0, 1, 2, 3)}[layout]
    idx = {"sbhd": (2, 0), "bshd": (2, 1), "bhsd": (1, 2)}[layout]
    inv = [perm.index(i) for i in range(4)]

    def local(q, k, v):
        return _sdpa(*(t.permute(*inv) for t in (q, k, v))).permute(*perm)

    q, k, v, up = (t[:, :, sl].permute(*perm).contiguous() for t in _inputs(kv_heads))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    attn = DistributedAttention(local, dist.new_group([0, 1]), scatter_idx=idx[0], gather_idx=idx[1],
                                activation_offload=offload)
    out = attn(q, k, v)
    (out * up).sum().backward()
    back = [t.permute(*inv) for t in (out.detach(), q.grad, k.grad, v.grad)]
    return [_rel(mine, full[:, :, sl]) for mine, full in zip(back, ref)]


@pytest.mark.parametrize("layout,kv_heads", [("sbhd", 4), ("bshd", 2), ("bhsd", 1), ("sbhd", 1)])
def test_distributed_attention_equals_full_attention(layout, kv_heads):
    """MHA, GQA (2 kv heads: one per rank) and MQA (1 kv head: replicated), in three layouts."""
    for errs in run_distributed(_dist_attention, world_size=2, args=(layout, kv_heads, False)):
        assert max(errs) <= REL, errs


def test_activation_offload_gives_the_same_result():
    for errs in run_distributed(_dist_attention, world_size=2, args=("bshd", 2, True)):
        assert max(errs) <= REL, errs


def test_offload_saved_tensors_round_trip():
    """The saved tensors really leave (force: a host copy even on a host-only machine) and come back."""
    from deepspeed.sequence._offload import offload_saved_tensors

    q, k, v, up = (t.requires_grad_(i < 3) for i, t in enumerate(_inputs(2)))
    out = _sdpa(q, k, v)
    (out * up).sum().backward()
    want = [q.grad.clone(), k.grad.clone(), v.grad.clone()]
    q.grad = k.grad = v.grad = None
    stats = {}
    with offload_saved_tensors(stats=stats, force=True):
        out2 = _sdpa(q, k, v)
    (out2 * up).sum().backward()
    assert stats["tensors"] >= 3 and stats["bytes"] >= 3 * q.numel() * 4
    assert max(_rel(a, b) for a, b in zip((q.grad, k.grad, v.grad), want)) == 0.0


def _bad_inputs():
    import deepspeed.comm as dist
    from deepspeed.sequence.layer import DistributedAttention

    out = {}
    attn = DistributedAttention(lambda q, k, v: q, dist.new_group([0, 1]))  # [s, b, h, d]
    for name, (hq, hkv) in {"q3": (3, 3), "kv3": (4, 3)}.items():
        try:
            attn(torch.zeros(2, 1, hq, 2), torch.zeros(2, 1, hkv, 2), torch.zeros(2, 1, hkv, 2))
        except ValueError as e:
            out[name] = str(e)
    try:
        attn(torch.zeros(2, 1, 4, 2), torch.zeros(3, 1, 4, 2), torch.zeros(2, 1, 4, 2))
    except ValueError as e:
        out["seq"] = str(e)
    from deepspeed.runtime.sequence_parallel import parallel_state_sp as mpu

    try:
        mpu.initialize_sequence_parallel(3)
    except ValueError as e:
        out["mpu"] = str(e)
    return out


def test_bad_input_is_refused_with_the_values():
    from deepspeed.sequence.layer import DistributedAttention

    out = run_distributed(_bad_inputs, world_size=2)[0]
    assert out["q3"].startswith("DistributedAttention: query has 3 heads (dimension 2, shape (2, 1, 3, 2)), not "
                                "divisible by the sequence-parallel size 2")
    assert "key has 3 heads (dimension 2, shape (2, 1, 3, 2)) and the sequence-parallel size is 2: one must " \
           "divide the other" in out["kv3"]
    assert "must hold the same local sequence length along dimension 0" in out["seq"]
    assert out["mpu"].startswith("sequence_parallel_size=3 does not divide the world size 2")
    with pytest.raises(ValueError, match=r"scatter_idx \(1\) and gather_idx \(1\) must differ"):
        DistributedAttention(lambda q, k, v: q, None, scatter_idx=1, gather_idx=1)


def test_sequence_parallel_size_not_dividing_the_world():
    from deepspeed.runtime.config import DeepSpeedConfig

    with pytest.raises(ValueError, match=r"world size 2 is not divisible by the model/sequence-parallel size 3"):
        DeepSpeedConfig({"train_micro_batch_size_per_gpu": 1, "sequence_parallel_size": 3}, world_size=2)


def test_single_rank_needs_no_group():
    """Without a sequence-parallel dimension (sequence_process_group=None, no engine) the layer is
    the local attention itself."""
    from deepspeed.sequence.layer import DistributedAttention

    q, k, v, _ = _inputs(2)
    attn = DistributedAttention(_sdpa, None, scatter_idx=1, gather_idx=2)
    assert torch.equal(attn(q, k, v), _sdpa(q, k, v))


def _hf_attention(module, q, k, v, mask, *args, position_ids=None, **kwargs):
    """A transformers-style attention function: [b, h, s, d] in, ([b, s, h, d], weights) out;
    causal from position_ids (a mask of 'key position <= query position')."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    allowed = position_ids[:, None, :, None] >= position_ids[:, None, None, :]
    out = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    return out.transpose(1, 2), None


def _ulysses_hf(kv_heads, variable):
    import deepspeed.comm as dist
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF

    rank, world = dist.get_rank(), dist.get_world_size()
    ref = _full(kv_heads)
    n = S // world
    sl = slice(rank * n, (rank + 1) * n)
    uattn = UlyssesSPAttentionHF(_hf_attention, B, H, DH, kv_heads, 2, dist.new_group([0, 1]),
                                 seq_length_is_variable=variable, local_seq_length=None if variable else n,
                                 global_seq_length=None if variable else S)
    q, k, v, up = (t[:, :, sl].contiguous() for t in _inputs(kv_heads))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    module = torch.nn.Module()
    pos = torch.arange(S)[sl].expand(B, n)
    out, _ = uattn(module, q, k, v, None, position_ids=pos)  # [b, s_local, h * d]
    up_b = up.transpose(1, 2).reshape(B, n, H * DH)
    (out * up_b).sum().backward()
    ref_out = ref[0].transpose(1, 2).reshape(B, S, H * DH)[:, sl]
    errs = [_rel(out.detach(), ref_out)] + [_rel(a, b[:, :, sl]) for a, b in zip((q.grad, k.grad, v.grad), ref[1:])]
    try:
        uattn(module, q, k, v, None)
    except ValueError as e:
        missing = str(e)
    return errs, missing


@pytest.mark.parametrize("kv_heads,variable", [(4, False), (1, True)])
def test_ulysses_hf_attention_equals_full_attention(kv_heads, variable):
    for errs, missing in run_distributed(_ulysses_hf, world_size=2, args=(kv_heads, variable)):
        assert max(errs) <= REL, errs
        assert missing.startswith("UlyssesSPAttentionHF: position_ids are required in every forward call")


def _adapter():
    import deepspeed.comm as dist
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPDataLoaderAdapter

    rank = dist.get_rank()
    # each rank's own loader: 2 batches of [1, 6] (rank 1's second batch is 8 long)
    lengths = [6, 6] if rank == 0 else [6, 8]
    batches = [{"input_ids": torch.arange(n).view(1, n) + 100 * rank + 10 * i, "position_ids": torch.arange(n).view(1, n),
                "labels": torch.arange(n).view(1, n) + 100 * rank + 10 * i, "tag": f"r{rank}b{i}"}
               for i, n in enumerate(lengths)]
    group = dist.new_group([0, 1])
    dl = UlyssesSPDataLoaderAdapter(batches, sp_rank=rank, sp_group=group, sp_world_size=2, device="cpu")
    got = [next(dl) for _ in range(4)]
    got = [{k: v.tolist() if torch.is_tensor(v) else v for k, v in b.items()} for b in got]
    try:
        next(dl)
    except StopIteration:
        got.append("stop")
    bad = UlyssesSPDataLoaderAdapter([{"input_ids": torch.zeros(1, 5, dtype=torch.long),
                                       "position_ids": torch.zeros(1, 5, dtype=torch.long)}],
                                     sp_rank=rank, sp_group=group, sp_world_size=2, device="cpu")
    try:
        next(bad)
    except ValueError as e:
        got.append(str(e))
    return len(dl), got


def test_dataloader_adapter_shards_every_ranks_batch():
    outs = run_distributed(_adapter, world_size=2)
    for rank, (length, got) in enumerate(outs):
        assert length == 4
        # micro-batch j is rank j's batch; this rank holds its half of the sequence
        first, second = got[0], got[1]
        assert first["tag"] == "r0b0" and second["tag"] == "r1b0"
        lo = 3 * rank
        assert first["input_ids"] == [list(range(lo, lo + 3))]
        assert first["position_ids"] == [list(range(lo, lo + 3))]
        # labels became shift_labels (shifted left, -100 last) before sharding
        assert "labels" not in first
        assert first["shift_labels"] == ([[1, 2, 3]] if rank == 0 else [[4, 5, -100]])
        assert got[3]["tag"] == "r1b1" and len(got[3]["input_ids"][0]) == 4  # rank 1's 8-long batch
        assert got[4] == "stop"
        assert "sequence length 5, not divisible by the sequence-parallel size 2" in got[5]


def _weighted_loss():
    import deepspeed.comm as dist
    from deepspeed.sequence.loss import sequence_parallel_mean_loss

    rank = dist.get_rank()
    group = dist.new_group([0, 1])
    torch.manual_seed(0)
    w = torch.randn(4, 5, requires_grad=True)
    x = torch.randn(6, 4)
    labels = torch.tensor([1, 2, 3, -100, -100, -100])  # rank 0: 3 valid tokens, rank 1: none
    ce = torch.nn.functional.cross_entropy
    ref_w = w.detach().clone().requires_grad_()
    ref = ce(x @ ref_w, labels, ignore_index=-100)
    ref.backward()
    mine = slice(0, 3) if rank == 0 else slice(3, 6)
    local_labels = labels[mine]
    local = ce(x[mine] @ w, local_labels, ignore_index=-100)  # NaN on rank 1 (no valid token)
    n = int((local_labels != -100).sum())
    loss = sequence_parallel_mean_loss(local, n, group)
    loss.backward()
    g = w.grad.clone()
    dist.all_reduce(g)
    return abs(loss.item() - ref.item()) / ref.item(), _rel(g / 2, ref_w.grad), n, bool(torch.isnan(local))


def test_weighted_loss_ignores_an_all_padding_shard():
    outs = run_distributed(_weighted_loss, world_size=2)
    assert [o[2] for o in outs] == [3, 0] and outs[1][3]  # rank 1's own mean is NaN
    for loss_err, grad_err, _, _ in outs:
        assert loss_err <= REL and grad_err <= REL


def _seq_all_to_all():
    import deepspeed.comm as dist
    from deepspeed.sequence.layer import _SeqAllToAll

    rank = dist.get_rank()
    group = dist.new_group([0, 1])
    full = torch.arange(4 * 6, dtype=torch.float32).view(4, 1, 6)  # [seq, batch, heads]
    mine = full[2 * rank:2 * rank + 2].clone().requires_grad_()
    # DeepSpeed's call (transformers' esmfold): heads scattered (2), sequence gathered (0)
    out = _SeqAllToAll.apply(group, mine, 2, 0)
    weight = torch.arange(out.numel(), dtype=torch.float32).view(out.shape)
    (out * weight).sum().backward()
    return out.tolist(), full[:, :, 3 * rank:3 * rank + 3].tolist(), mine.grad.tolist(), weight


def test_seq_all_to_all_exchanges_sequence_for_heads():
    outs = run_distributed(_seq_all_to_all, world_size=2)
    weights = [o[3] for o in outs]
    for rank, (out, want, grad, _) in enumerate(outs):
        assert out == want  # the whole sequence of this rank's 3 heads
        # the gradient of rank r's shard: each rank's weights for its heads, at r's positions
        expect = torch.cat([w[2 * rank:2 * rank + 2] for w in weights], dim=2)
        assert grad == expect.tolist()
