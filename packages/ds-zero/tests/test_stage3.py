"""ZeRO stage 3 through ``deepspeed.initialize`` and ``deepspeed.zero.Init``, on 2 and 4 gloo ranks.

Parity tolerance: 1e-5 relative in fp32 after 20 steps against stage 0 (only the order of a few
additions differs: bucketed reduce-scatter instead of all-reduce).
"""

import os

import pytest
import torch

from deepspeed.testing.distributed import run_distributed

RTOL = 1e-5
STEPS = 20


class TiedLM(torch.nn.Module):
    """Embedding and output head share one weight (as in GPT-2)."""

    def __init__(self, vocab=23, hidden=12):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.body = torch.nn.Sequential(torch.nn.Linear(hidden, 2 * hidden), torch.nn.GELU(),
                                        torch.nn.Linear(2 * hidden, hidden), torch.nn.LayerNorm(hidden))
        self.head = torch.nn.Linear(hidden, vocab, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, ids):
        return self.head(self.body(self.embed(ids)) * self.scale)


def _config(stage, **zero):
    return {"train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 2, "gradient_clipping": 1.0,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.01}},
            "zero_optimization": dict(stage=stage, **zero)}


Z3 = dict(stage3_param_persistence_threshold=0, reduce_bucket_size=64, stage3_prefetch_bucket_size=100)


def _batch(step, rank):
    g = torch.Generator().manual_seed(100 * step + rank)
    ids = torch.randint(0, 23, (3, 5), generator=g)
    return ids, torch.randint(0, 23, (3, 5), generator=g)


def _train(engine, start, stop):
    import deepspeed.comm as dist

    for step in range(start, stop):
        for micro in range(engine.gradient_accumulation_steps()):
            ids, target = _batch(2 * step + micro, dist.get_rank())
            logits = engine(ids)
            engine.backward(torch.nn.functional.cross_entropy(logits.reshape(-1, 23), target.reshape(-1)))
            engine.step()


def _full(engine):
    """Full fp32 parameters (gathered for stage 3)."""
    from deepspeed.zero import GatheredParameters

    params = list(engine.module.parameters())
    with GatheredParameters(params):
        return [p.detach().clone().float() for p in params]


def _rel(a, b):
    return max(((x - y).abs().max() / y.abs().max()).item() for x, y in zip(a, b))


