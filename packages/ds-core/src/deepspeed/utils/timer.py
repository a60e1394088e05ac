"""Wall-clock timers the engine uses for ``wall_clock_breakdown`` and throughput logs.

* :class:`SynchronizedWallClockTimer`: named timers (``timers("fwd").start()`` ... ``.stop()``);
  ``log(names)`` prints ``time (ms) | fwd: 12.34 | bwd: ...`` on rank 0. On an accelerator that
  runs asynchronously the device is synchronized before each reading, so a timer measures the work
  and not its launch.
* :class:`ThroughputTimer`: samples/s over the steps after a warm-up, printed every
  ``steps_per_output`` steps as DeepSpeed does (``epoch=0/micro_step=.../global_step=...,
  RunningAvgSamplesPerSec=..., CurrSamplesPerSec=...``), and a one-line progress bar on rank 0
  when stdout is a terminal.
"""

from __future__ import annotations

import sys
import time

from deepspeed.utils.logging import log_dist, logger

# Timer names the engine uses (DeepSpeed's).
FORWARD_MICRO_TIMER = "fwd_microstep"
FORWARD_GLOBAL_TIMER = "fwd"
BACKWARD_MICRO_TIMER = "bwd_microstep"
BACKWARD_GLOBAL_TIMER = "bwd"
BACKWARD_INNER_MICRO_TIMER = "bwd_inner_microstep"
BACKWARD_INNER_GLOBAL_TIMER = "bwd_inner"
BACKWARD_REDUCE_MICRO_TIMER = "bwd_allreduce_microstep"
BACKWARD_REDUCE_GLOBAL_TIMER = "bwd_allreduce"
STEP_MICRO_TIMER = "step_microstep"
STEP_GLOBAL_TIMER = "step"
TRAIN_BATCH_TIMER = "train_batch"

_GiB = 1024**3


def _accelerator():
    from deepspeed.accelerator import get_accelerator

    return get_accelerator()


def _synchronize() -> None:
    acc = _accelerator()
    if not acc.is_synchronized_device():
        acc.synchronize()


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _Timer:
    """One named timer: ``start()``/``stop()`` pairs add up until ``reset()``."""

    def __init__(self, name: str, synchronize: bool = True):
        self.name_ = name
        self._synchronize = synchronize
        self.started_ = False
        self._start = 0.0
        self._elapsed = 0.0  # seconds, summed over start/stop pairs since the last reset
        self._records: list[float] = []  # milliseconds of each recorded interval

    def start(self) -> None:
        if self.started_:
            raise RuntimeError(f"timer '{self.name_}' has already been started; stop() it first")
        if self._synchronize:
            _synchronize()
        self._start = time.perf_counter()
        self.started_ = True

    def stop(self, reset: bool = False, record: bool = False) -> None:
        if not self.started_:
            raise RuntimeError(f"timer '{self.name_}' is not started; call start() before stop()")
        if self._synchronize:
            _synchronize()
        interval = time.perf_counter() - self._start
        self._elapsed = interval if reset else self._elapsed + interval
        if record:
            self._records.append(interval * 1000.0)
        self.started_ = False

    def reset(self) -> None:
        self.started_ = False
        self._elapsed = 0.0
        self._records.clear()

    def elapsed(self, reset: bool = True) -> float:
        """Milliseconds accumulated (a running timer is read without stopping it)."""
        running = self.started_
        if running:
            self.stop()
        ms = self._elapsed * 1000.0
        if reset:
            self._elapsed = 0.0
        if running:
            self.start()
        return ms

    def mean(self) -> float:
        """Mean of the recorded intervals, in milliseconds (0 when none)."""
        return sum(self._records) / len(self._records) if self._records else 0.0


