"""Every collective ZeRO sends goes through deepspeed.comm, so the comms logger enabled in the
ds_config records it: ZeRO-2's gradient reduce-scatters and parameter all-gathers, ZeRO-3's
gathers, and the engine's own all-reduce at stage 0 (shared-memory and gloo paths alike)."""

import pytest
import torch

from deepspeed.testing.distributed import run_distributed


def _logged_body(stage):
    import deepspeed
    import deepspeed.comm as dist

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    cfg = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
           "comms_logger": {"enabled": True, "verbose": False}, "zero_optimization": {"stage": stage}}
    engine, *_ = deepspeed.initialize(model=model, config=cfg)
    dist.reset_log()
    for step in range(2):
        g = torch.Generator().manual_seed(step * 10 + dist.get_rank())
        x, y = torch.randn(2, 8, generator=g), torch.randn(2, 4, generator=g)
        engine.backward(torch.nn.functional.mse_loss(engine(x), y))
        engine.step()
    summary = dist.log_summary(return_dict=True)
    return {op: {size: row["count"] for size, row in rows.items()} for op, rows in summary.items()}


@pytest.mark.parametrize("shm", ["1", "0"])
def test_zero2_reduce_scatter_and_all_gather_are_logged(shm):
    for table in run_distributed(_logged_body, world_size=2, args=(2,), env={"DS_SHM_COMM": shm}):
        # 212 parameters (8*16 + 16 + 16*4 + 4) in one group and one bucket: reduce-scatter of the
        # fp32 gradients (848 bytes), then the updated 106-element halves gathered (848 bytes)
        assert table["reduce_scatter"] == {848: 2}
        assert table["all_gather_into_tensor"] == {848: 2}
        assert "all_reduce" in table  # the global gradient norm


def test_zero3_and_stage0_traffic_is_logged():
    z3 = run_distributed(_logged_body, world_size=2, args=(3,))[0]
    assert sum(z3["reduce_scatter_tensor"].values()) >= 2 and sum(z3["all_gather_into_tensor"].values()) >= 2
    z0 = run_distributed(_logged_body, world_size=2, args=(0,))[0]
    assert z0["all_reduce"] == {848: 2}  # the engine's gradient buckets (one 212-element fp32 bucket)
