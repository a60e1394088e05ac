"""DynamicLossScaler follows DeepSpeed's rules: hysteresis, window growth, floor, error at min."""

import logging

import pytest
import torch

from deepspeed.runtime.fp16.loss_scaler import CreateLossScaler, DynamicLossScaler, LossScaler


def test_overflow_lowers_scale_and_logs(caplog):
    s = DynamicLossScaler(init_scale=2**16, scale_window=1000, delayed_shift=1)
    logger = logging.getLogger("DeepSpeed")
    logger.addHandler(caplog.handler)
    try:
        s.update_scale(True)
    finally:
        logger.removeHandler(caplog.handler)
    assert s.loss_scale == 2**15
    assert "OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, reducing to 32768" in caplog.text


def test_window_growth_counts_from_last_overflow():
    s = DynamicLossScaler(init_scale=8, scale_window=3, delayed_shift=1)
    scales = []
    for overflow in [False, False, True, False, False, False, False, False, False]:
        s.update_scale(overflow)
        scales.append(s.loss_scale)
    # iter 0 counts as window boundary (0 - (-1)) % 3 != 0 -> no; iter 2 overflow -> 4;
    # growth when (iter - 2) % 3 == 0: iters 5 and 8.
    assert scales == [8, 8, 4, 4, 4, 8, 8, 8, 16]


def test_hysteresis_delays_the_drop():
    s = DynamicLossScaler(init_scale=64, scale_window=100, delayed_shift=2)
    s.update_scale(True)
    assert (s.loss_scale, s.cur_hysteresis) == (64, 1)
    s.update_scale(True)
    assert s.loss_scale == 32


def test_consecutive_hysteresis_refills_after_clean_step():
    s = DynamicLossScaler(init_scale=64, scale_window=100, delayed_shift=2, consecutive_hysteresis=True)
    s.update_scale(True)
    s.update_scale(False)
    s.update_scale(True)
    assert s.loss_scale == 64 and s.cur_hysteresis == 1


def test_floor_and_error_at_min():
    s = DynamicLossScaler(init_scale=4, min_scale=2, scale_window=100)
    s.update_scale(True)
    assert s.loss_scale == 2
    with pytest.raises(RuntimeError, match="Current loss scale already at minimum"):
        s.update_scale(True)
    s2 = DynamicLossScaler(init_scale=2, min_scale=2, raise_error_at_min_scale=False)
    s2.update_scale(True)
    assert s2.loss_scale == 2


def test_overflow_detection_and_factory():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([1.0, float("inf"), 0.0])
    assert DynamicLossScaler().has_overflow([p])
    assert not LossScaler(128).has_overflow([p])
    assert isinstance(CreateLossScaler(torch.half, 0, True, {"init_scale": 2**8}), DynamicLossScaler)
    static = CreateLossScaler(torch.half, 128.0, False, None)
    assert isinstance(static, LossScaler) and static.loss_scale == 128.0
    assert CreateLossScaler(torch.bfloat16, 128.0, True, None).loss_scale == 1.0
