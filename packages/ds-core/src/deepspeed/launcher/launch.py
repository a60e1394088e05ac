"""The per-node launcher: ``python -m deepspeed.launcher.launch --world_info=<b64> --node_rank=N
--master_addr=A --master_port=P [options] script [args]``.

It starts one process per local slot with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_SIZE``, ``CROSS_RANK``, ``CROSS_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set (and
``--local_rank=N`` appended unless ``--no_local_rank``), then watches them:

* a rank that exits non-zero makes the launcher stop every other rank (SIGTERM, then SIGKILL
  after a grace period) and exit with that rank's code (128+signal for a rank killed by a signal);
* SIGINT, SIGTERM and SIGHUP sent to the launcher (Ctrl-C, a scheduler, a closed terminal or ssh
  session) are forwarded to every rank, which are stopped (SIGKILL after the grace period); the
  launcher then exits with 128+signal, leaving no rank behind.

An error of the launcher itself (a bad argument, an accelerator that cannot be found) is printed as
one line, ``deepspeed.launcher.launch: error: ...``, exit code 1; ``DS_LAUNCHER_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

from deepspeed.launcher.constants import DS_LAUNCH_KILL_GRACE_SECONDS, TORCH_DISTRIBUTED_DEFAULT_PORT
from deepspeed.launcher.core_binding import get_numactl_cmd
from deepspeed.launcher.hostfile import decode_world_info
from deepspeed.utils.logging import logger

_POLL_SECONDS = 0.1


def parse_args(args=None):
    parser = argparse.ArgumentParser(
        description="DeepSpeed per-node launcher: starts this node's ranks of a distributed job"
    )
    parser.add_argument("--node_rank", type=int, default=0, help="Rank of this node among the job's nodes.")
    parser.add_argument("--master_addr", default="127.0.0.1", type=str, help="Address of the rank-0 node.")
    parser.add_argument("--master_port", default=TORCH_DISTRIBUTED_DEFAULT_PORT, type=int,
                        help="Free port on the rank-0 node for the rendezvous.")
    parser.add_argument("--world_info", default="None", type=str,
                        help="base64-encoded JSON {host: [slots]} of the whole job.")
    parser.add_argument("--module", action="store_true",
                        help="Run the script as a module, as 'python -m'.")
    parser.add_argument("--no_python", action="store_true",
                        help="Run the script directly, without 'python'.")
    parser.add_argument("--enable_elastic_training", action="store_true")
    parser.add_argument("--min_elastic_nodes", type=int, default=-1)
    parser.add_argument("--max_elastic_nodes", type=int, default=-1)
    parser.add_argument("--no_local_rank", action="store_true",
                        help="Do not pass --local_rank to the script.")
    parser.add_argument("--save_pid", type=int, default=0,
                        help="Write this launcher's pid to /tmp/<save_pid>.deepspeed.")
    parser.add_argument("--enable_each_rank_log", default="None", type=str,
                        help="Folder where each rank's stdout/stderr go, one file per rank.")
    parser.add_argument("--bind_cores_to_rank", action="store_true",
                        help="Give each rank an equal share of this node's cores.")
    parser.add_argument("--bind_core_list", type=str, default=None,
                        help="Cores to share out with --bind_cores_to_rank, e.g. '0-15,32-47'.")
    parser.add_argument("training_script", type=str, help="The script (or module) every rank runs.")
    parser.add_argument("training_script_args", nargs=argparse.REMAINDER)
    return parser.parse_args(args=args)


def _exit_code(returncode: int) -> int:
    # Note: Popen reports death by signal N as -N; a shell reports it as 128+N, which is what a
    # caller of this launcher (a shell, a scheduler) understands.
    return 128 - returncode if returncode < 0 else returncode


class _RankSet:
    """The local rank processes and how to stop them."""

    def __init__(self) -> None:
        self.procs: list[tuple[int, subprocess.Popen]] = []
        self.logs: list = []
        self.stopping = False

    def alive(self) -> list[tuple[int, subprocess.Popen]]:
        return [(r, p) for r, p in self.procs if p.poll() is None]

    def signal_all(self, sig: int) -> None:
        for _, proc in self.alive():
            try:
                # Note: each rank leads its own process group, so a rank's own children
                # (dataloader workers, compilers) get the signal too.
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self, first_signal: int = signal.SIGTERM, grace: float = DS_LAUNCH_KILL_GRACE_SECONDS) -> None:
        self.stopping = True
        self.signal_all(first_signal)
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
        if self.alive():
            self.signal_all(signal.SIGKILL)
        for _, proc in self.procs:
            proc.wait()
        for fd in self.logs:
            fd.close()


def _rank_command(args, local_rank: int, num_local_procs: int, env: dict) -> list[str]:
    cmd: list[str] = []
    if args.bind_cores_to_rank:
        cores_per_rank, prefix = get_numactl_cmd(args.bind_core_list, num_local_procs, local_rank)
        env["OMP_NUM_THREADS"] = str(cores_per_rank)
        cmd += prefix
    if not args.no_python:
        cmd += [sys.executable, "-u"]
        if args.module:
            cmd.append("-m")
    elif args.module:
        raise ValueError("--module and --no_python are mutually exclusive: a module needs python")
    cmd.append(args.training_script)
    if not args.no_local_rank:
        cmd.append(f"--local_rank={local_rank}")
    return cmd + list(args.training_script_args)


def _rank_envs(args, world_info) -> list[tuple[int, int, dict]]:
    """(global rank, local rank, env) for each process this node starts."""
    nodes = list(world_info.keys())
    if not 0 <= args.node_rank < len(nodes):
        raise ValueError(f"--node_rank={args.node_rank} is out of range for {len(nodes)} node(s) {nodes}")
    world_size = sum(len(slots) for slots in world_info.values())
    first_rank = sum(len(world_info[n]) for n in nodes[:args.node_rank])
    local_slots = list(world_info[nodes[args.node_rank]])
    base = os.environ.copy()
    base.update(
        MASTER_ADDR=args.master_addr,
        MASTER_PORT=str(args.master_port),
        WORLD_SIZE=str(world_size),
        CROSS_RANK=str(args.node_rank),
        CROSS_SIZE=str(len(nodes)),
        LOCAL_SIZE=str(len(local_slots)),
    )
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":
        accelerator.set_visible_devices_envs(base, local_slots)
    elif "OMP_NUM_THREADS" not in base and not args.bind_cores_to_rank:
        # Note: ranks computing on the CPU would each start one thread per core and fight over
        # them; like torchrun, give each rank its share unless the user chose a number.
        base["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(local_slots)))
    out = []
    for local_rank in range(len(local_slots)):
        env = dict(base)
        env["RANK"] = str(first_rank + local_rank)
        env["LOCAL_RANK"] = str(local_rank)
        out.append((first_rank + local_rank, local_rank, env))
    return out


def _start_ranks(args, ranks: _RankSet, world_info) -> None:
    log_dir = None if args.enable_each_rank_log in ("None", "", None) else args.enable_each_rank_log
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    specs = _rank_envs(args, world_info)
    for global_rank, local_rank, env in specs:
        cmd = _rank_command(args, local_rank, len(specs), env)
        kwargs = {}
        if log_dir:
            fd = open(os.path.join(log_dir, f"{stamp}_rank{global_rank}.log"), "w")
            ranks.logs.append(fd)
            kwargs = dict(stdout=fd, stderr=subprocess.STDOUT)
        try:
            proc = subprocess.Popen(cmd, env=env, start_new_session=True, **kwargs)
        except OSError as exc:
            ranks.stop()
            raise RuntimeError(f"could not start rank {global_rank} with {cmd}: {exc}") from exc
        logger.info("process %d spawned with command: %s", proc.pid, cmd)
        ranks.procs.append((global_rank, proc))


def _watch(ranks: _RankSet) -> int:
    """Wait for every rank; the first failure stops the rest. Returns the exit code."""
    while True:
        running = False
        for global_rank, proc in ranks.procs:
            code = proc.poll()
            if code is None:
                running = True
            elif code != 0 and not ranks.stopping:
                logger.error("rank %d (pid %d) exited with code %d; stopping the other ranks",
                             global_rank, proc.pid, code)
                ranks.stop()
                return _exit_code(code)
        if not running:
            for fd in ranks.logs:
                fd.close()
            return 0
        time.sleep(_POLL_SECONDS)


#: Set to 1 to see the traceback of a launcher error instead of its one-line message.
DEBUG_ENV = "DS_LAUNCHER_DEBUG"

#: What the launchers forward to their children.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def report_errors(prog: str, body, args=None):
    """Run ``body(args)``; a launcher error becomes one line on stderr and exit code 1 (the
    traceback only with ``DS_LAUNCHER_DEBUG=1``)."""
    try:
        return body(args)
    except (ValueError, RuntimeError, NotImplementedError, OSError, ImportError) as exc:
        if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            raise
        text = " ".join(str(exc).split("\n")).strip() or type(exc).__name__
        print(f"{prog}: error: {text} (set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        sys.exit(1)


def main(args=None):
    report_errors("deepspeed.launcher.launch", _main, args)


def _main(args=None):
    args = parse_args(args)
    if args.enable_elastic_training:
        raise NotImplementedError(
            "--enable_elastic_training is not supported by this launcher; run elastic jobs with torchrun"
        )
    world_info = decode_world_info(args.world_info)
    if args.save_pid:
        with open(os.path.join("/tmp", f"{args.save_pid}.deepspeed"), "w") as fd:
            fd.write(f"{os.getpid()}")

    ranks = _RankSet()

    def _forward(signum, _frame):
        if ranks.stopping:
            return
        logger.info("launcher got signal %d, forwarding it to %d rank(s)", signum, len(ranks.alive()))
        ranks.stop(first_signal=signum)
        sys.exit(128 + signum)

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, _forward)
    _start_ranks(args, ranks, world_info)
    sys.exit(_watch(ranks))


if __name__ == "__main__":
    main()