class SynchronizedWallClockTimer:
    """A group of named timers; ``timers(name)`` creates one on first use."""

    Timer = _Timer

    def __init__(self, synchronize: bool = True):
        self.timers: dict[str, _Timer] = {}
        self._synchronize = synchronize

    def __call__(self, name: str) -> _Timer:
        if name not in self.timers:
            self.timers[name] = _Timer(name, self._synchronize)
        return self.timers[name]

    def get_timers(self) -> dict[str, _Timer]:
        return self.timers

    @staticmethod
    def memory_usage() -> str:
        acc = _accelerator()
        return (f" | mem_allocated: {acc.memory_allocated() / _GiB:.4f} GB"
                f" | max_mem_allocated: {acc.max_memory_allocated() / _GiB:.4f} GB"
                f" | cache_allocated: {acc.memory_cached() / _GiB:.4f} GB"
                f" | max_cache_allocated: {acc.max_memory_cached() / _GiB:.4f} GB")

    def get_mean(self, names, normalizer: float = 1.0, reset: bool = True) -> dict[str, float]:
        """``{name: mean ms of the recorded intervals / normalizer}`` for the timers that exist."""
        if normalizer <= 0.0:
            raise ValueError(f"normalizer must be positive, got {normalizer}")
        out = {}
        for name in names:
            if name in self.timers:
                out[name] = self.timers[name].mean() / normalizer
                if reset:
                    self.timers[name].reset()
        return out

    def get_elapsed(self, names, normalizer: float = 1.0, reset: bool = True) -> dict[str, float]:
        """``{name: accumulated ms / normalizer}`` for the timers that exist."""
        if normalizer <= 0.0:
            raise ValueError(f"normalizer must be positive, got {normalizer}")
        return {n: self.timers[n].elapsed(reset=reset) / normalizer for n in names if n in self.timers}

    def log(self, names, normalizer: float = 1.0, reset: bool = True, memory_breakdown: bool = False,
            ranks=None) -> str:
        """Log ``time (ms) | name: value | ...`` (on rank 0 unless ``ranks`` says otherwise) and
        return the line."""
        elapsed = self.get_elapsed(names, normalizer, reset)
        line = "time (ms)" + "".join(f" | {name}: {ms:.2f}" for name, ms in elapsed.items())
        if memory_breakdown:
            line += self.memory_usage()
        log_dist(line, ranks=ranks or [0])
        return line


class NoopTimer:
    """Stands in for :class:`SynchronizedWallClockTimer` when ``wall_clock_breakdown`` is off."""

    class Timer:
        def start(self) -> None: ...

        def stop(self, reset: bool = False, record: bool = False) -> None: ...

        def reset(self) -> None: ...

        def elapsed(self, reset: bool = True) -> float:
            return 0.0

        def mean(self) -> float:
            return 0.0

    def __init__(self):
        self._timer = self.Timer()

    def __call__(self, name: str) -> "NoopTimer.Timer":
        return self._timer

    def get_timers(self) -> dict:
        return {}

    def log(self, names, normalizer: float = 1.0, reset: bool = True, memory_breakdown: bool = False,
            ranks=None) -> str:
        return ""

    def get_mean(self, names, normalizer: float = 1.0, reset: bool = True) -> dict:
        return {}

    def get_elapsed(self, names, normalizer: float = 1.0, reset: bool = True) -> dict:
        return {}


class _ProgressBar:
    """One terminal line redrawn in place: ``[=====>    ] 120/300 | loss 2.31 | 45.2 samples/s``."""

    def __init__(self, total: int | None = None, stream=None, width: int = 30):
        self.total = total
        self.stream = stream or sys.stdout
        self.width = width
        self._last_len = 0

    def render(self, step: int, fields: dict[str, str]) -> str:
        if self.total:
            done = min(step, self.total) * self.width // self.total
            bar = "=" * max(done - 1, 0) + (">" if done else "") + " " * (self.width - done)
            head = f"[{bar}] {step}/{self.total}"
        else:
            head = f"step {step}"
        return " | ".join([head] + [f"{k} {v}" for k, v in fields.items()])

    def update(self, step: int, **fields) -> None:
        line = self.render(step, {k: str(v) for k, v in fields.items()})
        pad = " " * max(self._last_len - len(line), 0)
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._last_len = len(line)

    def close(self) -> None:
        if self._last_len:
            self.stream.write("\n")
            self.stream.flush()
            self._last_len = 0