def _body(tmp):
    import deepspeed
    import deepspeed.comm as dist
    from deepspeed.utils import zero_to_fp32
    from deepspeed.zero import GatheredParameters, ZeroParamStatus

    rank = dist.get_rank()
    out = {}
    torch.manual_seed(0)
    ref, _, _, _ = deepspeed.initialize(model=TiedLM(), config=_config(0))
    _train(ref, 0, STEPS)
    want = _full(ref)

    for name, zero in [("stage3", Z3), ("stage3_default_persistence", {}),
                       ("stage3_offload", dict(Z3, offload_optimizer={"device": "cpu"}, offload_param={"device": "cpu"})),
                       ("stage3_overlap_off", dict(Z3, overlap_comm=False, reduce_bucket_size=10**6))]:
        torch.manual_seed(0)
        engine, opt, _, _ = deepspeed.initialize(model=TiedLM(), config=_config(3, **zero))
        assert type(opt).__name__ == "DeepSpeedZeroOptimizer_Stage3"
        if "offload" in name:
            assert type(opt.optimizer).__name__ == "DeepSpeedCPUAdam" and opt.cpu_offload and opt.offload_param
        _train(engine, 0, STEPS)
        out[name] = _rel(_full(engine), want)
    # partitioned state: every non-persistent parameter released, slices of ceil(numel / world)
    p = engine.module.body[0].weight
    world = dist.get_world_size()
    out["attrs"] = (p.ds_status == ZeroParamStatus.NOT_AVAILABLE, p.numel(), p.ds_numel, tuple(p.ds_shape),
                    p.partition_numel(), -(-24 * 12 // world))

    # zero.Init: each rank seeds differently; rank 0's initial weights must win everywhere
    torch.manual_seed(1000 + rank)
    with deepspeed.zero.Init(config_dict_or_path=_config(3, **Z3)):
        model = TiedLM()
    w = model.body[0].weight
    out["init_partitioned"] = (w.numel(), w.ds_numel, w.ds_tensor.numel())
    with GatheredParameters(model.body[0].bias, modifier_rank=0):
        if rank == 0:
            model.body[0].bias.data.fill_(0.25)
    with GatheredParameters(list(model.parameters())):
        init_full = [p.detach().clone() for p in model.parameters()]
    gathered = [None] * world
    dist.all_gather_object(gathered, [t.sum().item() for t in init_full])
    out["init_same_everywhere"] = all(g == gathered[0] for g in gathered)
    out["modifier_rank_kept"] = bool((init_full[[n for n, _ in model.named_parameters()].index("body.0.bias")]
                                      == 0.25).all())
    engine, _, _, _ = deepspeed.initialize(model=model, config=_config(3, **Z3))
    ref_model = TiedLM()
    with torch.no_grad():
        for p, v in zip(ref_model.parameters(), init_full):
            p.copy_(v)
    ref2, _, _, _ = deepspeed.initialize(model=ref_model, config=_config(0))
    _train(engine, 0, STEPS // 2)
    _train(ref2, 0, STEPS // 2)
    out["init_parity"] = _rel(_full(engine), _full(ref2))

    # checkpoint: save at stage 3, consolidate, compare a plain torch model's outputs
    engine.save_checkpoint(tmp)
    from deepspeed.utils import safe_get_full_optimizer_state

    out["exp_avg"] = safe_get_full_optimizer_state(engine.module.body[0].weight, "exp_avg").numpy().copy()
    ids, _ = _batch(999, 0)
    engine.eval()
    with torch.no_grad():
        logits = engine(ids)
    sd16 = engine._zero3_consolidated_16bit_state_dict()
    saved16 = engine.save_16bit_model(os.path.join(tmp, "hf16"))
    out["no_flag_save"] = saved16
    dist.barrier()
    if rank == 0:
        sd = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(tmp)
        plain = TiedLM()
        missing = plain.load_state_dict(sd, strict=True)
        with torch.no_grad():
            out["consolidated_logits"] = ((plain(ids) - logits).abs().max() / logits.abs().max()).item()
        out["sd16_matches"] = all(torch.equal(sd16[k].float(), sd[k]) for k in sd)
        out["sd16_none_elsewhere"] = True
        out["missing"] = str(missing)
        out["files"] = sorted(os.listdir(os.path.join(tmp, "global_step10")))
    engine.train()
    # resume in a fresh engine from the checkpoint; continue both
    torch.manual_seed(77)
    with deepspeed.zero.Init(config_dict_or_path=_config(3, **Z3)):
        other = TiedLM()
    resumed, _, _, _ = deepspeed.initialize(model=other, config=_config(3, **Z3))
    resumed.load_checkpoint(tmp)
    _train(resumed, STEPS // 2, STEPS)
    _train(ref2, STEPS // 2, STEPS)
    out["resumed"] = _rel(_full(resumed), _full(ref2))
    return out


@pytest.mark.parametrize("world_size,shm", [(2, "1"), (4, "1"), (2, "0")])  # DS_SHM_COMM=0: through gloo
def test_stage3(tmp_path, world_size, shm):
    results = run_distributed(_body, world_size=world_size, args=(str(tmp_path),), timeout=400,
                              env={"DS_SHM_COMM": shm})
    for rank, out in enumerate(results):
        for key in ("stage3", "stage3_default_persistence", "stage3_offload", "stage3_overlap_off", "init_parity",
                    "resumed"):
            assert out[key] < RTOL, f"rank {rank} {key}: max relative difference {out[key]:.3g} vs stage 0"
        released, numel, ds_numel, shape, part, want_part = out["attrs"]
        assert released and numel == 0 and ds_numel == 24 * 12 and shape == (24, 12) and part == want_part
        assert out["init_partitioned"] == (0, 24 * 12, -(-24 * 12 // world_size))
        assert out["init_same_everywhere"] and out["modifier_rank_kept"]
    r0 = results[0]
    assert r0["consolidated_logits"] < RTOL and r0["sd16_matches"], r0
    # stage3_gather_16bit_weights_on_model_save is off: DeepSpeed refuses to write empty weights
    assert all(out["no_flag_save"] is False for out in results)
    assert not (tmp_path / "hf16").exists()
    assert r0["files"] == sorted(["ds_manifest.json", "mp_rank_00_model_states.pt"]
                                 + [f"zero_pp_rank_{r}_mp_rank_00_{k}_states.pt"
                                    for r in range(world_size) for k in ("model", "optim")])
    # resume on another world size: this single process loads the world_size-rank shards
    import deepspeed
    from deepspeed.utils import safe_get_full_optimizer_state, zero_to_fp32

    with deepspeed.zero.Init(config_dict_or_path=_config(3, **Z3)):
        model = TiedLM()
    engine, _, _, _ = deepspeed.initialize(model=model, config=_config(3, **Z3))
    engine.load_checkpoint(str(tmp_path))
    want = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(tmp_path))
    names = [n for n, _ in engine.module.named_parameters()]
    assert _rel(_full(engine), [want[n] for n in names]) < 1e-7
    assert float(safe_get_full_optimizer_state(model.body[0].weight, "exp_avg_sq").abs().sum()) > 0
    assert torch.equal(safe_get_full_optimizer_state(model.body[0].weight, "exp_avg"),
                       torch.from_numpy(results[0]["exp_avg"]))


def _save16_body(tmp):
    import deepspeed
    import deepspeed.comm as dist

    cfg = _config(3, **Z3, stage3_gather_16bit_weights_on_model_save=True)
    torch.manual_seed(0)
    engine, _, _, _ = deepspeed.initialize(model=TiedLM(), config=cfg)
    _train(engine, 0, 2)
    sd = engine._zero3_consolidated_16bit_state_dict()
    assert engine.save_16bit_model(tmp)
    dist.barrier()
    # Note: numpy, since tensors sent between processes use shared memory that dies with the rank.
    return None if sd is None else {k: v.numpy().copy() for k, v in sd.items()}


def test_save_16bit_model_gathers_full_weights(tmp_path):
    results = run_distributed(_save16_body, world_size=2, args=(str(tmp_path),), timeout=200)
    assert results[1] is None  # gathered on rank 0 only
    saved = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    assert set(saved) == set(results[0]) and all(torch.equal(saved[k], torch.from_numpy(results[0][k]))
                                                 for k in saved)
    plain = TiedLM()
    plain.load_state_dict(saved)  # full shapes for every name, tied head included
    assert saved["body.0.weight"].shape == (24, 12)


class _Checkpointed(torch.nn.Module):
    def __init__(self, reentrant):
        super().__init__()
        self.reentrant = reentrant
        self.a = torch.nn.Linear(4, 8)
        self.b = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
        self.c = torch.nn.Linear(8, 2)

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        return self.c(checkpoint(self.b, self.a(x), use_reentrant=self.reentrant))


@pytest.mark.parametrize("reentrant", [False, True])
def test_stage3_with_activation_checkpointing(reentrant):
    """Recomputation runs module hooks inside backward (and may stop early): weights must stay right."""
    import deepspeed

    cfg = {"train_batch_size": 2, "optimizer": {"type": "Adam", "params": {"lr": 1e-2}},
           "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
    torch.manual_seed(0)
    z3, _, _, _ = deepspeed.initialize(model=_Checkpointed(reentrant), config=cfg)
    torch.manual_seed(0)
    ref, _, _, _ = deepspeed.initialize(model=_Checkpointed(reentrant), config=dict(cfg, zero_optimization={"stage": 0}))
    for step in range(4):
        x = torch.randn(2, 4, generator=torch.Generator().manual_seed(step), requires_grad=reentrant)
        for engine in (z3, ref):
            engine.backward(engine(x).pow(2).sum())
            engine.step()
    assert _rel(_full(z3), [p.detach() for p in ref.module.parameters()]) < RTOL


def test_prefetch_is_bounded_by_prefetch_bucket_size():
    """Once the first forward recorded the module order, each module's pre-hook also gathers the
    next modules' parameters, but never more than stage3_prefetch_bucket_size elements ahead."""
    import deepspeed
    from deepspeed.zero import ZeroParamStatus

    layers = [torch.nn.Linear(8, 8) for _ in range(10)]  # 72 elements each
    model = torch.nn.Sequential(*layers)
    # Note: stage3_max_reuse_distance=0 keeps no parameter gathered for its backward, so only
    # prefetching adds to what is live (retention is tested below).
    cfg = {"train_batch_size": 2, "optimizer": {"type": "Adam", "params": {"lr": 1e-3}},
           "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                                 "stage3_prefetch_bucket_size": 100, "stage3_max_reuse_distance": 0}}
    engine, _, _, _ = deepspeed.initialize(model=model, config=cfg)
    live = []

    def count(module, args):
        live.append(sum(p.ds_numel for p in model.parameters() if p.ds_status == ZeroParamStatus.AVAILABLE))

    for layer in layers:
        layer.register_forward_pre_hook(count)
    for _ in range(2):
        engine.backward(engine(torch.randn(2, 8)).sum())
        engine.step()
    first, second = live[:10], live[10:]
    assert first == [72] * 10  # first forward: only the running layer
    assert max(second) > 72 and max(second) <= 72 + 100 + 72, second


# Note: backward needs the weights of layers 1-9 (layer 0's input needs no gradient) and no bias.
@pytest.mark.parametrize("zero,regathered", [
    ({}, 0),  # DeepSpeed's defaults (1e9, 1e9): everything stays gathered from forward to backward
    ({"stage3_max_reuse_distance": 0}, 9),
    ({"stage3_max_reuse_distance": 300}, 6),  # layer k's next use is 2 x 72 x (9 - k) elements away: 7-9 kept
    ({"stage3_max_live_parameters": 200}, 8),  # layers 0 and 1 (2 x 72) kept, then only biases fit
])
def test_reuse_distance_and_live_parameters_keep_parameters_for_backward(zero, regathered):
    """After the first forward recorded the order, a layer's parameters stay gathered for backward
    when their next use is within stage3_max_reuse_distance elements and no more than
    stage3_max_live_parameters elements are kept; backward gathers only the others again, and the
    result does not change."""
    import deepspeed
    from deepspeed.runtime.zero import _fetch

    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(10)])  # 72 elements each

    cfg = {"train_batch_size": 2, "optimizer": {"type": "Adam", "params": {"lr": 1e-3}},
           "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                                 "stage3_prefetch_bucket_size": 0, **zero}}
    engine, _, _, _ = deepspeed.initialize(model=build(), config=cfg)
    ref = build()
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=0.0)  # FusedAdam's defaults
    calls = []
    real = _fetch.gather

    def counting(params, async_op=False):
        todo = [p for p in params if p.ds_status == _fetch.ZeroParamStatus.NOT_AVAILABLE]
        calls.append((torch._C._current_graph_task_id() != -1, len(todo)))
        return real(params, async_op)

    _fetch.gather = counting
    try:
        for step in range(3):
            x = torch.randn(2, 8, generator=torch.Generator().manual_seed(step))
            calls.clear()
            engine.backward(engine(x).square().mean())
            engine.step()
            ref(x).square().mean().backward()
            ref_opt.step()
            ref_opt.zero_grad()
    finally:
        _fetch.gather = real
    assert sum(n for in_backward, n in calls if in_backward) == regathered, calls
    assert sum(n for in_backward, n in calls if not in_backward) == 20, calls  # forward gathers every layer
    assert _rel(_full(engine), [p.detach() for p in ref.parameters()]) < RTOL


def _partial_offload_body(tmp):
    import deepspeed
    from deepspeed.utils import zero_to_fp32

    out = {}
    torch.manual_seed(0)
    ref, _, _, _ = deepspeed.initialize(model=TiedLM(), config=_config(0))
    _train(ref, 0, STEPS)
    want = _full(ref)
    off = {"device": "cpu"}
    for name, zero in [("sub_groups", dict(Z3, sub_group_size=100)),
                       ("ratio_half", dict(Z3, sub_group_size=100, offload_optimizer=dict(off, ratio=0.5))),
                       ("ratio_zero", dict(Z3, sub_group_size=100, offload_optimizer=dict(off, ratio=0.0))),
                       ("ratio_one", dict(Z3, sub_group_size=100, offload_optimizer=dict(off, ratio=1.0)))]:
        torch.manual_seed(0)
        engine, opt, _, _ = deepspeed.initialize(model=TiedLM(), config=_config(3, **zero))
        _train(engine, 0, STEPS)
        n = len(opt.fp16_groups)
        on_cpu_opt = sum(len(g["params"]) for g in opt.optimizer.param_groups)
        on_backup = sum(len(g["params"]) for g in opt.backup_optimizer.param_groups) if opt.backup_optimizer else 0
        out[name] = (_rel(_full(engine), want), n, on_cpu_opt, on_backup, type(opt.optimizer).__name__,
                     type(opt.backup_optimizer).__name__)
        if name == "ratio_half":
            engine.save_checkpoint(tmp, tag="partial")
            saved = _full(engine)
            torch.manual_seed(5)
            again, _, _, _ = deepspeed.initialize(model=TiedLM(), config=_config(3, **zero))
            again.load_checkpoint(tmp, tag="partial")
            out["reload"] = _rel(_full(again), saved)
            _train(engine, STEPS, STEPS + 3)
            _train(again, STEPS, STEPS + 3)
            out["reload_continue"] = _rel(_full(again), _full(engine))  # moments of both optimizers came back
            sd = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(tmp, tag="partial")
            names = [n for n, _ in engine.module.named_parameters()]
            out["consolidated"] = max(((sd[k] - v).abs().max() / v.abs().max()).item() for k, v in zip(names, saved))
    cfg = _config(3, **Z3, sub_group_size=100, offload_optimizer=dict(off, ratio=0.5))
    cfg["optimizer"] = {"type": "Adagrad", "params": {"lr": 1e-2}}
    try:
        deepspeed.initialize(model=TiedLM(), config=cfg)
        out["adagrad"] = "accepted"
    except NotImplementedError as exc:
        out["adagrad"] = str(exc)
    return out


def test_partial_offload_ratio_and_sub_groups(tmp_path):
    """offload_optimizer.ratio < 1 (DeepSpeed's split: the last ratio share of the sub-groups on the
    CPU optimizer, the rest on torch AdamW) and sub_group_size, against stage 0; checkpoints keep
    both optimizers' state."""
    for out in run_distributed(_partial_offload_body, world_size=2, args=(str(tmp_path),), timeout=400):
        for name in ("sub_groups", "ratio_half", "ratio_zero", "ratio_one"):
            assert out[name][0] < RTOL, (name, out[name])
        rel, n, on_cpu, on_backup, cpu_cls, backup_cls = out["ratio_half"]
        assert n > 2 and on_backup == int(0.5 * n) and on_cpu == n - int(0.5 * n)
        assert (cpu_cls, backup_cls) == ("DeepSpeedCPUAdam", "AdamW")
        assert out["ratio_zero"][2:4] == (0, out["ratio_zero"][1])
        assert out["ratio_one"][2:4] == (out["ratio_one"][1], 0) and out["ratio_one"][5] == "NoneType"
        assert out["sub_groups"][1] == n and out["sub_groups"][3] == 0
        assert out["reload"] == 0.0 and out["reload_continue"] == 0.0 and out["consolidated"] == 0.0
        assert "ratio=0.5 (partial offload) steps the offloaded sub-groups with DeepSpeedCPUAdam" in out["adagrad"]
        assert "DeepSpeedCPUAdagrad" in out["adagrad"]
