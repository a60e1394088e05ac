"""DeepSpeed's learning-rate schedules: ``LRRangeTest``, ``OneCycle``, ``WarmupLR``,
``WarmupDecayLR`` and ``WarmupCosineLR``.

Each schedule is stepped once per optimizer step (the engine does it at every gradient-accumulation
boundary). ``step(last_batch_iteration=None)`` advances ``last_batch_iteration`` by one (or sets it)
and writes the new rate into every parameter group; ``state_dict()`` holds only
``last_batch_iteration``. The ds_config ``scheduler {type, params}`` block names a class here and
passes ``params`` as keyword arguments.

Formulas (``t`` = ``last_batch_iteration``):

* ``LRRangeTest``: ``min_lr * (1 + step_rate * i)`` with ``i = (t + 1) / step_size`` (floored when
  ``staircase``).
* ``OneCycle``: within the cycle (``t < total``, ``total = first + second``) the scale ``s`` rises
  linearly from 0 to 1 over ``first`` steps and falls back over ``second`` steps, measured at
  ``t + 1``; ``lr = min_lr + (max_lr - min_lr) * s`` and momentum ``max_mom - (max_mom - min_mom) * s``.
  After the cycle, with ``d = (t - total + 1) / decay_step_size``:
  ``lr = min_lr / (1 + decay_lr_rate * d)``, momentum ``max_mom * (1 + decay_mom_rate * d)``.
* ``WarmupLR``: ``min_lr + (max_lr - min_lr) * g`` with ``g = log(t + 1) / log(W)`` (``log``) or
  ``t / W`` (``linear``) while ``t < W``, else 1; ``W = max(2, warmup_num_steps)``.
* ``WarmupDecayLR``: as WarmupLR, then ``g = max(0, (T - t) / max(1, T - W))``.
* ``WarmupCosineLR``: ``lr = base_lr * r`` where ``base_lr`` is the group's lr when the schedule was
  built; warmup ``r = min_ratio + (1 - min_ratio) * g``; after it
  ``r = max(0, cos_min_ratio + (1 - cos_min_ratio) * (1 + cos(pi * (t - W + 1) / (T - W))) / 2)``.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import math
from typing import Any

from deepspeed.utils.logging import logger

LR_SCHEDULE = "lr_schedule"
LR_RANGE_TEST = "LRRangeTest"
ONE_CYCLE = "OneCycle"
WARMUP_LR = "WarmupLR"
WARMUP_DECAY_LR = "WarmupDecayLR"
WARMUP_COSINE_LR = "WarmupCosineLR"
VALID_LR_SCHEDULES = [LR_RANGE_TEST, ONE_CYCLE, WARMUP_LR, WARMUP_DECAY_LR, WARMUP_COSINE_LR]

LR_RANGE_TEST_MIN_LR = "lr_range_test_min_lr"
LR_RANGE_TEST_STEP_RATE = "lr_range_test_step_rate"
LR_RANGE_TEST_STEP_SIZE = "lr_range_test_step_size"
LR_RANGE_TEST_STAIRCASE = "lr_range_test_staircase"

EDGE_VALUE = "edge_value"
MID_VALUE = "mid_value"
CYCLE_FIRST_STEP_SIZE = "cycle_first_step_size"
CYCLE_FIRST_STAIR_COUNT = "cycle_first_stair_count"
CYCLE_SECOND_STEP_SIZE = "cycle_second_step_size"
CYCLE_SECOND_STAIR_COUNT = "cycle_second_stair_count"
DECAY_STEP_SIZE = "decay_step_size"
CYCLE_MIN_LR = "cycle_min_lr"
CYCLE_MAX_LR = "cycle_max_lr"
DECAY_LR_RATE = "decay_lr_rate"
CYCLE_MIN_MOM = "cycle_min_mom"
CYCLE_MAX_MOM = "cycle_max_mom"
DECAY_MOM_RATE = "decay_mom_rate"

WARMUP_MIN_LR = "warmup_min_lr"
WARMUP_MAX_LR = "warmup_max_lr"
WARMUP_NUM_STEPS = "warmup_num_steps"
WARMUP_TYPE = "warmup_type"
WARMUP_LOG_RATE = "log"
WARMUP_LINEAR_RATE = "linear"
WARMUP_MIN_RATIO = "warmup_min_ratio"
COS_MIN_RATIO = "cos_min_ratio"
TOTAL_NUM_STEPS = "total_num_steps"


def _torch_optimizer(optimizer: Any) -> Any:
    """The torch optimizer under a wrapper (a ZeRO or fp16 optimizer keeps it in ``.optimizer``)."""
    if hasattr(optimizer, "param_groups") and not hasattr(optimizer, "optimizer"):
        return optimizer
    inner = getattr(optimizer, "optimizer", None)
    if inner is not None and hasattr(inner, "param_groups"):
        return inner
    if hasattr(optimizer, "param_groups"):
        return optimizer
    raise TypeError(f"{type(optimizer).__name__} is not an Optimizer (it has no param_groups)")


def _per_group(optimizer: Any, value: Any, name: str) -> list:
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name}: expected {n} values (one per param group), got {len(value)}: {list(value)}")
        return list(value)
    return [value] * n


class _Schedule:
    """What every schedule shares: stepping, ``get_last_lr`` and the state dict."""

    optimizer: Any
    last_batch_iteration: int

    def get_lr(self) -> list[float]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _set_lrs(self, lrs: list[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def step(self, last_batch_iteration: int | None = None) -> None:
        if last_batch_iteration is None:
            last_batch_iteration = self.last_batch_iteration + 1
        self.last_batch_iteration = last_batch_iteration
        self._set_lrs(self.get_lr())

    def get_last_lr(self) -> list[float]:
        assert getattr(self, "_last_lr", None) is not None, "need to call step() first"
        return self._last_lr

    def state_dict(self) -> dict:
        return {"last_batch_iteration": self.last_batch_iteration}

    def load_state_dict(self, sd: dict) -> None:
        self.last_batch_iteration = sd["last_batch_iteration"]


class LRRangeTest(_Schedule):
    """Grow the learning rate from ``lr_range_test_min_lr`` by ``step_rate`` per ``step_size``
    steps (continuously, or in stairs when ``lr_range_test_staircase``), to find a good lr range."""

    def __init__(self, optimizer, lr_range_test_min_lr: float | list = 1e-3, lr_range_test_step_size: int = 2000,
                 lr_range_test_step_rate: float = 1.0, lr_range_test_staircase: bool = False,
                 last_batch_iteration: int = -1):
        self.optimizer = _torch_optimizer(optimizer)
        if lr_range_test_step_size <= 0:
            raise ValueError(f"lr_range_test_step_size={lr_range_test_step_size} must be > 0")
        self.min_lr = _per_group(self.optimizer, lr_range_test_min_lr, LR_RANGE_TEST_MIN_LR)
        self.step_size = lr_range_test_step_size
        self.step_rate = lr_range_test_step_rate
        self.staircase = lr_range_test_staircase
        self.last_batch_iteration = last_batch_iteration
        if last_batch_iteration == -1:
            self._set_lrs(self.min_lr)

    def _interval(self) -> float:
        x = float(self.last_batch_iteration + 1) / self.step_size
        return float(math.floor(x)) if self.staircase else x

    def get_lr(self) -> list[float]:
        growth = 1.0 + self.step_rate * self._interval()
        return [lr * growth for lr in self.min_lr]


class OneCycle(_Schedule):
    """The 1Cycle policy: lr up then down over one cycle (momentum the other way), then decay."""

    def __init__(self, optimizer, cycle_min_lr, cycle_max_lr, decay_lr_rate: float = 0.0,
                 cycle_first_step_size: int = 2000, cycle_second_step_size: int | None = None,
                 cycle_first_stair_count: int = 0, cycle_second_stair_count: int | None = None,
                 decay_step_size: int = 0, cycle_momentum: bool = True, cycle_min_mom: float = 0.8,
                 cycle_max_mom: float = 0.9, decay_mom_rate: float = 0.0, last_batch_iteration: int = -1):
        self.optimizer = _torch_optimizer(optimizer)
        first = float(cycle_first_step_size)
        second = float(cycle_second_step_size) if cycle_second_step_size is not None else first
        if first <= 0 or second <= 0:
            raise ValueError(
                f"OneCycle: cycle_first_step_size={cycle_first_step_size} and cycle_second_step_size="
                f"{cycle_second_step_size} must be > 0"
            )
        self.total_size = first + second
        self.step_ratio = first / self.total_size
        # Note: like DeepSpeed, the stair counts are accepted and stored but do not shape the curve.
        self.first_stair_count = cycle_first_stair_count
        self.second_stair_count = cycle_first_stair_count if cycle_second_stair_count is None else cycle_second_stair_count
        self.decay_step_size = decay_step_size
        self.min_lrs = _per_group(self.optimizer, cycle_min_lr, CYCLE_MIN_LR)
        self.max_lrs = _per_group(self.optimizer, cycle_max_lr, CYCLE_MAX_LR)
        self.decay_lr_rate = decay_lr_rate
        self.last_batch_iteration = last_batch_iteration
        if last_batch_iteration == -1:
            self._set_lrs(self.min_lrs)

        defaults = getattr(self.optimizer, "defaults", {})
        self._use_betas = "betas" in defaults
        self.cycle_momentum = cycle_momentum
        if cycle_momentum and not self._use_betas and "momentum" not in defaults:
            logger.warning(
                f"cycle_momentum is disabled because optimizer {type(self.optimizer).__name__} has no "
                "'betas' or 'momentum' in its defaults"
            )
            self.cycle_momentum = False
        if self.cycle_momentum:
            self.decay_mom_rate = decay_mom_rate
            # Note: as in DeepSpeed, the second beta of an Adam-style optimizer is set to 0.99 while
            # the first beta is cycled.
            self.min_moms = [cycle_min_mom] * len(self.optimizer.param_groups)
            self.max_moms = [cycle_max_mom] * len(self.optimizer.param_groups)
            if last_batch_iteration == -1:
                self._set_moms(self.max_moms)

    def _set_moms(self, moms: list[float]) -> None:
        for group, mom in zip(self.optimizer.param_groups, moms):
            if self._use_betas:
                group["betas"] = (mom, 0.99)
            else:
                group["momentum"] = mom

    def _scale_factor(self) -> float:
        it = self.last_batch_iteration + 1
        cycle = math.floor(1 + it / self.total_size)
        x = 1.0 + it / self.total_size - cycle
        if x <= self.step_ratio:
            return x / self.step_ratio
        return (x - 1) / (self.step_ratio - 1)

    def get_lr(self) -> list[float]:
        """The lr at ``last_batch_iteration``; also sets the momentum when ``cycle_momentum``."""
        if self.last_batch_iteration < self.total_size:
            s = self._scale_factor()
            if self.cycle_momentum:
                self._set_moms([hi - (hi - lo) * s for lo, hi in zip(self.min_moms, self.max_moms)])
            return [lo + (hi - lo) * s for lo, hi in zip(self.min_lrs, self.max_lrs)]
        decay_it = self.last_batch_iteration - self.total_size + 1
        # Note: decay_step_size=0 means "no decay" (DeepSpeed's documented meaning).
        interval = decay_it / self.decay_step_size if self.decay_step_size else 0.0
        if self.cycle_momentum:
            factor = 1 + self.decay_mom_rate * interval
            self._set_moms([hi * factor for hi in self.max_moms])
        factor = 1 + self.decay_lr_rate * interval
        return [lo / factor for lo in self.min_lrs]

    def get_mom(self) -> list | None:
        if not self.cycle_momentum:
            return None
        key = "betas" if self._use_betas else "momentum"
        return [group[key] for group in self.optimizer.param_groups]


class WarmupLR(_Schedule):
    """Warm the lr up from ``warmup_min_lr`` to ``warmup_max_lr`` over ``warmup_num_steps`` steps
    (logarithmically or linearly), then hold it."""

    def __init__(self, optimizer, warmup_min_lr: float | list = 0.0, warmup_max_lr: float | list = 0.001,
                 warmup_num_steps: int = 1000, warmup_type: str = WARMUP_LOG_RATE, last_batch_iteration: int = -1):
        self.optimizer = _torch_optimizer(optimizer)
        self.min_lrs = _per_group(self.optimizer, warmup_min_lr, "min_lr")
        self.max_lrs = _per_group(self.optimizer, warmup_max_lr, "max_lr")
        self.delta_lrs = [hi - lo for hi, lo in zip(self.max_lrs, self.min_lrs)]
        self.warmup_num_steps = max(2, int(warmup_num_steps))
        if warmup_type not in (WARMUP_LOG_RATE, WARMUP_LINEAR_RATE):
            raise ValueError(
                f"warmup_type={warmup_type!r} is not supported; use {WARMUP_LOG_RATE!r} or {WARMUP_LINEAR_RATE!r}"
            )
        self.warmup_type = warmup_type
        self.inverse_log_warm_up = 1.0 / math.log(self.warmup_num_steps)
        self.last_batch_iteration = last_batch_iteration
        # Note: before the first step() the groups hold the lr of iteration 0 (``warmup_min_lr``), so
        # the first optimizer step does not run at whatever lr the optimizer was built with.
        if last_batch_iteration == -1:
            self._set_lrs(self.min_lrs)

    def _warmup_gamma(self) -> float:
        if self.warmup_type == WARMUP_LOG_RATE:
            return self.inverse_log_warm_up * math.log(self.last_batch_iteration + 1)
        return self.last_batch_iteration / self.warmup_num_steps

    def _get_gamma(self) -> float:
        if self.last_batch_iteration < self.warmup_num_steps:
            return self._warmup_gamma()
        return 1.0

    def get_lr(self) -> list[float]:
        if self.last_batch_iteration < 0:
            logger.warning("Attempting to get learning rate from scheduler before it has started")
            return list(self.min_lrs)
        gamma = self._get_gamma()
        return [lo + d * gamma for lo, d in zip(self.min_lrs, self.delta_lrs)]


class WarmupDecayLR(WarmupLR):
    """WarmupLR, then a linear decay to 0 at ``total_num_steps``."""

    def __init__(self, optimizer, total_num_steps: int, warmup_min_lr: float | list = 0.0,
                 warmup_max_lr: float | list = 0.001, warmup_num_steps: int = 1000,
                 warmup_type: str = WARMUP_LOG_RATE, last_batch_iteration: int = -1):
        self.total_num_steps = total_num_steps
        super().__init__(optimizer, warmup_min_lr, warmup_max_lr, warmup_num_steps, warmup_type, last_batch_iteration)
        if self.total_num_steps < self.warmup_num_steps:
            logger.warning(f"total_num_steps {total_num_steps} is less than warmup_num_steps {warmup_num_steps}")

    def _get_gamma(self) -> float:
        if self.last_batch_iteration < self.warmup_num_steps:
            return self._warmup_gamma()
        return max(0.0, float(self.total_num_steps - self.last_batch_iteration)
                   / float(max(1.0, self.total_num_steps - self.warmup_num_steps)))


class WarmupCosineLR(_Schedule):
    """Warm up from ``warmup_min_ratio`` x the optimizer's lr to its lr, then cosine-decay to
    ``cos_min_ratio`` x its lr at ``total_num_steps``."""

    def __init__(self, optimizer, total_num_steps: int, warmup_min_ratio: float = 0.0, warmup_num_steps: int = 1000,
                 cos_min_ratio: float = 0.0001, warmup_type: str = WARMUP_LOG_RATE, last_batch_iteration: int = -1):
        self.optimizer = _torch_optimizer(optimizer)
        self.total_num_steps = total_num_steps
        self.warmup_min_ratio = warmup_min_ratio
        self.warmup_num_steps = max(2, int(warmup_num_steps))
        self.cos_min_ratio = cos_min_ratio
        if warmup_type not in (WARMUP_LOG_RATE, WARMUP_LINEAR_RATE):
            raise ValueError(
                f"warmup_type={warmup_type!r} is not supported; use {WARMUP_LOG_RATE!r} or {WARMUP_LINEAR_RATE!r}"
            )
        self.warmup_type = warmup_type
        self.inverse_log_warm_up = 1.0 / math.log(self.warmup_num_steps)
        if self.total_num_steps < self.warmup_num_steps:
            logger.warning(f"total_num_steps {total_num_steps} is less than warmup_num_steps {warmup_num_steps}")
        self.org_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.last_batch_iteration = last_batch_iteration
        if last_batch_iteration == -1:
            self._set_lrs([lr * warmup_min_ratio for lr in self.org_lrs])

    def get_lr_ratio(self) -> float:
        t = self.last_batch_iteration
        if t < 0:
            logger.warning("Attempting to get learning rate from scheduler before it has started")
            return self.warmup_min_ratio
        if t < self.warmup_num_steps:
            if self.warmup_type == WARMUP_LOG_RATE:
                g = self.inverse_log_warm_up * math.log(t + 1)
            else:
                g = t / self.warmup_num_steps
            return self.warmup_min_ratio + g * (1.0 - self.warmup_min_ratio)
        real_step = t - self.warmup_num_steps + 1
        real_total = max(1, self.total_num_steps - self.warmup_num_steps)
        cos = (1 + math.cos(math.pi * real_step / real_total)) / 2
        return max(0.0, self.cos_min_ratio + (1.0 - self.cos_min_ratio) * cos)

    def get_lr(self) -> list[float]:
        r = self.get_lr_ratio()
        return [lr * r for lr in self.org_lrs]


_SCHEDULES = {
    LR_RANGE_TEST: LRRangeTest,
    ONE_CYCLE: OneCycle,
    WARMUP_LR: WarmupLR,
    WARMUP_DECAY_LR: WarmupDecayLR,
    WARMUP_COSINE_LR: WarmupCosineLR,
}


def _check_schedule_params(name: str, params: dict) -> None:
    """Every key a parameter of the schedule; numbers where its default is a number; step counts
    (``*_steps``) not negative. One error listing every problem, each with its dotted key."""
    sig = inspect.signature(_SCHEDULES[name].__init__)
    accepted = {n: p for n, p in sig.parameters.items() if n not in ("self", "optimizer")}
    problems = []
    for key, value in params.items():
        where = f"ds_config.scheduler.params.{key}"
        if key not in accepted:
            close = difflib.get_close_matches(key, list(accepted), n=1, cutoff=0.5)
            hint = f"; did you mean 'scheduler.params.{close[0]}'?" if close else ""
            problems.append(f"{where}: unknown parameter of {name}{hint} (valid: {', '.join(accepted)})")
            continue
        default = accepted[key].default
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        items = value if isinstance(value, (list, tuple)) and key.endswith("_lr") else [value]
        if numeric and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            problems.append(f"{where}: must be a number (got {value!r})")
        elif key.endswith("_steps") and isinstance(value, (int, float)) and value < 0:
            problems.append(f"{where}: must be >= 0 (got {value!r})")
    if problems:
        raise ValueError("\n".join(problems))


def _build_schedule(name: str, optimizer: Any, params: dict | None) -> _Schedule:
    """The schedule ``name`` (one of VALID_LR_SCHEDULES) over ``optimizer`` with ``params``."""
    if name not in _SCHEDULES:
        close = difflib.get_close_matches(name, VALID_LR_SCHEDULES, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"ds_config.scheduler.type: {name!r} is not a DeepSpeed schedule{hint} "
                         f"(valid: {', '.join(VALID_LR_SCHEDULES)})")
    _check_schedule_params(name, params or {})
    try:
        return _SCHEDULES[name](optimizer, **(params or {}))
    except TypeError as exc:
        raise ValueError(f"scheduler.params for {name} are invalid: {exc}") from exc


def add_tuning_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add DeepSpeed's ``--lr_schedule`` and the schedules' parameters to ``parser``."""
    group = parser.add_argument_group("Convergence Tuning", "Convergence tuning configurations")
    group.add_argument("--lr_schedule", type=str, default=None, help="LR schedule for training.")
    group.add_argument("--lr_range_test_min_lr", type=float, default=0.001)
    group.add_argument("--lr_range_test_step_rate", type=float, default=1.0)
    group.add_argument("--lr_range_test_step_size", type=int, default=1000)
    group.add_argument("--lr_range_test_staircase", type=bool, default=False)
    group.add_argument("--cycle_first_step_size", type=int, default=1000)
    group.add_argument("--cycle_first_stair_count", type=int, default=-1)
    group.add_argument("--cycle_second_step_size", type=int, default=-1)
    group.add_argument("--cycle_second_stair_count", type=int, default=-1)
    group.add_argument("--decay_step_size", type=int, default=1000)
    group.add_argument("--cycle_min_lr", type=float, default=0.01)
    group.add_argument("--cycle_max_lr", type=float, default=0.1)
    group.add_argument("--decay_lr_rate", type=float, default=0.0)
    group.add_argument("--cycle_momentum", default=False, action="store_true")
    group.add_argument("--cycle_min_mom", type=float, default=0.8)
    group.add_argument("--cycle_max_mom", type=float, default=0.9)
    group.add_argument("--decay_mom_rate", type=float, default=0.0)
    group.add_argument("--warmup_min_lr", type=float, default=0)
    group.add_argument("--warmup_max_lr", type=float, default=0.001)
    group.add_argument("--warmup_num_steps", type=int, default=1000)
    group.add_argument("--warmup_type", type=str, default=WARMUP_LOG_RATE)
    return parser
