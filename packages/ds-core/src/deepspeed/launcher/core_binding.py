"""``--bind_cores_to_rank``: split this node's cores between its local ranks.

Each local rank gets an equal, contiguous share of the core list (``--bind_core_list`` such as
``0-15,32-47``, or every core this process may run on) and ``OMP_NUM_THREADS`` equal to its share.
The binding is a ``numactl -C`` prefix when numactl is installed, else ``taskset -c``.
"""

from __future__ import annotations

import os
import shutil


def parse_core_list(core_list: str) -> list[int]:
    """``"0-3,8,10-11"`` → ``[0, 1, 2, 3, 8, 10, 11]``."""
    cores: list[int] = []
    for part in core_list.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                cores.extend(range(lo, hi + 1))
            else:
                cores.append(int(part))
        except ValueError:
            raise ValueError(
                f"--bind_core_list={core_list!r}: {part!r} is not a core number or range like '0-3'"
            ) from None
    return cores


def _available_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _ranges(cores: list[int]) -> str:
    parts, start = [], None
    for i, c in enumerate(cores):
        if start is None:
            start = c
        if i + 1 == len(cores) or cores[i + 1] != c + 1:
            parts.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ",".join(parts)


def cores_for_rank(bind_core_list: str | None, num_local_procs: int, local_rank: int) -> list[int]:
    cores = parse_core_list(bind_core_list) if bind_core_list else _available_cores()
    per_rank = len(cores) // num_local_procs
    if per_rank == 0:
        raise ValueError(
            f"--bind_cores_to_rank: {len(cores)} core(s) cannot be split between {num_local_procs} "
            f"local ranks; start fewer ranks or pass a longer --bind_core_list"
        )
    return cores[local_rank * per_rank:(local_rank + 1) * per_rank]


def get_numactl_cmd(bind_core_list: str | None, num_local_procs: int, local_rank: int) -> tuple[int, list[str]]:
    """``(cores per rank, command prefix)`` that pins ``local_rank`` to its share of the cores."""
    cores = cores_for_rank(bind_core_list, num_local_procs, local_rank)
    if shutil.which("numactl"):
        prefix = ["numactl", "-C", _ranges(cores)]
    elif shutil.which("taskset"):
        prefix = ["taskset", "-c", _ranges(cores)]
    else:
        raise RuntimeError(
            "--bind_cores_to_rank needs numactl or taskset on PATH; install one "
            "(apt-get install numactl) or drop --bind_cores_to_rank"
        )
    return len(cores), prefix
