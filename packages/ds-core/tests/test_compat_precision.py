"""DeepSpeed's mixed-precision optimizer classes at DeepSpeed's paths: built by hand the way
DeepSpeed code builds them, and the classes the engine uses without ZeRO.

Tolerances: the fp16/bf16 models compute forward and backward in low precision while the
reference computes in fp32, so master weights agree to the low-precision rounding of the
gradients (fp16: 1e-3 to 2e-3 absolute on weights of size ~0.5 after a few SGD steps; bf16: 2e-2).
"""

import copy

import pytest
import torch

import deepspeed
from deepspeed.runtime.bf16_optimizer import BF16_Optimizer
from deepspeed.runtime.fp16.fused_optimizer import FP16_Optimizer
from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer


def _models(dtype):
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    low = copy.deepcopy(ref).to(dtype)
    return ref, low


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 8, generator=g), torch.randn(16, 4, generator=g)) for _ in range(n)]


def _master(opt):
    return opt.fp32_groups_flat[0]


def _flat(model):
    return torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])


def test_fp16_optimizer_standalone_matches_fp32_training():
    ref, low = _models(torch.float16)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    opt = FP16_Optimizer(torch.optim.SGD(low.parameters(), lr=0.05, momentum=0.9), dynamic_loss_scale=True,
                         initial_dynamic_scale=2**10, clip_grad=0.0)
    for x, y in _batches(5):
        loss = torch.nn.functional.mse_loss(low(x.half()).float(), y)
        opt.backward(loss)
        assert opt.step() is True and opt.overflow is False
        ref_loss = torch.nn.functional.mse_loss(ref(x), y)
        ref_loss.backward()
        ref_opt.step()
        ref_opt.zero_grad()
    assert torch.allclose(_master(opt), _flat(ref), atol=2e-3)
    assert torch.equal(_flat(low), _master(opt).half().float())  # the model holds the master weights in fp16
    assert all(p.grad is None for p in low.parameters())  # consumed by step
    assert opt.param_groups is opt.optimizer.param_groups and opt.cur_scale == 2**10


def test_fp16_optimizer_overflow_skips_and_lowers_the_scale():
    _, low = _models(torch.float16)
    opt = FP16_Optimizer(torch.optim.SGD(low.parameters(), lr=0.1), dynamic_loss_scale=True,
                         dynamic_loss_args={"init_scale": 2**16, "scale_window": 2, "delayed_shift": 1, "min_scale": 1})
    before = _master(opt).clone()
    x, y = _batches(1)[0]
    opt.backward(torch.nn.functional.mse_loss(low(x.half()).float(), y) * float("inf"))
    assert opt.step() is False and opt.overflow is True
    assert opt.cur_scale == 2**15 and torch.equal(_master(opt), before)
    for _ in range(2):  # two clean steps (scale_window) grow the scale back
        opt.backward(torch.nn.functional.mse_loss(low(x.half()).float(), y))
        assert opt.step() is True
    assert opt.cur_scale == 2**16 and not torch.equal(_master(opt), before)


def test_fp16_optimizer_static_scale_and_clipping():
    ref, low = _models(torch.float16)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    opt = FP16_Optimizer(torch.optim.SGD(low.parameters(), lr=0.5), static_loss_scale=128.0, clip_grad=0.01)
    x, y = _batches(1)[0]
    opt.backward(torch.nn.functional.mse_loss(low(x.half()).float(), y))
    opt.step()
    torch.nn.functional.mse_loss(ref(x), y).backward()
    norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.01)
    assert norm > 0.01  # clipping is active
    ref_opt.step()
    assert opt.loss_scale == 128.0
    assert float(opt._global_grad_norm) == pytest.approx(float(norm), rel=1e-2)
    assert torch.allclose(_master(opt), _flat(ref), atol=1e-3)


def test_fp16_optimizer_state_dict_round_trip():
    _, low = _models(torch.float16)
    opt = FP16_Optimizer(torch.optim.Adam(low.parameters(), lr=1e-2), dynamic_loss_scale=True)
    batches = _batches(4)
    for x, y in batches[:2]:
        opt.backward(torch.nn.functional.mse_loss(low(x.half()).float(), y))
        opt.step()
    sd = copy.deepcopy(opt.state_dict())
    low2 = copy.deepcopy(low)
    opt2 = FP16_Optimizer(torch.optim.Adam(low2.parameters(), lr=1e-2), dynamic_loss_scale=True)
    opt2.load_state_dict(sd)
    for model, o in ((low, opt), (low2, opt2)):
        for x, y in batches[2:]:
            o.backward(torch.nn.functional.mse_loss(model(x.half()).float(), y))
            o.step()
    assert torch.equal(_master(opt), _master(opt2)) and opt.cur_scale == opt2.cur_scale


