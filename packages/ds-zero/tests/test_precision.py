"""bf16 and fp16 (dynamic loss scaling) at ZeRO stages 1-3 against stage 0 in the same precision.

Tolerance: after 12 steps the fp32 master weights may differ from stage 0's where 16-bit
gradients are summed in another order (measured: < 1e-8 on 2 ranks); 1e-3 relative is far
below what a wrong scale, a missed unscale or a skipped reduction gives (>= 1e-1).
The fp16 runs start at a loss scale of 2**20 so the first steps overflow (6 of 12 here): every
stage must skip the same steps and end at the same scale.
"""

import torch

from deepspeed.testing.distributed import run_distributed

RTOL = 1e-3


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))


def _config(stage, precision):
    cfg = {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "AdamW", "params": {"lr": 5e-3}},
           "gradient_clipping": 1.0,
           "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0}}
    if precision == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 20, "loss_scale_window": 2, "hysteresis": 1}
    else:
        cfg["bf16"] = {"enabled": True}
    return cfg


def _master(engine):
    opt = engine.optimizer
    if hasattr(opt, "fp32_partitioned_groups_flat") or hasattr(opt, "single_partition_of_fp32_groups"):
        from deepspeed.utils.tensor_fragment import safe_get_full_fp32_param

        return [safe_get_full_fp32_param(p) for p in engine.module.parameters()]
    master = {id(p): mp for p, mp in zip(opt.lp_params, opt.fp32_params)}
    return [master[id(p)].detach().clone().float() for p in engine.module.parameters()]


def _body():
    import deepspeed
    import deepspeed.comm as dist

    out = {}
    for precision in ("bf16", "fp16"):
        results = {}
        for stage in (0, 1, 2, 3):
            engine, opt, _, _ = deepspeed.initialize(model=_model(), config=_config(stage, precision))
            for step in range(12):
                g = torch.Generator().manual_seed(10 * step + dist.get_rank())
                x, y = torch.randn(4, 8, generator=g), torch.randn(4, 4, generator=g)
                half = torch.float16 if precision == "fp16" else torch.bfloat16
                engine.backward(torch.nn.functional.mse_loss(engine(x.to(half)).float(), y))
                engine.step()
            dtype = {p.dtype for p in engine.module.parameters()}
            if stage == 3:
                dtype = {p.ds_tensor.dtype for p in engine.module.parameters()}
            results[stage] = (_master(engine), engine.skipped_steps, float(getattr(opt, "loss_scale", 1.0)), dtype)
        want, skipped, scale, _ = results[0]
        for stage in (1, 2, 3):
            got, s, sc, dtype = results[stage]
            out[f"{precision}_stage{stage}"] = (
                max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, want)),
                (s, sc), (skipped, scale), sorted(map(str, dtype)))
    return out


def test_zero_half_precision_matches_stage0():
    for rank, out in enumerate(run_distributed(_body, world_size=2, timeout=300)):
        for key, (rel, got, want, dtypes) in out.items():
            assert rel < RTOL, f"rank {rank} {key}: master weights differ from stage 0 by {rel:.3g}"
            assert got == want, f"rank {rank} {key}: (skipped steps, loss scale) {got} != stage 0's {want}"
            assert dtypes == ["torch.bfloat16" if key.startswith("bf16") else "torch.float16"], (key, dtypes)
        assert out["fp16_stage2"][2][0] > 0, "the fp16 runs were meant to overflow at first"
