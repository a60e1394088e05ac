"""MiCS (``mics_shard_size``) on 4 gloo ranks (2 shard groups x 2): the losses of 10 steps equal
plain ZeRO-3's (fp32, 1e-6 relative), the comms logger shows every parameter all-gather inside a
2-rank group, and ZeRO++ / MiCS values that cannot work are refused naming key, value and fix."""

import pytest
import torch
import torch.nn.functional as F

from deepspeed.testing.distributed import run_distributed

STEPS = 10


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(12, 32)
        self.fc2 = torch.nn.Linear(32, 32)
        self.head = torch.nn.Linear(32, 4)

    def forward(self, x, y):
        return F.mse_loss(self.head(torch.tanh(self.fc2(torch.tanh(self.fc1(x))))), y)


def _config(**zero):
    return {"train_micro_batch_size_per_gpu": 4, "steps_per_print": 10**9,
            "optimizer": {"type": "Adam", "params": {"lr": 1e-2, "torch_adam": True}},
            "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0, **zero}}


def _batch(step, rank):
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(4, 12, generator=g), torch.randn(4, 4, generator=g)


def _run(zero, use_mics_init):
    import deepspeed
    import deepspeed.comm as dist

    cfg = _config(**zero)
    torch.manual_seed(0)
    if use_mics_init:
        with deepspeed.zero.MiCS_Init(config_dict_or_path=cfg):
            model = Net()
    else:
        model = Net()
    engine, *_ = deepspeed.initialize(model=model, config=cfg)
    gathers = []
    logger = dist.comms_logger
    orig = logger.append

    def spy(raw_name, record_name, latency, msg_size, world_size, rank):
        gathers.append((raw_name, world_size))
        return orig(raw_name, record_name, latency, msg_size, world_size, rank)

    logger.append = spy
    dist.configure(enabled=True, prof_all=True, prof_ops=[], verbose=False)
    losses = []
    try:
        for step in range(STEPS):
            x, y = _batch(0, dist.get_rank())  # one batch per rank: the loss must fall
            loss = engine(x, y)
            engine.backward(loss)
            engine.step()
            losses.append(float(loss.detach()))
    finally:
        logger.append = orig
        dist.configure(enabled=False)
        dist.reset_log()
    return losses, sorted(set(gathers))


def _body():
    plain = _run({}, False)
    mics = _run({"mics_shard_size": 2}, False)
    mics_init = _run({"mics_shard_size": 2, "mics_hierarchical_params_gather": True}, True)
    return plain, mics, mics_init


def test_mics_equals_zero3_and_gathers_inside_the_shard_group():
    for (plain, plain_ops), (mics, mics_ops), (init, init_ops) in run_distributed(_body, world_size=4):
        for other in (mics, init):
            rel = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(plain, other))
            assert rel <= 1e-6, (plain, other)
        assert plain[-1] < 0.9 * plain[0]
        # plain ZeRO-3 gathers over all 4 ranks; MiCS only inside its 2-rank shard group, and the
        # gradient shards cross the shard groups in one all-reduce over the 2-rank replica group.
        assert ("all_gather_into_tensor", 4) in plain_ops
        for ops in (mics_ops, init_ops):
            assert [w for op, w in ops if op == "all_gather_into_tensor"] == [2], ops
            assert [w for op, w in ops if op.startswith("reduce_scatter")] == [2], ops
            assert ("all_reduce", 2) in ops


def _refusal_body(zero, optimizer=None):
    import deepspeed

    cfg = dict(_config(), zero_optimization=zero)
    if optimizer is not None:
        cfg["optimizer"] = {"type": optimizer, "params": {"lr": 1e-3}}
    try:
        deepspeed.initialize(model=Net(), config=cfg)
    except Exception as e:  # noqa: BLE001 - the message is what is checked
        return f"{type(e).__name__}: {e}"
    return "no error"


@pytest.mark.parametrize("zero, expected", [
    ({"stage": 3, "mics_shard_size": 3},
     "zero_optimization.mics_shard_size=3 does not divide the data-parallel world size 2; use a divisor of 2"),
    ({"stage": 2, "mics_shard_size": 2}, "zero_optimization.mics_shard_size=2 needs zero_optimization.stage=3 "
                                         "(got stage=2)"),
    ({"stage": 3, "zero_hpz_partition_size": 3},
     "zero_optimization.zero_hpz_partition_size=3 does not divide the data-parallel world size 2"),
    ({"stage": 3, "zero_hpz_partition_size": 2},
     "NotImplementedError: zero_optimization.zero_hpz_partition_size=2: ZeRO++ hierarchical partitioning (hpZ) "
     "is not implemented by ds-zero"),
    ({"stage": 2, "zero_quantized_weights": True},
     "zero_optimization.zero_quantized_weights=true needs zero_optimization.stage=3 (got stage=2)"),
    ({"stage": 1, "zero_quantized_gradients": True},
     "zero_optimization.zero_quantized_gradients=true needs zero_optimization.stage=3 (got stage=1)"),
])
def test_bad_comm_efficient_values_are_refused(zero, expected):
    msg = run_distributed(_refusal_body, world_size=2, args=(zero,))[0]
    assert expected in msg, msg


@pytest.mark.parametrize("optimizer", ["OneBitAdam", "ZeroOneAdam", "OneBitLamb"])
def test_onebit_optimizers_are_refused_with_zero(optimizer):
    msg = run_distributed(_refusal_body, world_size=2, args=({"stage": 1}, optimizer))[0]
    assert (f"ConfigError: optimizer.type={optimizer!r} with zero_optimization.stage=1: the 1-bit optimizers "
            "compress the data-parallel all-reduce and work without ZeRO only") in msg, msg


def _resume_body(ckpt):
    import deepspeed
    import deepspeed.comm as dist

    cfg = _config(mics_shard_size=2)
    rank = dist.get_rank()

    def train(engine, start, stop):
        out = []
        for step in range(start, stop):
            x, y = _batch(step, rank)
            loss = engine(x, y)
            engine.backward(loss)
            engine.step()
            out.append(float(loss.detach()))
        return out

    torch.manual_seed(0)
    engine, *_ = deepspeed.initialize(model=Net(), config=cfg)
    train(engine, 0, 4)
    engine.save_checkpoint(ckpt)
    after = train(engine, 4, 8)
    torch.manual_seed(1)  # other initial weights: the checkpoint must replace them
    fresh, *_ = deepspeed.initialize(model=Net(), config=cfg)
    fresh.load_checkpoint(ckpt)
    return after, train(fresh, 4, 8)


def test_mics_checkpoint_resumes_bitwise(tmp_path):
    for after, resumed in run_distributed(_resume_body, world_size=4, args=(str(tmp_path / "ckpt"),)):
        assert after == resumed
