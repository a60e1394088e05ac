"""``CommsLogger``: per-operation latency, message size and bandwidth of ``deepspeed.comm`` calls.

Bandwidths follow nccl-tests (``doc/PERFORMANCE.md``): ``algbw = S / t`` where ``S`` is the
collective's whole buffer (the tensor for all_reduce and broadcast, the gathered output for
all_gather, the input for reduce_scatter, one rank's send buffer for all_to_all), and
``busbw = algbw * factor`` with factor ``2(n-1)/n`` for all-reduce, ``(n-1)/n`` for all-gather,
reduce-scatter and all-to-all, and ``1`` for everything else. The recorded "message size" is ``S``.
Units: latency in milliseconds, bandwidth in Gbit/s.
"""

from __future__ import annotations

import math
import sys

from deepspeed.utils.logging import logger
from deepspeed.utils.timer import trim_mean

_ALL_REDUCE_OPS = frozenset({"all_reduce", "all_reduce_coalesced", "inference_all_reduce"})
_RING_OPS = frozenset({
    "all_gather", "all_gather_into_tensor", "allgather_fn", "all_gather_coalesced", "all_gather_object",
    "reduce_scatter", "reduce_scatter_tensor", "reduce_scatter_fn", "all_to_all", "all_to_all_single",
})


def get_caller_func(frame: int = 3) -> str:
    """Name of the function ``frame`` levels up the stack (used for ``debug`` record names)."""
    return sys._getframe(frame).f_code.co_name


def convert_size(size_bytes: int) -> str:
    """``1536`` -> ``'1.5 KB'`` (powers of 1024)."""
    if size_bytes <= 0:
        return "0B"
    names = ("B", "KB", "MB", "GB", "TB", "PB")
    i = min(int(math.floor(math.log(size_bytes, 1024))), len(names) - 1)
    return f"{round(size_bytes / 1024 ** i, 2)} {names[i]}"


def _bus_factor(comm_op: str, world_size: int) -> float:
    n = max(world_size, 1)
    if comm_op in _ALL_REDUCE_OPS:
        return 2.0 * (n - 1) / n
    if comm_op in _RING_OPS:
        return (n - 1) / n
    return 1.0


def calc_bw_log(comm_op: str, size: int, duration: float, world_size: int) -> tuple[float, float]:
    """``(algbw, busbw)`` in Gbit/s for ``size`` bytes moved by ``comm_op`` in ``duration`` ms."""
    if duration <= 0:
        return 0.0, 0.0
    algbw = size * 8 / (duration * 1e-3) / 1e9
    return algbw, algbw * _bus_factor(comm_op, world_size)


