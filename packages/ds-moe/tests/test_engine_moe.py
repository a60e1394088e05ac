"""MoE through ``deepspeed.initialize``: expert-parallel training equals ep_size 1, a 4-rank
(ep 2 x dp 2) run trains and its checkpoint reloads at ep_size 1 and 4 with the same outputs.

Parity tolerance: 1e-6 relative on losses and weights after 6 SGD-momentum steps with clipping (fp32;
the two runs differ only in where experts run and in the order of a few sums; SGD, not Adam, whose
per-element normalisation turns rounding noise in mathematically-zero gradients, such as the
attention key bias, into full-size steps).
"""

import os

import pytest
import torch

from deepspeed.testing.distributed import run_distributed

STEPS = 6
CFG = {"train_micro_batch_size_per_gpu": 4, "gradient_clipping": 1.0, "steps_per_print": 1000,
       "optimizer": {"type": "SGD", "params": {"lr": 0.2, "momentum": 0.9}}}


class TinyMoETransformer(torch.nn.Module):
    """Embedding, one attention block, an MoE feed-forward (4 experts, top-2), LM head."""

    def __init__(self, ep_size=1, vocab=32, d=16, drop_tokens=True):
        super().__init__()
        from deepspeed.moe.layer import MoE

        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(vocab, d)
        self.attn = torch.nn.MultiheadAttention(d, 2, batch_first=True)
        self.norm = torch.nn.LayerNorm(d)
        expert = torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.GELU(), torch.nn.Linear(2 * d, d))
        self.moe = MoE(d, expert, num_experts=4, ep_size=ep_size, k=2, capacity_factor=1.0, eval_capacity_factor=4.0,
                       min_capacity=0, drop_tokens=drop_tokens, top2_2nd_expert_sampling=False)
        self.head = torch.nn.Linear(d, vocab)

    def forward(self, tokens):
        h = self.embed(tokens)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        out, l_aux, _ = self.moe(self.norm(h))
        return self.head(h + out), l_aux


