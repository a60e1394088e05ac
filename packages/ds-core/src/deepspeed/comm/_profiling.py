"""The comms logger's switchboard: ``configure``, timing of one call, and the summary functions.

Collectives call :func:`_timed` only when ``comms_logger.enabled`` is true, so a disabled logger
costs one attribute read per collective (the engine's gradient all-reduce goes through here).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch.distributed as dist

from deepspeed.utils.comms_logging import CommsLogger, get_caller_func

#: The process-wide logger the collectives record into.
comms_logger = CommsLogger()

_SECTION_KEYS = ("enabled", "verbose", "prof_all", "debug", "prof_ops")


def _comms_section(cfg):
    """The ``comms_logger`` settings inside whatever the caller passed (duck-typed): a
    DeepSpeedConfig (``.comms_config`` / ``.comms_logger``), the section model itself, or a dict
    (the whole ds_config or just the section)."""
    if cfg is None:
        return None
    if isinstance(cfg, dict):
        section = cfg.get("comms_logger", cfg)
        if not isinstance(section, dict):
            return _comms_section(section)
        unknown = sorted(set(section) - set(_SECTION_KEYS))
        if unknown:
            raise ValueError(
                f"comms_logger: unknown key(s) {unknown}; allowed keys are {list(_SECTION_KEYS)}"
            )
        return SimpleNamespace(**section)
    for attr in ("comms_config", "comms_logger"):
        inner = getattr(cfg, attr, None)
        if inner is not None:
            return _comms_section(inner)
    return cfg


def configure(deepspeed_config=None, enabled=None, prof_all=None, prof_ops=None, verbose=None, debug=None):
    """Set up the comms logger from a config (see :func:`_comms_section`) and/or explicit values
    (explicit values win)."""
    comms_logger.configure(_comms_section(deepspeed_config), enabled=enabled, prof_all=prof_all,
                           prof_ops=prof_ops, verbose=verbose, debug=debug)


def _timed(comm_op: str, log_name: str, debug, group, msg_size: int, fn, *args):
    """Run ``fn(*args)`` synchronously (waiting on an async handle too) and record it."""
    from deepspeed.accelerator import get_accelerator

    # Note: logged calls are made blocking (synchronize before and after, wait on the handle)
    # so the latency is the op's, as DeepSpeed documents for its comms logger.
    acc = get_accelerator()
    acc.synchronize()
    start = time.perf_counter()
    result = fn(*args)
    if result is not None and hasattr(result, "wait"):
        result.wait()
    acc.synchronize()
    latency_ms = (time.perf_counter() - start) * 1e3
    record = log_name
    if comms_logger.debug:
        record = f"{log_name} | [Caller Func: {debug or get_caller_func(3)}]"
    comms_logger.append(comm_op, record, latency_ms, msg_size, dist.get_world_size(group),
                        dist.get_rank() if dist.is_initialized() else 0)
    return result


def _min_total_latencies() -> dict:
    """Per (record, size): the minimum over ranks of the total latency (for straggler figures)."""
    import torch

    keys = sorted((name, size) for name, sizes in comms_logger.comms_dict.items() for size in sizes)
    if not (dist.is_available() and dist.is_initialized()):
        return {k: sum(comms_logger.comms_dict[k[0]][k[1]][1]) for k in keys}
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, keys)
    all_keys = sorted(set().union(*map(set, gathered)))
    totals = torch.tensor(
        [sum(comms_logger.comms_dict[k[0]][k[1]][1]) if k[0] in comms_logger.comms_dict
         and k[1] in comms_logger.comms_dict[k[0]] else float("inf") for k in all_keys],
        dtype=torch.float64,
    )
    dist.all_reduce(totals, op=dist.ReduceOp.MIN)
    return {k: v for k, v in zip(all_keys, totals.tolist()) if k in set(keys)}


def log_summary(show_straggler: bool = False, return_dict: bool = False):
    """Print the comms table on rank 0 (every rank must call it when ``show_straggler``, which
    exchanges latencies); return this rank's summary dict when ``return_dict``."""
    initialized = dist.is_available() and dist.is_initialized()
    mins = _min_total_latencies() if show_straggler else None
    if initialized:
        dist.barrier()
    rank0 = not initialized or dist.get_rank() == 0
    result = comms_logger.log_all(print_log=rank0, show_straggler=show_straggler,
                                  return_dict=return_dict, min_latencies=mins)
    if initialized:
        dist.barrier()
    return result


def reset_log() -> None:
    """Forget every record (e.g. at the start of an epoch)."""
    comms_logger.reset_data()


def has_comm_data() -> bool:
    return comms_logger.has_data()


def get_comm_operation_count() -> int:
    """Number of logged calls, all ops together."""
    return comms_logger.get_total_operations()


def get_logged_comm_ops() -> list[str]:
    """Record names logged so far (``['all_reduce', 'broadcast']``)."""
    return comms_logger.get_operation_names()
