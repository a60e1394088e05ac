"""Where a process learns its rank: the environment, MPI (mpi4py when importable), the timeout.

Order: explicit ``rank``/``world_size`` arguments, then ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT`` (what the ``deepspeed`` launcher, torchrun, Accelerate and
Lightning set), then Open MPI / PMI variables, then ``mpi4py``. What was found is written back to
``os.environ`` so ``init_method="env://"`` and later ``get_local_rank()`` see the same values.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from deepspeed.utils.logging import logger

_REQUIRED_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")
_DEFAULT_TIMEOUT_MINUTES = 10

# (rank, world size, local rank) variables of the MPI launchers we recognise.
_MPI_ENVS = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK"),
)


def _timeout_minutes_from_env(strict: bool) -> int:
    raw = os.environ.get("DEEPSPEED_TIMEOUT")
    if raw is None or raw.strip() == "":
        return _DEFAULT_TIMEOUT_MINUTES
    try:
        minutes = int(raw)
        if minutes <= 0:
            raise ValueError
    except ValueError:
        if strict:
            raise ValueError(
                f"DEEPSPEED_TIMEOUT={raw!r} is not a positive whole number of minutes; "
                f"set it to e.g. DEEPSPEED_TIMEOUT=30 or unset it for the default "
                f"{_DEFAULT_TIMEOUT_MINUTES} minutes"
            ) from None
        return _DEFAULT_TIMEOUT_MINUTES
    return minutes


#: The process-group timeout: 10 minutes, or ``DEEPSPEED_TIMEOUT`` minutes (read at import).
default_pg_timeout = timedelta(minutes=_timeout_minutes_from_env(strict=False))


def _pg_timeout() -> timedelta:
    """The timeout ``init_distributed`` uses when the caller keeps the default, read now."""
    return timedelta(minutes=_timeout_minutes_from_env(strict=True))


def _env_int(name: str) -> int:
    raw = os.environ[name]
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer") from None


def _from_mpi_env() -> bool:
    """Fill RANK/WORLD_SIZE/LOCAL_RANK from an MPI launcher's variables; True when found."""
    for rank_var, size_var, local_var in _MPI_ENVS:
        if rank_var in os.environ and size_var in os.environ:
            os.environ.setdefault("RANK", os.environ[rank_var])
            os.environ.setdefault("WORLD_SIZE", os.environ[size_var])
            os.environ.setdefault("LOCAL_RANK", os.environ.get(local_var, "0"))
            return True
    return False


def _from_mpi4py(distributed_port: int, verbose: bool) -> bool:
    """Ask MPI itself (mpi4py) for rank, size, local rank and rank 0's address; False without
    mpi4py."""
    try:
        from mpi4py import MPI  # optional: never a dependency
    except ImportError:
        return False
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    addr = socket.gethostbyname(socket.gethostname()) if rank == 0 else None
    addr = world.bcast(addr, root=0)
    local_rank = world.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(local_rank), MASTER_ADDR=addr,
        MASTER_PORT=str(distributed_port),
    )
    if verbose:
        logger.info(
            f"Discovered MPI settings of world_rank={rank}, local_rank={local_rank}, "
            f"world_size={size}, master_addr={addr}, master_port={distributed_port}"
        )
    return True


def _discover(rank: int, world_size: int, distributed_port: int, auto_mpi_discovery: bool,
              init_method: str | None, verbose: bool) -> tuple[int, int]:
    """Rank and world size for ``init_process_group``; raises RuntimeError naming what is missing."""
    if rank >= 0 and world_size > 0:
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world_size)
        if world_size == 1:
            os.environ.setdefault("LOCAL_RANK", "0")
        if init_method is None:
            _require_master(distributed_port, world_size)
        return rank, world_size
    if not all(v in os.environ for v in ("RANK", "WORLD_SIZE")):
        found = _from_mpi_env() or (auto_mpi_discovery and _from_mpi4py(distributed_port, verbose))
        if not found:
            missing = [v for v in _REQUIRED_ENV if v not in os.environ]
            raise RuntimeError(
                f"init_distributed: cannot tell this process's rank: environment variables "
                f"{', '.join(missing)} are not set and no MPI launcher was detected "
                f"(mpi4py not importable{'' if auto_mpi_discovery else ', auto_mpi_discovery=False'})."
                f" Fix: start with a launcher (`deepspeed train.py`, `torchrun`, `mpirun` with "
                f"mpi4py installed), or for one process set RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 "
                f"MASTER_ADDR=127.0.0.1 MASTER_PORT={distributed_port}, or pass rank= and "
                f"world_size=."
            )
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={world_size})")
    if world_size == 1:
        os.environ.setdefault("LOCAL_RANK", "0")
    if init_method is None:
        _require_master(distributed_port, world_size)
    return rank, world_size


def _require_master(distributed_port: int, world_size: int) -> None:
    # Note: MASTER_PORT defaults to distributed_port as in DeepSpeed; MASTER_ADDR can only be
    # guessed for a single process (everything else would silently split the job).
    os.environ.setdefault("MASTER_PORT", str(distributed_port))
    if "MASTER_ADDR" not in os.environ:
        if world_size == 1:
            os.environ["MASTER_ADDR"] = "127.0.0.1"
            return
        raise RuntimeError(
            f"init_distributed: environment variable MASTER_ADDR is not set (WORLD_SIZE="
            f"{world_size}). Fix: set MASTER_ADDR to the address of rank 0 (the launchers do "
            f"this), or pass init_method='tcp://HOST:PORT'."
        )
