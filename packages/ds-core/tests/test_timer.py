"""Wall-clock and throughput timers: measured intervals, log lines, the progress bar."""

import io
import logging
import time

import pytest

from deepspeed.utils.logging import logger
from deepspeed.utils.timer import NoopTimer, SynchronizedWallClockTimer, ThroughputTimer, _ProgressBar


def test_timer_accumulates_and_resets():
    timers = SynchronizedWallClockTimer()
    for _ in range(2):
        timers("fwd").start()
        time.sleep(0.05)
        timers("fwd").stop(record=True)
    elapsed = timers("fwd").elapsed(reset=False)
    # two 50 ms sleeps; sleep never returns early, the upper bound allows a loaded machine
    assert 100.0 <= elapsed < 1000.0
    assert 50.0 <= timers("fwd").mean() < 500.0
    assert timers("fwd").elapsed() == pytest.approx(elapsed)  # reset=True reads then clears
    assert timers("fwd").elapsed() == 0.0


def test_timer_misuse_errors():
    timers = SynchronizedWallClockTimer()
    with pytest.raises(RuntimeError, match="timer 'bwd' is not started"):
        timers("bwd").stop()
    timers("bwd").start()
    with pytest.raises(RuntimeError, match="timer 'bwd' has already been started"):
        timers("bwd").start()
    with pytest.raises(ValueError, match="normalizer must be positive"):
        timers.get_elapsed(["bwd"], normalizer=0)


def test_log_line_format(caplog):
    timers = SynchronizedWallClockTimer()
    timers("fwd").start()
    time.sleep(0.02)
    timers("fwd").stop()
    timers("step").start()
    timers("step").stop()
    logger.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger="DeepSpeed"):
            line = timers.log(["fwd", "step", "missing"], normalizer=2.0)
    finally:
        logger.propagate = False
    name_values = [part.split(": ") for part in line.split(" | ")[1:]]
    assert line.startswith("time (ms) | fwd: ") and [n for n, _ in name_values] == ["fwd", "step"]
    assert 10.0 <= float(name_values[0][1]) < 500.0  # 20 ms / normalizer 2
    assert line in caplog.text
    assert timers("fwd").elapsed() == 0.0  # log resets by default


def test_noop_timer():
    timers = NoopTimer()
    timers("fwd").start()
    timers("fwd").stop()
    assert timers("fwd").elapsed() == 0.0 and timers.log(["fwd"]) == ""


def test_throughput_timer_skips_warmup_and_logs_every_n():
    lines = []
    tput = ThroughputTimer(batch_size=8, start_step=2, steps_per_output=2, logging_fn=lines.append,
                           progress_bar=False)
    for step in range(6):
        tput.start()
        time.sleep(0.02 if step >= 2 else 0.3)  # slow warm-up steps must not count
        tput.stop(global_step=True)
    assert tput.global_step_count == 6 and tput.micro_step_count == 6
    # steps 3..6 were timed (start() sees global_step_count >= 2): 4 steps of 8 samples in ~80 ms
    assert 0.07 <= tput.total_elapsed_time < 1.0
    assert tput.avg_samples_per_sec() == pytest.approx(32 / tput.total_elapsed_time)
    assert tput.avg_samples_per_sec() < 8 / 0.02
    assert len(lines) == 2  # global steps 4 and 6
    assert lines[0].startswith("epoch=0/micro_step=4/global_step=4, RunningAvgSamplesPerSec=")
    assert "CurrSamplesPerSec=" in lines[1]


def test_throughput_gradient_accumulation_counts_global_steps():
    tput = ThroughputTimer(batch_size=8, start_step=0, steps_per_output=None, progress_bar=False)
    for micro in range(4):  # GAS=2: two global steps of 8 samples
        tput.start()
        time.sleep(0.01)
        tput.stop(global_step=micro % 2 == 1)
    assert tput.global_step_count == 2 and tput.micro_step_count == 4
    assert tput.avg_samples_per_sec() == pytest.approx(16 / tput.total_elapsed_time)


def test_progress_bar_rendering():
    out = io.StringIO()
    bar = _ProgressBar(total=10, stream=out, width=10)
    bar.update(5, loss="2.5000")
    bar.update(10, loss="1.0")
    bar.close()
    text = out.getvalue()
    assert "\r[====>     ] 5/10 | loss 2.5000" in text
    assert "\r[=========>] 10/10 | loss 1.0" in text and text.endswith("\n")
    assert _ProgressBar(None).render(3, {"a": "b"}) == "step 3 | a b"


def test_throughput_progress_bar_when_enabled(monkeypatch):
    out = io.StringIO()
    tput = ThroughputTimer(batch_size=4, start_step=0, steps_per_output=None, progress_bar=True, total_steps=2)
    tput._bar.stream = out
    for _ in range(2):
        tput.start()
        tput.progress(loss=3.0)
        tput.stop(global_step=True)
    text = out.getvalue()
    assert "1/2 | loss 3.0000 | samples/s" in text and "2/2" in text and text.endswith("\n")