def _batch(step, rank):
    """Learnable sequences: each row counts up by one (mod 32) from a random start."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = (torch.randint(0, 32, (4, 1), generator=g) + torch.arange(9)) % 32
    return x[:, :-1], x[:, 1:]


def _loss(engine, x, y):
    logits, l_aux = engine(x)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)) + 0.01 * l_aux


def _train(ep_size, drop_tokens=True, save_dir=None, config=CFG):
    import deepspeed
    import deepspeed.comm as dist

    torch.manual_seed(1234)  # the routing's random draws (RTS) start alike in every run
    engine, *_ = deepspeed.initialize(model=TinyMoETransformer(ep_size, drop_tokens=drop_tokens), config=config)
    losses = []
    for step in range(STEPS):
        x, y = _batch(step, dist.get_rank())
        loss = _loss(engine, x, y)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    if save_dir is not None:
        engine.save_checkpoint(save_dir, tag="t")
    engine.eval()
    with torch.no_grad():
        logits, _ = engine(_batch(99, 0)[0])
    experts = {}
    from deepspeed.utils import groups

    ep_rank = groups._get_expert_parallel_rank(f"ep_size_{ep_size}")
    for j, e in enumerate(engine.module.moe.deepspeed_moe.experts.deepspeed_experts):
        experts[ep_rank * engine.module.moe.num_local_experts + j] = [p.detach().clone() for p in e.parameters()]
    shared = [p.detach().clone() for n, p in engine.module.named_parameters() if "deepspeed_experts" not in n]
    return losses, logits, experts, shared


def _parity_body(drop_tokens):
    return _train(1, drop_tokens), _train(2, drop_tokens)


def _rel(a, b):
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-12)


@pytest.mark.parametrize("drop_tokens", [True, False], ids=["capacity", "dropless"])
def test_ep2_training_equals_ep1(drop_tokens):
    results = run_distributed(_parity_body, world_size=2, args=(drop_tokens,))
    for rank, (ep1, ep2) in enumerate(results):
        assert ep1[0] == pytest.approx(ep2[0], rel=1e-6), f"rank {rank} losses"
        assert _rel(ep2[1], ep1[1]) < 1e-6
        for a, b in zip(ep2[3], ep1[3]):
            assert _rel(a, b) < 1e-6
        for e, params in ep2[2].items():  # this rank's two experts at ep 2 vs the same experts at ep 1
            for a, b in zip(params, ep1[2][e]):
                assert _rel(a, b) < 1e-6, f"expert {e}"
    assert results[0][1][2].keys() == {2 * 0, 2 * 0 + 1} and results[1][1][2].keys() == {2, 3}


def _four_rank_body(save_dir):
    import deepspeed
    import deepspeed.comm as dist

    losses, logits, _, _ = _train(2, save_dir=save_dir)
    from deepspeed.utils import groups

    layout = (groups._get_expert_parallel_group_ranks("ep_size_2"), groups._get_expert_data_parallel_group_ranks("ep_size_2"))
    dist.barrier()
    engine4, *_ = deepspeed.initialize(model=TinyMoETransformer(4), config=CFG)  # one expert per rank
    engine4.load_checkpoint(save_dir, tag="t", load_optimizer_states=False)
    engine4.eval()
    with torch.no_grad():
        logits4, _ = engine4(_batch(99, 0)[0])
    refused = None
    try:
        deepspeed.initialize(model=TinyMoETransformer(2), config={**CFG, "zero_optimization": {"stage": 2},
                                                                     "zero_allow_untested_optimizer": True})
    except NotImplementedError as e:
        refused = str(e)
    return losses, logits, layout, refused, logits4


def test_four_ranks_ep2_dp2_train_and_reload_at_ep1_and_ep4(tmp_path):
    import deepspeed

    results = run_distributed(_four_rank_body, world_size=4, args=(str(tmp_path),), timeout=240)
    assert [r[2] for r in results] == [([0, 1], [0, 2]), ([0, 1], [1, 3]), ([2, 3], [0, 2]), ([2, 3], [1, 3])]
    for losses, *_ in results:
        assert sum(losses[-2:]) < sum(losses[:2])  # the loss falls
    files = sorted(f for f in os.listdir(tmp_path / "t") if f.startswith("layer_"))
    assert files == [f"layer_0_expert_{e}_mp_rank_00_model_states.pt" for e in range(4)]
    assert "does not reduce gradient groups" in results[0][3]  # ZeRO-2 with ep_size 2 is refused, not wrong
    for rank in range(4):  # reloaded at ep_size 4 (one expert per rank): the same outputs
        assert _rel(results[rank][4], results[rank][1]) < 1e-5
    engine, *_ = deepspeed.initialize(model=TinyMoETransformer(1), config=CFG)
    engine.load_checkpoint(str(tmp_path), tag="t", load_optimizer_states=False)
    engine.eval()
    with torch.no_grad():
        logits, _ = engine(_batch(99, 0)[0])
    assert _rel(logits, results[0][1]) < 1e-5


def _zero_body(save_dir):
    zero = {**CFG, "zero_optimization": {"stage": 2}, "zero_allow_untested_optimizer": True}
    return _train(1)[0], _train(1, save_dir=save_dir, config=zero)[:2]


def test_zero2_with_replicated_experts_trains_like_stage0_and_reloads(tmp_path):
    """ep_size 1 (every rank holds every expert): ZeRO-2 needs no gradient groups and must train
    exactly like stage 0 (1e-5: ZeRO reduces in other buckets); its checkpoint reloads in one
    process with the same outputs."""
    import deepspeed

    results = run_distributed(_zero_body, world_size=2, args=(str(tmp_path),))
    for stage0, (zero2, _) in results:
        assert zero2 == pytest.approx(stage0, rel=1e-5)
    assert sorted(f for f in os.listdir(tmp_path / "t") if f.startswith("layer_")) == [
        f"layer_0_expert_{e}_mp_rank_00_model_states.pt" for e in range(4)]
    engine, *_ = deepspeed.initialize(model=TinyMoETransformer(1), config=CFG)
    engine.load_checkpoint(str(tmp_path), tag="t", load_optimizer_states=False)
    engine.eval()
    with torch.no_grad():
        logits, _ = engine(_batch(99, 0)[0])
    assert _rel(logits, results[0][1][1]) < 1e-5
