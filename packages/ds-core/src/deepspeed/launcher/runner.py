"""The ``deepspeed`` (and ``ds``) command: start a training script on one or many nodes.

Single node (no hostfile, or one host): runs ``deepspeed.launcher.launch`` here, which starts one
process per slot. On a machine without accelerators local processes are the slots:
``deepspeed --num_gpus 2 train.py`` starts two CPU ranks (gloo). Several hosts: a multi-node
runner (``--launcher pdsh|openmpi|mpich|impi|slurm|mvapich``) starts the job everywhere, with
the ``NCCL*/PYTHON*/UCX*/MV2*/MLFLOW*`` variables, the accelerator's export prefixes and the
lines of ``~/.deepspeed_env`` and ``./.deepspeed_env`` (``DS_ENV_FILE`` renames it) exported.

The exit code is the job's: if a rank fails, the others are stopped and that rank's code is
returned. SIGINT, SIGTERM and SIGHUP (Ctrl-C, a scheduler, a closed terminal or ssh session)
reach every rank, and the command exits non-zero (128+signal). A launcher error is one line on
stderr (``deepspeed: error: ...``, exit code 1); ``DS_LAUNCHER_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import signal
import subprocess
import sys

from deepspeed.launcher.constants import (
    DEEPSPEED_ENVIRONMENT_NAME,
    DEEPSPEED_ENVIRONMENT_PATHS,
    DLTS_HOSTFILE,
    EXPORT_ENVS,
    IMPI_LAUNCHER,
    LAUNCHERS,
    MPICH_LAUNCHER,
    MVAPICH_LAUNCHER,
    OPENMPI_LAUNCHER,
    PDSH_LAUNCHER,
    SLURM_LAUNCHER,
    TORCH_DISTRIBUTED_DEFAULT_PORT,
)
from deepspeed.launcher.hostfile import (  # noqa: F401  (DeepSpeed's import paths)
    encode_world_info,
    fetch_hostfile,
    parse_inclusion_exclusion,
    parse_resource_filter,
)
from deepspeed.launcher.launch import FORWARDED_SIGNALS, report_errors
from deepspeed.launcher.multinode_runner import (
    IMPIRunner,
    MPICHRunner,
    MVAPICHRunner,
    OpenMPIRunner,
    PDSHRunner,
    SlurmRunner,
)
from deepspeed.utils.logging import logger

__all__ = ["DEEPSPEED_ENVIRONMENT_NAME", "encode_world_info", "fetch_hostfile", "main", "parse_args",
           "parse_inclusion_exclusion", "parse_resource_filter"]


def parse_args(args=None):
    parser = argparse.ArgumentParser(
        prog="deepspeed",
        description="DeepSpeed runner: launch a distributed training script on one or more nodes",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-H", "--hostfile", type=str, default=DLTS_HOSTFILE,
                        help="Hostfile of '<hostname> slots=<count>' lines listing the nodes and their slots.")
    parser.add_argument("-i", "--include", type=str, default="",
                        help="Hosts/slots to use, 'NODE[:SLOT,SLOT][@NODE...]' (e.g. 'worker-0@worker-1:0,2'); "
                        "exclusive with --exclude, --num_nodes and --num_gpus.")
    parser.add_argument("-e", "--exclude", type=str, default="",
                        help="Hosts/slots to leave out, same syntax as --include.")
    parser.add_argument("--num_nodes", type=int, default=-1, help="Use the first N hosts of the hostfile.")
    parser.add_argument("--min_elastic_nodes", type=int, default=-1, help="Elastic training: fewest nodes.")
    parser.add_argument("--max_elastic_nodes", type=int, default=-1, help="Elastic training: most nodes.")
    parser.add_argument("--num_gpus", "--num_accelerators", type=int, default=-1,
                        help="Ranks per node (slots 0..N-1); on a machine without accelerators, N CPU processes.")
    parser.add_argument("--master_port", default=TORCH_DISTRIBUTED_DEFAULT_PORT, type=int,
                        help="Port on the rank-0 node used for the rendezvous.")
    parser.add_argument("--master_addr", default="", type=str,
                        help="Address of the rank-0 node (default: 127.0.0.1 on one node, the first host otherwise).")
    parser.add_argument("--node_rank", default=-1, type=int, help="This node's rank (with --no_ssh).")
    parser.add_argument("--launcher", default=PDSH_LAUNCHER, type=str,
                        help=f"Multi-node backend, one of {', '.join(LAUNCHERS)}.")
    parser.add_argument("--launcher_args", default="", type=str, help="Extra arguments for the backend, as one string.")
    parser.add_argument("--module", action="store_true", help="Run the script as a module, as 'python -m'.")
    parser.add_argument("--no_python", action="store_true", help="Run the script directly, without 'python'.")
    parser.add_argument("--no_local_rank", action="store_true", help="Do not pass --local_rank to the script.")
    parser.add_argument("--no_ssh_check", action="store_true", help="Skip the ssh check before a pdsh launch.")
    parser.add_argument("--force_multi", action="store_true",
                        help="Use the multi-node backend even for a single host.")
    parser.add_argument("--save_pid", action="store_true", help="Write the launcher's pid to /tmp/<pid>.deepspeed.")
    parser.add_argument("--enable_each_rank_log", default="None", type=str,
                        help="Folder where each rank writes its own log file.")
    parser.add_argument("--autotuning", default="", choices=["tune", "run"], type=str,
                        help="Autotuning mode (not supported by this launcher).")
    parser.add_argument("--elastic_training", action="store_true", help="Elastic training (not supported).")
    parser.add_argument("--bind_cores_to_rank", action="store_true",
                        help="Give each rank an equal share of the node's cores (numactl/taskset).")
    parser.add_argument("--bind_core_list", type=str, default=None,
                        help="Cores to share out with --bind_cores_to_rank, e.g. '0-15,32-47'.")
    parser.add_argument("--ssh_port", type=int, default=None, help="ssh port of the remote hosts.")
    parser.add_argument("--no_ssh", action="store_true",
                        help="Start only this node's ranks (no ssh); needs --node_rank and --master_addr.")
    parser.add_argument("--comment", default="", type=str, help="Slurm: --comment for srun.")
    parser.add_argument("--account", default="", type=str, help="Slurm: --account for srun.")
    parser.add_argument("user_script", type=str, help="The training script (or module) every rank runs.")
    parser.add_argument("user_args", nargs=argparse.REMAINDER, help="Arguments for the training script.")
    return parser.parse_args(args=args)


def _local_slot_count(args) -> int:
    """Slots on this machine when there is no hostfile."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if accelerator.device_name() == "cpu":
        # Note: without accelerators a slot is a local process. Include/exclude may name any of
        # them up to the core count; with neither they and no --num_gpus, one rank runs.
        if args.include or args.exclude:
            return os.cpu_count() or 1
        return max(args.num_gpus, 1)
    count = accelerator.device_count()
    if count == 0:
        raise RuntimeError("Unable to proceed, no GPU resources available")
    return count


