"""``deepspeed.utils.numa``: NUMA topology and the ``numactl`` prefix that binds a local rank to
its share of the cores (DeepSpeed's functions, used by ``--bind_cores_to_rank``).

Cores per NUMA node come from ``/sys/devices/system/node`` (no numactl needed to read them), else
from ``numactl --hardware``. The command binds memory to the node that holds all of the rank's
cores (``-m N``; ``-p N`` to the node's high-bandwidth memory node on flat-HBM machines, where
memory-only nodes pair with the CPU nodes; ``-m a,b`` to every node of a fake-NUMA group that
lists the same cores), then the cores (``-C 0-3``).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

from deepspeed.launcher.core_binding import _ranges  # the --bind_core_list range format

_NODES = pathlib.Path("/sys/devices/system/node")


def parse_range(rng: str) -> range:
    """``"4"`` → ``range(4, 5)``, ``"2-5"`` → ``range(2, 6)``."""
    try:
        value = int(rng)
        return range(value, value + 1)
    except ValueError:
        parts = rng.split("-")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"Bad range: '{rng}', range must be either a number or two numbers separated by "
                             f"a dash, like '4' or '0-3'") from None
        start, end = int(parts[0]), int(parts[1])
        if start > end:
            raise ValueError(f"Bad range: '{rng}', range end must be larger than or equal to start") from None
        return range(start, end + 1)


def parse_range_list(range_str: str) -> list[int]:
    """``"0,2-4,6"`` → ``[0, 2, 3, 4, 6]``. Sub-ranges must be ascending and must not overlap."""
    numbers: list[int] = []
    last = -1
    for sub in range_str.split(","):
        rng = parse_range(sub)
        if rng[0] <= last:
            raise ValueError(f"Bad range: '{range_str}', sub ranges must not overlap with each other and should be "
                             f"in ascending order ('{sub}' starts at or below {last})")
        last = rng[-1]
        numbers.extend(rng)
    return numbers


def _from_sysfs() -> list[list[int]] | None:
    try:
        nodes = sorted((int(p.name[4:]), p) for p in _NODES.glob("node[0-9]*"))
    except OSError:
        return None
    if not nodes:
        return None
    out: list[list[int]] = [[] for _ in range(nodes[-1][0] + 1)]
    for index, path in nodes:
        try:
            text = (path / "cpulist").read_text().strip()
        except OSError:
            return None
        out[index] = parse_range_list(text) if text else []
    return out


def _from_numactl() -> list[list[int]]:
    try:
        output = subprocess.check_output(["numactl", "--hardware"], text=True, stderr=subprocess.DEVNULL)
    except (FileNotFoundError, subprocess.SubprocessError):
        return []
    lines = output.splitlines()
    count = next((int(line.split()[1]) for line in lines if line.startswith("available:")), 0)
    out: list[list[int]] = [[] for _ in range(count)]
    for line in lines:
        words = line.split()
        if len(words) >= 3 and words[0] == "node" and words[2] == "cpus:" and words[1].isdigit():
            node = int(words[1])
            if node < count:
                out[node] = [int(c) for c in words[3:]]
    return out


def get_numa_cores() -> list[list[int]]:
    """The cores of each NUMA node, by node index (``[[0, 1, ...], [32, 33, ...]]``); an empty
    list for a memory-only node; ``[]`` when the topology cannot be read."""
    found = _from_sysfs()
    return found if found is not None else _from_numactl()


def check_for_numactl_pkg() -> bool:
    """Whether ``numactl`` is installed; if not, print how to install it (DeepSpeed's check)."""
    if shutil.which("numactl"):
        return True
    for manager, tool in (("apt-get", "apt"), ("yum", "yum"), ("dnf", "dnf"), ("pacman", "pacman")):
        if shutil.which(manager):
            print(f"please install the numactl package with {tool}")
            break
    else:
        print("please install the numactl package")
    return False


def _memory_binding(cores: list[int], numa_cores: list[list[int]]) -> list[str]:
    wanted = set(cores)
    cpu_nodes = [i for i, c in enumerate(numa_cores) if c]
    memory_only = [i for i, c in enumerate(numa_cores) if not c]
    home = next((i for i in cpu_nodes if wanted <= set(numa_cores[i])), None)
    if home is None:
        return []
    if memory_only and len(memory_only) == len(cpu_nodes):  # flat HBM: node i pairs with its HBM node
        return ["-p", str(memory_only[cpu_nodes.index(home)])]
    same = [i for i in cpu_nodes if numa_cores[i] == numa_cores[home]]
    if len(same) > 1:  # fake NUMA: several nodes list the same cores
        return ["-m", ",".join(map(str, same))]
    return ["-m", str(home)]


def get_numactl_cmd(bind_core_list: str | None, num_local_procs: int, local_rank: int) -> tuple[int, list[str]]:
    """``(cores per rank, ["numactl", "-m", "0", "-C", "0-3"])`` for ``local_rank`` of
    ``num_local_procs``: an equal contiguous share of ``bind_core_list`` (``"0-15,32-47"``) or of
    this machine's physical cores."""
    if "KMP_AFFINITY" in os.environ:
        raise ValueError("Environment variable KMP_AFFINITY conflicts with numactl because it interferes with "
                         "how many CPU cores numactl can set. Fix: unset KMP_AFFINITY before launching deepspeed")
    check_for_numactl_pkg()
    if bind_core_list is not None:
        cores = parse_range_list(bind_core_list)
    else:
        cores = list(range(_physical_cores()))
    per_rank = len(cores) // num_local_procs
    if per_rank < 1:
        raise ValueError(f"At least one core needs to be assigned to each rank: {len(cores)} core(s) for "
                         f"{num_local_procs} local ranks; start fewer ranks or pass a longer --bind_core_list")
    mine = cores[per_rank * local_rank:per_rank * (local_rank + 1)]
    return per_rank, ["numactl", *_memory_binding(mine, get_numa_cores()), "-C", _ranges(mine)]


def _physical_cores() -> int:
    """Physical cores (DeepSpeed counts with psutil's ``logical=False``): distinct (package, core)
    pairs in sysfs, else every logical CPU."""
    seen = set()
    for cpu in pathlib.Path("/sys/devices/system/cpu").glob("cpu[0-9]*"):
        try:
            package = (cpu / "topology" / "physical_package_id").read_text().strip()
            core = (cpu / "topology" / "core_id").read_text().strip()
        except OSError:
            continue
        seen.add((package, core))
    return len(seen) or (os.cpu_count() or 1)
