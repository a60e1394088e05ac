"""PipelineEngine in one process (one stage): composition with ZeRO, activation checkpointing,
bf16, and the errors a user sees. Parity tolerance as in test_engine.py (1e-5 relative, fp32)."""

import logging
import os
import re
import sys

import pytest
import torch

import deepspeed
from deepspeed.runtime.pipe.engine import PipelineEngine, PipelineError

sys.path.insert(0, os.path.dirname(__file__))
import _pipe_models as M  # noqa: E402


def _engine(model=None, **cfg):
    engine, *_ = deepspeed.initialize(model=model or M.build(num_stages=1), config=M.config(**cfg))
    return engine


def _run(engine, steps=M.STEPS):
    it = iter(M.data())
    return [float(engine.train_batch(it)) for _ in range(steps)]


@pytest.fixture(scope="module")
def ref():
    return M.reference()


def _has_zero() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed.runtime.zero") is not None


needs_zero = pytest.mark.skipif(not _has_zero(), reason="ds-zero is not installed")


@pytest.mark.parametrize("extra", [{}, pytest.param({"zero_optimization": {"stage": 1},
                                                     "zero_allow_untested_optimizer": True}, marks=needs_zero)])
def test_one_stage_and_zero_stage_1_match_one_process(ref, extra):
    engine = _engine(**extra)
    assert isinstance(engine, PipelineEngine) and engine.zero_optimization_stage() == extra.get(
        "zero_optimization", {}).get("stage", 0)
    torch.testing.assert_close(torch.tensor(_run(engine)), torch.tensor(ref[0]), rtol=1e-5, atol=0)
    for k, v in engine.module.state_dict().items():
        torch.testing.assert_close(v, ref[1][k], rtol=1e-5, atol=1e-7)


@needs_zero
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_2_and_3_are_refused_with_deepspeeds_reason(stage):
    with pytest.raises(NotImplementedError, match=r"ZeRO-2 and ZeRO-3 are incompatible with pipeline parallelism \("
                                                  r".*does not compose with ds-pipe's PipelineEngine"):
        _engine(zero_optimization={"stage": stage})


@pytest.mark.parametrize("schedule,virtual", [("interleaved", 2), ("zero_bubble", 1)])
def test_one_rank_schedules_match_one_process(schedule, virtual, ref):
    """Two chunks on one rank pass activations and gradients locally; zero-bubble's split backward."""
    engine = _engine(M.build(num_stages=1, virtual_stages=virtual), pipeline={"schedule": schedule})
    torch.testing.assert_close(torch.tensor(_run(engine)), torch.tensor(ref[0]), rtol=1e-5, atol=0)
    for k, v in engine.module.state_dict().items():
        torch.testing.assert_close(v, ref[1][k], rtol=1e-5, atol=1e-7)


def test_activation_checkpointing_matches(ref):
    engine = _engine(M.build(num_stages=1, activation_checkpoint_interval=2))
    torch.testing.assert_close(torch.tensor(_run(engine)), torch.tensor(ref[0]), rtol=1e-5, atol=0)


@pytest.mark.parametrize("precision,dtype,rtol", [("bf16", torch.bfloat16, 2e-2), ("fp16", torch.float16, 1e-3)])
def test_half_precision_trains_close_to_fp32(precision, dtype, rtol, ref):
    """bf16 keeps ~3 significant digits, fp16 (loss-scaled, fp32 master weights) ~4."""
    section = {"enabled": True, "initial_scale_power": 8} if precision == "fp16" else {"enabled": True}
    engine = _engine(**{precision: section})
    assert next(engine.module.parameters()).dtype == dtype
    losses = _run(engine, steps=3)
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref[0][:3]), rtol=rtol, atol=0)
    assert engine.skipped_steps == 0


def test_training_data_and_loss_line(caplog):
    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return torch.randn(M.DIM, generator=g), torch.randn(M.DIM, generator=g)

    engine, *_ = deepspeed.initialize(model=M.build(num_stages=1), training_data=DS(),
                                      config=M.config(steps_per_print=1))
    lg = logging.getLogger("DeepSpeed")
    lg.addHandler(caplog.handler)
    try:
        loss = engine.train_batch()
    finally:
        lg.removeHandler(caplog.handler)
    assert loss.ndim == 0 and engine.global_steps == 1 and engine.global_samples == 8
    assert re.search(r"steps: 1 loss: \d+\.\d{4} iter time \(s\): \d+\.\d{3} samples/sec: \d+", caplog.text)


def test_engine_bad_input():
    engine = _engine()
    for call in (lambda: engine(torch.zeros(1)), lambda: engine.backward(torch.zeros(())), engine.step):
        with pytest.raises(PipelineError, match=r"Only train_batch\(\) is accessible in pipeline mode."):
            call()
    with pytest.raises(ValueError, match=r"no data on the first or last stage; pass data_iter=..."):
        engine.train_batch()
    with pytest.raises(ValueError, match=r"ran out of micro-batches in the middle of a batch"):
        engine.train_batch(iter(M.data()[:3]))
    with pytest.raises(ValueError, match=r"a pipeline micro-batch must be a pair \(inputs, labels\); got tuple of "
                                         r"length 3"):
        engine.train_batch(iter([(1, 2, 3)] * 4))
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"train_batch\(\) requires gradients enabled"):
        engine.train_batch(iter(M.data()))

    no_loss = M.PipelineModule(M.layers(), num_stages=1)
    with pytest.raises(ValueError, match=re.escape("the last pipeline stage has no loss_fn and its output is (2, 8), "
                                                   "not a scalar loss; pass PipelineModule(..., loss_fn=")):
        _engine(no_loss).train_batch(iter(M.data()))
    with pytest.raises(ValueError, match=r"pipeline.schedule=\"interleaved\" needs a model built in chunks: pass "
                                         r"PipelineModule\(..., virtual_stages=2\)"):
        _engine(pipeline={"schedule": "interleaved"})
    with pytest.raises(ValueError, match=r"built with virtual_stages=2, which only the interleaved schedule runs; set "
                                         r"ds_config.pipeline.schedule=\"interleaved\" \(it is '1f1b'\)"):
        _engine(M.build(num_stages=1, virtual_stages=2))
    with pytest.raises(NotImplementedError, match=r"\"zero_bubble\" with activation_checkpoint_interval=1"):
        _engine(M.build(num_stages=1, activation_checkpoint_interval=1), pipeline={"schedule": "zero_bubble"})
    with pytest.raises(ValueError, match=r"ds_config.pipeline.stages=2 but the PipelineModule has num_stages=1"):
        _engine(pipeline={"stages": 2})
    with pytest.raises(ValueError, match=r"mpu must be None for a PipelineModule"):
        deepspeed.initialize(model=M.build(num_stages=1), config=M.config(), mpu=object())
    with pytest.raises(ValueError, match=r"ds_config.pipeline.schedule: Input should be '1f1b', 'interleaved' or "
                                         r"'zero_bubble' \(got 'gpipe'\)"):
        _engine(pipeline={"schedule": "gpipe"})