def _read_env_file(path: str) -> dict[str, str]:
    out = {}
    with open(path) as fd:
        for lineno, line in enumerate(fd, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                raise ValueError(f"{path} line {lineno} is {line!r}; every line must be KEY=VALUE")
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def deepspeed_env_exports(env: dict[str, str]) -> dict[str, str]:
    """What every node gets exported: prefixed variables of ``env``, then the lines of the
    ``.deepspeed_env`` files (home folder, then the current folder; a later one wins)."""
    from deepspeed.accelerator import get_accelerator

    prefixes = list(EXPORT_ENVS) + list(get_accelerator().export_envs())
    exports = {k: v for k, v in env.items() if any(k.startswith(p) for p in prefixes)}
    name = os.getenv("DS_ENV_FILE", DEEPSPEED_ENVIRONMENT_NAME)
    for folder in DEEPSPEED_ENVIRONMENT_PATHS:
        path = name if os.path.isabs(name) else os.path.join(folder, name)
        if os.path.isfile(path):
            exports.update(_read_env_file(path))
    return exports


def _apply_node_gpu_limits(args, active):
    if args.num_nodes > 0:
        active = collections.OrderedDict(list(active.items())[:args.num_nodes])
    if args.num_gpus > 0:
        active = collections.OrderedDict((host, list(range(args.num_gpus))) for host in active)
    return active


def _make_runner(args, world_info_base64, resource_pool):
    name = args.launcher.lower()
    classes = {
        OPENMPI_LAUNCHER: OpenMPIRunner, MPICH_LAUNCHER: MPICHRunner, IMPI_LAUNCHER: IMPIRunner,
        SLURM_LAUNCHER: SlurmRunner, MVAPICH_LAUNCHER: MVAPICHRunner,
    }
    if name == PDSH_LAUNCHER:
        return PDSHRunner(args, world_info_base64)
    if name in classes:
        return classes[name](args, world_info_base64, resource_pool)
    raise NotImplementedError(f"Unknown launcher {args.launcher}; choose one of {', '.join(LAUNCHERS)}")


def _local_launch_cmd(args, world_info_base64: str, node_rank: int) -> list[str]:
    cmd = [sys.executable, "-u", "-m", "deepspeed.launcher.launch", f"--world_info={world_info_base64}",
           f"--node_rank={node_rank}", f"--master_addr={args.master_addr}", f"--master_port={args.master_port}"]
    if args.no_python:
        cmd.append("--no_python")
    if args.module:
        cmd.append("--module")
    if args.no_local_rank:
        cmd.append("--no_local_rank")
    if args.save_pid:
        cmd += ["--save_pid", f"{os.getpid()}"]
    if args.enable_each_rank_log not in ("None", "", None):
        cmd.append(f"--enable_each_rank_log={args.enable_each_rank_log}")
    if args.bind_cores_to_rank:
        cmd.append("--bind_cores_to_rank")
    if args.bind_core_list is not None:
        cmd.append(f"--bind_core_list={args.bind_core_list}")
    return cmd + [args.user_script] + list(args.user_args)


def _check_ssh(host: str, args) -> None:
    ssh = ["ssh", "-o", "PasswordAuthentication=no", "-o", "ConnectTimeout=10"]
    if args.ssh_port is not None:
        ssh += ["-p", str(args.ssh_port)]
    try:
        subprocess.check_call(ssh + [host, "hostname"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, OSError):
        raise RuntimeError(
            f"Using hostfile at {args.hostfile} but host={host} was not reachable via ssh. If you are "
            f"running with a single node please remove {args.hostfile} or pass --no_ssh_check"
        ) from None


def _run(cmd, env, kill_cmd=None) -> int:
    logger.info("cmd = %s", " ".join(shlex.quote(c) for c in cmd))
    proc = subprocess.Popen(cmd, env=env)

    received: list[int] = []

    def _forward(signum, _frame):
        # Note: Ctrl-C in a terminal already signals the whole foreground group; forwarding
        # also covers a SIGTERM/SIGHUP sent to this process alone (a scheduler, a parent script,
        # a closed ssh session: the ranks run in their own sessions and would not see it).
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)
        if kill_cmd is not None:
            subprocess.call(kill_cmd, env=env)

    old = {s: signal.signal(s, _forward) for s in FORWARDED_SIGNALS}
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:
                continue
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    code = 128 - code if code < 0 else code
    return 128 + received[0] if received and code == 0 else code


def main(args=None):
    report_errors("deepspeed", _main, args)


def _main(args=None):
    args = parse_args(args)
    if args.elastic_training or args.min_elastic_nodes > 0 or args.max_elastic_nodes > 0:
        raise NotImplementedError("elastic training (--elastic_training) is not supported by this launcher; "
                                  "use torchrun for elastic jobs")
    if args.autotuning:
        raise NotImplementedError("--autotuning is not supported by this launcher; tune the ds_config by hand")
    if (args.num_nodes >= 0 or args.num_gpus >= 0) and (args.include != "" or args.exclude != ""):
        raise ValueError("Cannot specify num_nodes/gpus with include/exclude")

    resource_pool = fetch_hostfile(args.hostfile)
    multi_node_exec = True
    if not resource_pool:
        resource_pool = collections.OrderedDict(localhost=_local_slot_count(args))
        args.master_addr = args.master_addr or "127.0.0.1"
        multi_node_exec = False
    if not multi_node_exec and args.num_nodes > 1:
        raise ValueError("Num nodes is >1 but no extra nodes available via hostfile")

    active = parse_inclusion_exclusion(resource_pool, args.include, args.exclude)
    active = _apply_node_gpu_limits(args, active)
    if not active:
        raise ValueError(f"no slot is left to run on after --include={args.include!r} --exclude={args.exclude!r}")
    env = os.environ.copy()
    world_info = encode_world_info(active)
    multi_node_exec = args.force_multi or len(active) > 1

    if args.no_ssh:
        if args.node_rank < 0 or not args.master_addr:
            raise ValueError("--no_ssh needs --node_rank (this node's rank) and --master_addr (the rank-0 node)")
        sys.exit(_run(_local_launch_cmd(args, world_info, args.node_rank), env))

    if not args.master_addr:
        # Note: DeepSpeed asks the first host for its IP over ssh; the host name resolves on
        # every cluster we know and needs no ssh round trip.
        args.master_addr = next(iter(active))
        logger.info("Using %s (the first host) as master_addr", args.master_addr)

    if not multi_node_exec:
        sys.exit(_run(_local_launch_cmd(args, world_info, 0), env))

    runner = _make_runner(args, world_info, resource_pool)
    if not runner.backend_exists():
        raise RuntimeError(f"launcher '{args.launcher}' not installed.")
    if runner.name == PDSH_LAUNCHER and not args.no_ssh_check:
        _check_ssh(next(iter(active)), args)
    cwd = os.path.abspath(".")
    env["PYTHONPATH"] = cwd + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for key, value in deepspeed_env_exports(env).items():
        runner.add_export(key, value)
    out = runner.get_cmd(env, active)
    if isinstance(out, tuple):
        cmd, kill_cmd, env = out
    else:
        cmd, kill_cmd = out, None
    sys.exit(_run(cmd, env, kill_cmd))


if __name__ == "__main__":
    main()
