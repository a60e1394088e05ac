"""Each DeepSpeed LR schedule, point by point against its documented formula (exact to 1e-12)."""

import math

import pytest
import torch

from deepspeed.runtime import lr_schedules as ls


def _opt(kind="adam", lr=0.5, groups=1):
    params = [[torch.nn.Parameter(torch.zeros(2))] for _ in range(groups)]
    if kind == "adam":
        return torch.optim.Adam([{"params": p} for p in params], lr=lr)
    return torch.optim.SGD([{"params": p} for p in params], lr=lr, momentum=0.9)


def _curve(sched, opt, n):
    out = []
    for _ in range(n):
        sched.step()
        out.append([g["lr"] for g in opt.param_groups])
    return out


def test_valid_lr_schedules_names():
    assert ls.VALID_LR_SCHEDULES == ["LRRangeTest", "OneCycle", "WarmupLR", "WarmupDecayLR", "WarmupCosineLR"]


@pytest.mark.parametrize("staircase", [False, True])
def test_lr_range_test(staircase):
    opt = _opt()
    s = ls.LRRangeTest(opt, lr_range_test_min_lr=1e-3, lr_range_test_step_size=4, lr_range_test_step_rate=2.0,
                       lr_range_test_staircase=staircase)
    assert opt.param_groups[0]["lr"] == 1e-3
    for t, (lr,) in enumerate(_curve(s, opt, 20)):
        i = (t + 1) / 4
        i = math.floor(i) if staircase else i
        assert lr == pytest.approx(1e-3 * (1 + 2.0 * i), rel=1e-12, abs=0)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_one_cycle(kind):
    opt = _opt(kind)
    kw = dict(cycle_min_lr=0.01, cycle_max_lr=0.1, cycle_first_step_size=5, cycle_second_step_size=3,
              decay_step_size=2, decay_lr_rate=0.5, cycle_min_mom=0.8, cycle_max_mom=0.9, decay_mom_rate=0.1)
    s = ls.OneCycle(opt, **kw)
    assert opt.param_groups[0]["lr"] == 0.01
    total, ratio = 8.0, 5 / 8
    for t in range(20):
        s.step()
        g = opt.param_groups[0]
        mom = g["betas"][0] if kind == "adam" else g["momentum"]
        if t < total:
            x = (t + 1) / total - math.floor((t + 1) / total)
            sf = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
            lr_ref, mom_ref = 0.01 + 0.09 * sf, 0.9 - 0.1 * sf
        else:
            d = (t - total + 1) / 2
            lr_ref, mom_ref = 0.01 / (1 + 0.5 * d), 0.9 * (1 + 0.1 * d)
        assert g["lr"] == pytest.approx(lr_ref, rel=1e-12), t
        assert mom == pytest.approx(mom_ref, rel=1e-12), t
    # the peak is reached at the end of the first half
    s.step(4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


@pytest.mark.parametrize("wtype", ["log", "linear"])
def test_warmup_lr(wtype):
    opt = _opt(groups=2)
    s = ls.WarmupLR(opt, warmup_min_lr=[0.0, 0.01], warmup_max_lr=0.1, warmup_num_steps=10, warmup_type=wtype)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.01]
    for t, lrs in enumerate(_curve(s, opt, 15)):
        gamma = (math.log(t + 1) / math.log(10) if wtype == "log" else t / 10) if t < 10 else 1.0
        assert lrs == pytest.approx([0.1 * gamma, 0.01 + 0.09 * gamma], rel=1e-12)


def test_warmup_decay_lr():
    opt = _opt()
    s = ls.WarmupDecayLR(opt, total_num_steps=30, warmup_min_lr=0.0, warmup_max_lr=0.2, warmup_num_steps=10,
                         warmup_type="linear")
    for t, (lr,) in enumerate(_curve(s, opt, 35)):
        gamma = t / 10 if t < 10 else max(0.0, (30 - t) / 20)
        assert lr == pytest.approx(0.2 * gamma, rel=1e-12, abs=1e-15), t
    assert opt.param_groups[0]["lr"] == 0.0


@pytest.mark.parametrize("wtype", ["log", "linear"])
def test_warmup_cosine_lr(wtype):
    opt = _opt(lr=0.3)
    s = ls.WarmupCosineLR(opt, total_num_steps=40, warmup_min_ratio=0.1, warmup_num_steps=8, cos_min_ratio=0.05,
                          warmup_type=wtype)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.03)
    for t, (lr,) in enumerate(_curve(s, opt, 45)):
        if t < 8:
            g = math.log(t + 1) / math.log(8) if wtype == "log" else t / 8
            r = 0.1 + 0.9 * g
        else:
            r = max(0.0, 0.05 + 0.95 * (1 + math.cos(math.pi * (t - 8 + 1) / 32)) / 2)
        assert lr == pytest.approx(0.3 * r, rel=1e-12), t


def test_state_dict_roundtrip_and_get_last_lr():
    opt = _opt()
    s = ls.WarmupLR(opt, warmup_max_lr=0.1, warmup_num_steps=10)
    _curve(s, opt, 4)
    opt2 = _opt()
    s2 = ls.WarmupLR(opt2, warmup_max_lr=0.1, warmup_num_steps=10)
    s2.load_state_dict(s.state_dict())
    assert s.state_dict() == {"last_batch_iteration": 3}
    s.step(), s2.step()
    assert s2.get_last_lr() == s.get_last_lr() == [opt.param_groups[0]["lr"]]


def test_bad_params_raise():
    with pytest.raises(ValueError, match="warmup_type='cubic'"):
        ls.WarmupLR(_opt(), warmup_type="cubic")
    with pytest.raises(ValueError, match="expected 1 values"):
        ls.WarmupLR(_opt(), warmup_max_lr=[0.1, 0.2])
    with pytest.raises(ValueError, match="ds_config.scheduler.type: 'Nope' is not a DeepSpeed schedule"):
        ls._build_schedule("Nope", _opt(), {})
    with pytest.raises(ValueError, match=r"ds_config.scheduler.params.warmup_bogus: unknown parameter of WarmupLR; "
                       r"did you mean 'scheduler.params.warmup_num_steps'\?"):
        ls._build_schedule("WarmupLR", _opt(), {"warmup_bogus": 1})
