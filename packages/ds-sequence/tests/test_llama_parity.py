"""DeepSpeed-Ulysses on a tiny Llama (RMSNorm, RoPE, GQA attention, SwiGLU MLP; random init, built
here in plain PyTorch): sequence-parallel size 2 on 2 gloo ranks gives the logits, loss and
gradients of the same model run on the full sequence in one process, alone and through
``deepspeed.initialize`` with ZeRO-2 and ZeRO-3; 10 training steps give the same losses.

Tolerance: fp32, 1e-5 relative (``max|a - b| <= 1e-5 * max|b|`` per tensor; the two runs differ
only in the order of a few sums). Labels carry uneven padding (-100) so the two shards have
different numbers of valid tokens: the loss is weighted by them (sequence_parallel_mean_loss).
Optimizer: SGD with momentum (Adam's per-element normalisation turns rounding noise in gradients
that are mathematically zero into full-size steps).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from deepspeed.testing.distributed import run_distributed

VOCAB, D, HEADS, KV_HEADS, LAYERS, FFN, SEQ, BATCH = 48, 32, 4, 2, 2, 64, 16, 2
STEPS = 10
REL = 1e-5


class RMSNorm(torch.nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rope(positions, dim):
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    freqs = positions.to(torch.float32)[..., None] * inv  # [b, s, dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos()[:, :, None, :], emb.sin()[:, :, None, :]  # [b, s, 1, dim]


def _rotate(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(torch.nn.Module):
    def __init__(self, sequence_parallel):
        super().__init__()
        from deepspeed.sequence.layer import DistributedAttention

        self.dh = D // HEADS
        self.q = torch.nn.Linear(D, HEADS * self.dh, bias=False)
        self.k = torch.nn.Linear(D, KV_HEADS * self.dh, bias=False)
        self.v = torch.nn.Linear(D, KV_HEADS * self.dh, bias=False)
        self.o = torch.nn.Linear(HEADS * self.dh, D, bias=False)
        # [batch, seq, heads, head_dim]: heads are dimension 2, the sequence dimension 1; the group
        # is the engine's (None) or WORLD given explicitly
        self.core = DistributedAttention(self._local, sequence_parallel, scatter_idx=2, gather_idx=1) \
            if sequence_parallel is not False else None

    @staticmethod
    def _local(q, k, v):
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [b, h, s, dh]
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        s = q.shape[2]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        mask = torch.ones(s, s, dtype=torch.bool).triu(1)
        out = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v
        return out.transpose(1, 2)  # [b, s, h, dh]

    def forward(self, x, cos, sin):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, HEADS, self.dh)
        k = self.k(x).view(b, s, KV_HEADS, self.dh)
        v = self.v(x).view(b, s, KV_HEADS, self.dh)
        q, k = q * cos + _rotate(q) * sin, k * cos + _rotate(k) * sin  # positions of this shard
        out = self.core(q, k, v) if self.core is not None else self._local(q, k, v)
        return self.o(out.reshape(b, s, HEADS * self.dh))


class Block(torch.nn.Module):
    def __init__(self, sequence_parallel):
        super().__init__()
        self.attn_norm, self.mlp_norm = RMSNorm(D), RMSNorm(D)
        self.attn = Attention(sequence_parallel)
        self.gate, self.up = torch.nn.Linear(D, FFN, bias=False), torch.nn.Linear(D, FFN, bias=False)
        self.down = torch.nn.Linear(FFN, D, bias=False)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class TinyLlama(torch.nn.Module):
    """``sequence_parallel``: False (plain model), None (the engine's sequence group) or a group."""

    def __init__(self, sequence_parallel=False):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, D)
        self.blocks = torch.nn.ModuleList(Block(sequence_parallel) for _ in range(LAYERS))
        self.norm = RMSNorm(D)
        self.lm_head = torch.nn.Linear(D, VOCAB, bias=False)

    def forward(self, tokens, positions):
        x = self.embed(tokens)
        cos, sin = _rope(positions, D // HEADS)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        return self.lm_head(self.norm(x))


def _batch(step):
    """Tokens, positions and labels of the full sequence (learnable: each row counts up by one
    from a random start); rank 0's half has more padding."""
    g = torch.Generator().manual_seed(100 + step)
    tokens = (torch.randint(0, VOCAB, (BATCH, 1), generator=g) + torch.arange(SEQ)) % VOCAB
    labels = torch.roll(tokens, -1, dims=1)
    labels[:, -1] = -100
    labels[0, 2:7] = -100  # uneven: rank 0's shard loses 5 of its tokens in row 0
    positions = torch.arange(SEQ).expand(BATCH, SEQ)
    return tokens, positions, labels


def _shard(t, rank, world):
    n = t.shape[1] // world
    return t[:, rank * n:(rank + 1) * n]


def _local_loss(logits, labels):
    n = int((labels != -100).sum())
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100)
    return loss, n


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _reference(steps=0, lr=0.05):
    """Full sequence, one process: logits, loss and grads of step 0, then ``steps`` losses."""
    model = TinyLlama(False)
    tokens, positions, labels = _batch(0)
    logits = model(tokens, positions)
    loss, _ = _local_loss(logits, labels)
    loss.backward()
    out = {"logits": logits.detach(), "loss": loss.item(),
           "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters()}}
    if steps:
        model = TinyLlama(False)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        losses = []
        for step in range(steps):
            tokens, positions, labels = _batch(step)
            loss, _ = _local_loss(model(tokens, positions), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        out["losses"] = losses
    return out


def _gather_seq(t, world):
    import deepspeed.comm as dist

    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=1)


def _sp_alone():
    """SP=2 without an engine: the group given explicitly, gradients averaged by hand."""
    import deepspeed.comm as dist
    from deepspeed.sequence.loss import sequence_parallel_mean_loss

    rank, world = dist.get_rank(), dist.get_world_size()
    group = dist.new_group([0, 1])
    model = TinyLlama(group)
    tokens, positions, labels = (_shard(t, rank, world) for t in _batch(0))
    logits = model(tokens, positions)
    local, n = _local_loss(logits, labels)
    loss = sequence_parallel_mean_loss(local, n, group)
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad.detach().clone()
        dist.all_reduce(g)
        grads[name] = g / world  # what the engine does over the sequence-data-parallel group
    ref = _reference()
    return {"logits": _rel(_gather_seq(logits.detach(), world), ref["logits"]),
            "loss": abs(loss.item() - ref["loss"]) / abs(ref["loss"]),
            "grads": max(_rel(grads[k], ref["grads"][k]) for k in ref["grads"]),
            "valid": n}


def test_sp2_equals_full_sequence_alone():
    outs = run_distributed(_sp_alone, world_size=2, timeout=180)
    assert outs[0]["valid"] != outs[1]["valid"]  # the shards really are uneven
    for out in outs:
        assert out["logits"] <= REL, out
        assert out["loss"] <= REL, out
        assert out["grads"] <= REL, out


def _sp_engine(stage, steps, lr=0.05, use_mpu=False):
    import deepspeed
    import deepspeed.comm as dist
    from deepspeed.sequence.loss import sequence_parallel_mean_loss
    from deepspeed.utils import groups, safe_get_full_grad

    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = {"train_micro_batch_size_per_gpu": BATCH, "steps_per_print": 1000, "sequence_parallel_size": 2,
           "zero_allow_untested_optimizer": True,
           "optimizer": {"type": "SGD", "params": {"lr": lr, "momentum": 0.9}},
           "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0}}
    if use_mpu:
        # ALST's way (Accelerate): the groups as an mpu from parallel_state_sp, no config key
        from deepspeed.runtime.sequence_parallel import parallel_state_sp as mpu

        mpu.initialize_sequence_parallel(2)
        del cfg["sequence_parallel_size"]
        engine, *_ = deepspeed.initialize(model=TinyLlama(mpu.get_sequence_parallel_group()), config=cfg, mpu=mpu)
        losses = []
        ref = _reference(steps, lr)
        for step in range(steps):
            tokens, positions, labels = (_shard(t, rank, world) for t in _batch(step))
            local, n = _local_loss(engine(tokens, positions), labels)
            loss = sequence_parallel_mean_loss(local, n, mpu.get_sequence_parallel_group())
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
        return {"losses": max(abs(a - b) / abs(b) for a, b in zip(losses, ref["losses"]))}
    engine, *_ = deepspeed.initialize(model=TinyLlama(None), config=cfg)
    out = {"sp_world": groups._get_sequence_parallel_world_size(), "sp_rank": groups._get_sequence_parallel_rank(),
           "seq_dp_world": groups._get_sequence_data_parallel_world_size(), "dp_world": engine.dp_world_size}
    ref = _reference(steps, lr)
    losses = []
    for step in range(steps):
        tokens, positions, labels = (_shard(t, rank, world) for t in _batch(step))
        logits = engine(tokens, positions)
        local, n = _local_loss(logits, labels)
        loss = sequence_parallel_mean_loss(local, n)
        engine.backward(loss)
        if step == 0:
            out["logits"] = _rel(_gather_seq(logits.detach(), world), ref["logits"])
            out["loss"] = abs(loss.item() - ref["loss"]) / abs(ref["loss"])
            grads = {name: (p.grad if stage < 2 and p.grad is not None else safe_get_full_grad(p)).detach().clone()
                     for name, p in engine.module.named_parameters()}
            out["grads"] = max(_rel(grads[k], ref["grads"][k]) for k in ref["grads"])
        engine.step()
        losses.append(loss.item())
    out["losses"] = max(abs(a - b) / abs(b) for a, b in zip(losses, ref["losses"]))
    out["loss_drop"] = (losses[0], losses[-1])
    return out


@pytest.mark.parametrize("stage", [2, 3])
def test_sp2_equals_full_sequence_with_zero(stage):
    outs = run_distributed(_sp_engine, world_size=2, args=(stage, STEPS), timeout=300)
    for rank, out in enumerate(outs):
        assert (out["sp_world"], out["sp_rank"], out["seq_dp_world"]) == (2, rank, 2), out
        assert out["logits"] <= REL, out
        assert out["loss"] <= REL, out
        assert out["grads"] <= REL, out
        assert out["losses"] <= REL, out
        assert out["loss_drop"][1] < out["loss_drop"][0]  # it trains


def test_sp2_through_the_alst_mpu_trains_like_the_full_sequence():
    """parallel_state_sp's groups passed as ``mpu`` (what register_with_transformers returns): ZeRO-2,
    10 steps, the same losses as the full sequence in one process."""
    for out in run_distributed(_sp_engine, world_size=2, args=(2, STEPS, 0.05, True), timeout=300):
        assert out["losses"] <= REL, out
