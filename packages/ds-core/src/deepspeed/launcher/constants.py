"""Names and defaults shared by the ``deepspeed`` runner, the per-node launcher and the
multi-node runners (DeepSpeed's values)."""

import os

#: Launcher backends accepted by ``--launcher`` (case-insensitive).
PDSH_LAUNCHER = "pdsh"
OPENMPI_LAUNCHER = "openmpi"
MPICH_LAUNCHER = "mpich"
IMPI_LAUNCHER = "impi"
SLURM_LAUNCHER = "slurm"
MVAPICH_LAUNCHER = "mvapich"
LAUNCHERS = (PDSH_LAUNCHER, OPENMPI_LAUNCHER, MPICH_LAUNCHER, IMPI_LAUNCHER, SLURM_LAUNCHER, MVAPICH_LAUNCHER)

#: pdsh ``-f``: how many remote commands run at once.
PDSH_MAX_FAN_OUT = 1024
#: MVAPICH's mpirun reads hosts from a file; the runner writes it here.
MVAPICH_TMP_HOSTFILE = "/tmp/deepspeed_mvapich_hostfile"

#: Where ``-H/--hostfile`` points by default.
DLTS_HOSTFILE = "/job/hostfile"
#: torch.distributed's default rendezvous port.
TORCH_DISTRIBUTED_DEFAULT_PORT = 29500

#: Environment variables whose name starts with one of these are exported to every node.
EXPORT_ENVS = ["MLFLOW", "PYTHON", "MV2", "UCX", "NCCL"]
#: File of ``KEY=VALUE`` lines exported to every node; ``DS_ENV_FILE`` overrides the name.
DEEPSPEED_ENVIRONMENT_NAME = os.getenv("DS_ENV_FILE", ".deepspeed_env")
#: Folders searched for that file, in order (a later file overrides an earlier one).
DEEPSPEED_ENVIRONMENT_PATHS = [os.path.expanduser("~"), "."]

#: Seconds the per-node launcher waits after SIGTERM before it SIGKILLs a rank.
DS_LAUNCH_KILL_GRACE_SECONDS = float(os.getenv("DS_LAUNCH_KILL_GRACE", "5"))
