"""``engine.step()`` without a backward, and steps with NaN/inf gradients in bf16/fp32
(:mod:`deepspeed.runtime._step_guard`)."""

import copy
import logging
import os
import sys

import pytest
import torch

import deepspeed

sys.path.insert(0, os.path.dirname(__file__))
from _engine_models import batch, flat_params, model  # noqa: E402

PRECISIONS = [None, "bf16"]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def caplog():
    """The DeepSpeed logger's warnings (it does not propagate to the root logger)."""
    handler = _Records()
    lg = logging.getLogger("DeepSpeed")
    lg.addHandler(handler)
    try:
        yield handler
    finally:
        lg.removeHandler(handler)


def _engine(precision, extra=None):
    cfg = {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "Adam", "params": {"lr": 1e-2}}}
    if precision:
        cfg[precision] = {"enabled": True}
    cfg.update(extra or {})
    engine, *_ = deepspeed.initialize(model=model(), config=cfg)
    return engine


def _train_step(engine, step, poison=False):
    dtype = next(engine.module.parameters()).dtype
    x, y = batch(step, 0)
    loss = engine(x.to(dtype), y)
    if poison:
        loss = loss * float("nan")
    engine.backward(loss)
    engine.step()


def _optimizer_state(engine):
    opt = engine.basic_optimizer
    return copy.deepcopy({k: {n: (v.clone() if torch.is_tensor(v) else v) for n, v in st.items()}
                          for k, st in enumerate(opt.state.values())})


@pytest.mark.parametrize("precision", PRECISIONS)
def test_step_without_backward_changes_nothing(precision, caplog):
    """Before: the weights moved (Adam momentum applied to zeroed gradients) and global_steps
    advanced. Plain torch leaves the weights alone when no parameter has a gradient; so do we."""
    engine = _engine(precision)
    _train_step(engine, 0)  # Adam has momentum now
    before = flat_params(engine.module).clone()
    state = _optimizer_state(engine)
    counters = (engine.global_steps, engine.micro_steps, engine.global_samples)
    engine.step()
    engine.step()
    assert torch.equal(flat_params(engine.module), before)
    assert (engine.global_steps, engine.micro_steps, engine.global_samples) == counters
    after = _optimizer_state(engine)
    assert after.keys() == state.keys()
    for k in state:
        for n, v in state[k].items():
            assert torch.equal(after[k][n], v) if torch.is_tensor(v) else after[k][n] == v
    warnings = [r for r in caplog.records if "without a backward()" in r.getMessage()]
    assert len(warnings) == 1  # said once
    # torch's own behaviour for reference: a step with no gradients leaves parameters as they are
    ref = model()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    ref(*batch(0, 0)).backward()
    ref_opt.step()
    ref_opt.zero_grad(set_to_none=True)
    snap = flat_params(ref).clone()
    ref_opt.step()
    assert torch.equal(flat_params(ref), snap)
    # training continues normally afterwards
    _train_step(engine, 1)
    assert engine.global_steps == counters[0] + 1 and not torch.equal(flat_params(engine.module), before)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_nonfinite_gradients_skip_the_step_with_a_warning(precision, caplog):
    """Before: with bf16 or fp32 one NaN loss turned every weight into NaN, silently."""
    engine = _engine(precision, {"gradient_clipping": 1.0} if precision else None)
    _train_step(engine, 0)
    before = flat_params(engine.module).clone()
    _train_step(engine, 1, poison=True)
    assert torch.equal(flat_params(engine.module), before)
    assert torch.isfinite(flat_params(engine.module)).all()
    assert engine.skipped_steps == 1 and engine.global_steps == 2 and not engine.was_step_applied()
    msgs = [r.getMessage() for r in caplog.records if "not finite" in r.getMessage()]
    assert msgs == ["step 1: the gradient norm is nan (not finite), so the optimizer step was skipped and the weights "
                    "are unchanged; set ds_config nonfinite_gradients=\"raise\" to stop instead"]
    _train_step(engine, 2)  # the next good step applies
    assert engine.was_step_applied() and not torch.equal(flat_params(engine.module), before)
    assert torch.isfinite(flat_params(engine.module)).all()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_nonfinite_gradients_raise_when_asked(precision):
    engine = _engine(precision, {"nonfinite_gradients": "raise"})
    _train_step(engine, 0)
    before = flat_params(engine.module).clone()
    with pytest.raises(FloatingPointError, match=r"step 1: the gradient norm is nan \(not finite\), so the optimizer "
                       r"step was skipped and the weights are unchanged \(ds_config nonfinite_gradients=\"raise\"\)"):
        _train_step(engine, 1, poison=True)
    assert torch.equal(flat_params(engine.module), before)


def test_nonfinite_gradients_key_is_checked():
    with pytest.raises(ValueError, match="nonfinite_gradients"):
        _engine(None, {"nonfinite_gradients": "explode"})
