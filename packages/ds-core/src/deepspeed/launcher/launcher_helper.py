"""What each rank runs under MPICH: ``python -m deepspeed.launcher.launcher_helper --launcher mpich
[--module] [--no_python] [--no_local_rank] script [args]``.

It copies the MPI process manager's rank variables to ``RANK``, ``LOCAL_RANK`` (and
``WORLD_SIZE`` when missing), then replaces itself with the script.
"""

from __future__ import annotations

import argparse
import os
import sys

# (rank, local rank, world size) variables per process manager, in the order they are tried.
_RANK_ENVS = (
    ("PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE"),
    ("PMIX_RANK", "PMIX_LOCAL_RANK", "PMIX_SIZE"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"),
)


def parse_args(args=None):
    parser = argparse.ArgumentParser(description="DeepSpeed per-rank helper for MPI launchers")
    parser.add_argument("--launcher", default="mpich", type=str)
    parser.add_argument("--module", action="store_true")
    parser.add_argument("--no_python", action="store_true")
    parser.add_argument("--no_local_rank", action="store_true")
    parser.add_argument("user_script", type=str)
    parser.add_argument("user_args", nargs=argparse.REMAINDER)
    return parser.parse_args(args=args)


def rank_env(environ) -> dict[str, str]:
    """RANK/LOCAL_RANK/WORLD_SIZE derived from an MPI environment."""
    for rank_var, local_var, size_var in _RANK_ENVS:
        if rank_var in environ:
            out = {"RANK": environ[rank_var], "LOCAL_RANK": environ.get(local_var, "0")}
            if "WORLD_SIZE" not in environ and size_var in environ:
                out["WORLD_SIZE"] = environ[size_var]
            return out
    names = ", ".join(v[0] for v in _RANK_ENVS)
    raise RuntimeError(f"launcher_helper found no MPI rank variable ({names}); start it with mpirun")


def build_command(args, local_rank: str) -> list[str]:
    cmd = [] if args.no_python else [sys.executable, "-u"] + (["-m"] if args.module else [])
    cmd.append(args.user_script)
    if not args.no_local_rank:
        cmd.append(f"--local_rank={local_rank}")
    return cmd + list(args.user_args)


def main(args=None):
    args = parse_args(args)
    env = os.environ.copy()
    env.update(rank_env(env))
    cmd = build_command(args, env["LOCAL_RANK"])
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