class CommsLogger:
    """Records of timed ops: ``comms_dict[record_name][msg_size] = [count, latencies, algbws,
    busbws]`` (lists, one entry per call). Off by default; the collectives check ``enabled``
    first, so a disabled logger costs one attribute read per call."""

    def __init__(self) -> None:
        self.comms_dict: dict[str, dict[int, list]] = {}
        self.enabled = False
        self.verbose = False
        self.prof_all = True
        self.debug = False
        self.prof_ops: list[str] = []

    def configure(self, comms_config=None, *, enabled=None, prof_all=None, prof_ops=None,
                  verbose=None, debug=None) -> None:
        """Take settings from a ``comms_logger`` config model (anything with ``enabled``,
        ``prof_all``, ...) and/or explicit values; explicit values win."""
        if comms_config is not None:
            for name in ("enabled", "verbose", "prof_all", "debug", "prof_ops"):
                if hasattr(comms_config, name):
                    setattr(self, name, getattr(comms_config, name))
        for name, value in (("enabled", enabled), ("prof_all", prof_all), ("prof_ops", prof_ops),
                            ("verbose", verbose), ("debug", debug)):
            if value is not None:
                setattr(self, name, value)
        self.prof_ops = list(self.prof_ops or [])

    # Profiling scopes: everything (prof_all), by op name (prof_ops), or one call (prof=True).
    def start_profiling_comms(self) -> None:
        self.prof_all = True

    def stop_profiling_comms(self) -> None:
        self.prof_all = False

    def start_profiling_op(self, op_name_list) -> None:
        self.prof_ops = sorted(set(self.prof_ops) | set(op_name_list))

    def stop_profiling_op(self, op_name_list) -> None:
        self.prof_ops = [op for op in self.prof_ops if op not in set(op_name_list)]

    def should_profile(self, comm_op: str, log_name: str, prof: bool) -> bool:
        return prof or self.prof_all or comm_op in self.prof_ops or log_name in self.prof_ops

    def append(self, raw_name: str, record_name: str, latency: float, msg_size: int,
               world_size: int, rank: int = 0) -> None:
        """Add one call: ``raw_name`` picks the bandwidth formula, ``record_name`` the row."""
        algbw, busbw = calc_bw_log(raw_name, msg_size, latency, world_size)
        sizes = self.comms_dict.setdefault(record_name, {})
        entry = sizes.get(msg_size)
        if entry is None:
            sizes[msg_size] = [1, [latency], [algbw], [busbw]]
        else:
            entry[0] += 1
            entry[1].append(latency)
            entry[2].append(algbw)
            entry[3].append(busbw)
        if self.verbose:
            logger.info(
                f"rank={rank} | comm op: {record_name} | time (ms): {latency:.2f} | msg size: "
                f"{convert_size(msg_size)} | algbw (Gbps): {algbw:.2f} | busbw (Gbps): {busbw:.2f}"
            )

    # ---- queries ----
    def has_data(self) -> bool:
        return bool(self.comms_dict)

    def get_total_operations(self) -> int:
        return sum(v[0] for sizes in self.comms_dict.values() for v in sizes.values())

    def get_operation_names(self) -> list[str]:
        return list(self.comms_dict)

    def reset_data(self) -> None:
        self.comms_dict.clear()

    def summary(self, min_latencies: dict | None = None) -> dict:
        """``{record_name: {msg_size: {count, total_latency_ms, avg_latency_ms, algbw_gbps,
        busbw_gbps[, straggler_ms]}}}``; straggler = this rank's total latency minus the
        per-call minimum over ranks (given in ``min_latencies``)."""
        out: dict = {}
        for record_name, sizes in self.comms_dict.items():
            rows = out.setdefault(record_name, {})
            for msg_size, (count, lats, algbws, busbws) in sorted(sizes.items()):
                row = {
                    "count": count,
                    "total_latency_ms": sum(lats),
                    "avg_latency_ms": sum(lats) / count,
                    "algbw_gbps": sum(algbws) / count,
                    "busbw_gbps": sum(busbws) / count,
                }
                if min_latencies is not None:
                    row["straggler_ms"] = sum(lats) - min_latencies[(record_name, msg_size)]
                rows[msg_size] = row
        return out

    def get_operation_summary(self, operation_name: str) -> dict | None:
        """One recorded op by message size (DeepSpeed's method): ``{msg_size: {count,
        total_latency_ms, avg_latency_ms, tput_avg_gbps, busbw_avg_gbps, msg_size_bytes,
        msg_size_str}}``, averages trimmed by 10% at each end as DeepSpeed's are; None when the op
        was not recorded."""
        sizes = self.comms_dict.get(operation_name)
        if sizes is None:
            return None
        out = {}
        for msg_size, (count, lats, algbws, busbws) in sorted(list(sizes.items())):
            out[msg_size] = {
                "count": count,
                "total_latency_ms": sum(lats),
                "avg_latency_ms": trim_mean(lats, 0.1),
                "tput_avg_gbps": trim_mean(algbws, 0.1),
                "busbw_avg_gbps": trim_mean(busbws, 0.1),
                "msg_size_bytes": msg_size,
                "msg_size_str": convert_size(msg_size),
            }
        return out

    def log_all(self, print_log: bool = True, show_straggler: bool = False, return_dict: bool = False,
                min_latencies: dict | None = None):
        """Print the summary table (and return it as a dict when ``return_dict``)."""
        table = self.summary(min_latencies if show_straggler else None)
        if print_log:
            cols = ["Comm. Op", "Message Size", "Count", "Total Latency(ms)", "Avg Latency(ms)",
                    "tput_avg (Gbps)", "busbw_avg (Gbps)"] + (["straggler (ms)"] if show_straggler else [])
            lines = ["".join(f"{c: <20}" for c in cols)]
            for record_name, rows in table.items():
                lines.append(record_name)
                for msg_size, r in rows.items():
                    vals = [" ", convert_size(msg_size), r["count"], f"{r['total_latency_ms']:.2f}",
                            f"{r['avg_latency_ms']:.2f}", f"{r['algbw_gbps']:.2f}", f"{r['busbw_gbps']:.2f}"]
                    if show_straggler:
                        vals.append(f"{r['straggler_ms']:.2f}")
                    lines.append("".join(f"{v: <20}" for v in vals))
            print("\n".join(lines), flush=True)
        return table if return_dict else None