def test_unfused_optimizer_and_refusals():
    ref, low = _models(torch.float16)
    opt = FP16_UnfusedOptimizer(torch.optim.Adam(low.parameters(), lr=1e-3), dynamic_loss_scale=True)
    assert isinstance(opt, FP16_Optimizer) and opt.cur_scale == 2**32
    x, y = _batches(1)[0]
    opt.backward(torch.nn.functional.mse_loss(low(x.half()).float(), y))
    assert opt.step() is False and opt.cur_scale == 2**31  # 2**32 overflows fp16 gradients: skipped, halved
    with pytest.raises(ValueError, match=r"FP16_Optimizer: parameter 0 of param group 0 is torch.float32, "
                                         r"expected torch.float16; cast the model"):
        FP16_Optimizer(torch.optim.SGD(ref.parameters(), lr=0.1))


def test_bf16_optimizer_accumulates_in_fp32():
    ref, low = _models(torch.bfloat16)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    opt = BF16_Optimizer(torch.optim.SGD(low.parameters(), lr=0.1), [n for n, _ in low.named_parameters()],
                         bfloat16_config=None, clip_grad=1.0)
    assert opt.fp32_groups_flat[0].dtype == torch.float32 and opt.lp_grads.dtype == torch.float32
    batches = _batches(4)
    for step in range(2):
        for x, y in batches[2 * step:2 * step + 2]:  # two micro-batches per step
            opt.backward(torch.nn.functional.mse_loss(low(x.bfloat16()).float(), y) / 2)
            assert all(p.grad is None for p in low.parameters())  # moved into the fp32 buffer
            (torch.nn.functional.mse_loss(ref(x), y) / 2).backward()
        assert opt.step() is True
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        ref_opt.step()
        ref_opt.zero_grad()
    assert torch.allclose(_master(opt), _flat(ref), atol=2e-2)
    with pytest.raises(NotImplementedError, match="only the L2 norm"):
        BF16_Optimizer(torch.optim.SGD(_models(torch.bfloat16)[1].parameters(), lr=0.1), None, None, norm_type=1)


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x).float().pow(2).mean()


@pytest.mark.parametrize("section, optimizer, expected", [
    ({"fp16": {"enabled": True}}, {"type": "Adam", "params": {"lr": 1e-3}}, FP16_Optimizer),
    ({"fp16": {"enabled": True}}, "client_sgd", FP16_UnfusedOptimizer),
    ({"bf16": {"enabled": True}}, {"type": "AdamW", "params": {"lr": 1e-3}}, BF16_Optimizer),
    ({"bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": "bf16"}}, {"type": "Adam", "params": {"lr": 1e-3}},
     FP16_Optimizer),
])
def test_engine_uses_deepspeeds_classes(section, optimizer, expected):
    torch.manual_seed(0)
    model = _Tiny()
    cfg = {"train_batch_size": 2, **section}
    kwargs = {}
    if optimizer == "client_sgd":
        kwargs["optimizer"] = torch.optim.SGD(model.parameters(), lr=0.1)
    else:
        cfg["optimizer"] = optimizer
    engine, opt, _, _ = deepspeed.initialize(model=model, config=cfg, **kwargs)
    assert type(opt) is expected and engine.optimizer is opt
    dtype = torch.float16 if "fp16" in section else torch.bfloat16
    before = _flat(engine.module)
    loss = engine(torch.randn(2, 4).to(dtype))
    engine.backward(loss)
    engine.step()
    assert not torch.equal(_flat(engine.module), before)
    # every model weight is its fp32 master weight rounded to the model's dtype
    assert all(torch.equal(p.detach(), mp.detach().to(dtype)) for p, mp in zip(opt.fp16_groups[0], opt.fp32_params))
    assert {id(p) for p in opt.fp16_groups[0]} == {id(p) for p in engine.module.parameters()}