class ThroughputTimer:
    """Samples per second of the training loop.

    ``batch_size`` is the number of samples of one global step (``train_batch_size``).
    ``start()`` before a micro-step's forward, ``stop(global_step=True)`` after the optimizer step
    of a boundary micro-step (``global_step=False`` otherwise). Steps before ``start_step`` are
    warm-up and not averaged. Every ``steps_per_output`` global steps rank 0 logs DeepSpeed's
    throughput line; when stdout is a terminal a progress bar is redrawn on every global step
    (``total_steps`` gives it an end; ``progress(loss=...)`` adds fields).
    """

    def __init__(self, config=None, batch_size: int = 1, start_step: int = 2, steps_per_output: int | None = 50,
                 monitor_memory: bool = False, logging_fn=None, total_steps: int | None = None,
                 progress_bar: bool | None = None):
        self.config = config
        self.enabled = bool(getattr(config, "enabled", True))
        self.synchronized = bool(getattr(config, "synchronized", True))
        self.batch_size = 1 if batch_size is None else batch_size
        self.start_step = start_step
        self.steps_per_output = steps_per_output
        self.monitor_memory = monitor_memory
        self.logging = logging_fn or (lambda msg: log_dist(msg, ranks=[0]))
        self.epoch_count = 0
        self.micro_step_count = 0
        self.global_step_count = 0
        self.total_elapsed_time = 0.0  # seconds over the steps after warm-up
        self.step_elapsed_time = 0.0  # seconds since the last global step
        self.started = False
        self.start_time = 0.0
        self._samples_timed = 0
        self._fields: dict[str, str] = {}
        if progress_bar is None:
            progress_bar = bool(getattr(sys.stdout, "isatty", lambda: False)()) and _rank() == 0
        self._bar = _ProgressBar(total_steps) if progress_bar and self.enabled else None

    @property
    def total_steps(self) -> int | None:
        return self._bar.total if self._bar else None

    @total_steps.setter
    def total_steps(self, value: int | None) -> None:
        if self._bar:
            self._bar.total = value

    def update_epoch_count(self) -> None:
        self.epoch_count += 1
        self.micro_step_count = 0

    def _now(self) -> float:
        if self.synchronized:
            _synchronize()
        return time.perf_counter()

    def start(self) -> None:
        if not self.enabled:
            return
        self.started = True
        if self.global_step_count >= self.start_step:
            self.start_time = self._now()

    def stop(self, global_step: bool = False, report_speed: bool = True) -> None:
        if not self.enabled or not self.started:
            return
        self.started = False
        self.micro_step_count += 1
        if global_step:
            self.global_step_count += 1
        if self.start_time > 0:
            duration = self._now() - self.start_time
            self.total_elapsed_time += duration
            self.step_elapsed_time += duration
            if global_step:
                self._samples_timed += self.batch_size
                if report_speed and self.steps_per_output and self.global_step_count % self.steps_per_output == 0:
                    self.close()  # end the progress-bar line before a log line
                    self.logging(self._speed_line())
                self._draw()
                self.step_elapsed_time = 0.0
        elif global_step:
            self._draw()
        self.start_time = 0.0

    def _speed_line(self) -> str:
        curr = self.batch_size / self.step_elapsed_time if self.step_elapsed_time > 0 else 0.0
        line = (f"epoch={self.epoch_count}/micro_step={self.micro_step_count}/global_step={self.global_step_count}, "
                f"RunningAvgSamplesPerSec={self.avg_samples_per_sec()}, CurrSamplesPerSec={curr}")
        if self.monitor_memory:
            acc = _accelerator()
            line += (f", MemAllocated={acc.memory_allocated() / _GiB:.2f}GB, "
                     f"MaxMemAllocated={acc.max_memory_allocated() / _GiB:.2f}GB")
        return line

    def progress(self, **fields) -> None:
        """Fields shown on the progress bar from now on (e.g. ``loss=2.31``)."""
        for key, value in fields.items():
            self._fields[key] = f"{value:.4f}" if isinstance(value, float) else str(value)

    def _draw(self) -> None:
        if self._bar is None:
            return
        fields = dict(self._fields)
        if self.total_elapsed_time > 0:
            fields["samples/s"] = f"{self.avg_samples_per_sec():.1f}"
        self._bar.update(self.global_step_count, **fields)
        if self._bar.total and self.global_step_count >= self._bar.total:
            self._bar.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def avg_samples_per_sec(self) -> float:
        """Samples per second over the global steps after the warm-up (0 before)."""
        if self.total_elapsed_time <= 0:
            return 0.0
        return self._samples_timed / self.total_elapsed_time


def trim_mean(data, trim_percent: float) -> float:
    """Mean of ``data`` without its ``round(len * trim_percent)`` smallest and as many largest
    values (DeepSpeed's helper; the comms logger's averages). ``data`` is not reordered; an empty
    ``data`` gives 0."""
    if not 0.0 <= trim_percent <= 1.0:
        raise ValueError(f"trim_mean: trim_percent must be between 0 and 1 (got {trim_percent})")
    n = len(data)
    if n == 0:
        return 0
    k = int(round(n * trim_percent))
    kept = sorted(data)[k:n - k]
    if not kept:
        raise ValueError(f"trim_mean: trimming {k} values from each end of {n} leaves none; "
                         f"use a trim_percent below {0.5 - 0.5 / n:.3f}")
    return sum(kept) / len(kept)


__all__ = [
    "SynchronizedWallClockTimer", "ThroughputTimer", "NoopTimer", "logger", "trim_mean",
    "FORWARD_MICRO_TIMER", "FORWARD_GLOBAL_TIMER", "BACKWARD_MICRO_TIMER", "BACKWARD_GLOBAL_TIMER",
    "BACKWARD_INNER_MICRO_TIMER", "BACKWARD_INNER_GLOBAL_TIMER", "BACKWARD_REDUCE_MICRO_TIMER",
    "BACKWARD_REDUCE_GLOBAL_TIMER", "STEP_MICRO_TIMER", "STEP_GLOBAL_TIMER", "TRAIN_BATCH_TIMER",
]
