"""Multi-node runners: the command line each backend (pdsh, Open MPI, MPICH, Intel MPI, Slurm,
MVAPICH) needs to start a job on several hosts.

``runner.get_cmd(environment, active_resources)`` returns the command (pdsh: the command, the
command that kills the job on every host, and the environment). ``add_export(key, value)``
forwards an environment variable to every rank. pdsh starts ``deepspeed.launcher.launch`` on each
host; the MPI and Slurm backends start every rank themselves, and the ranks find their rank in the
MPI variables (``deepspeed.comm`` reads them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from abc import ABC, abstractmethod
from shlex import split

from deepspeed.launcher.constants import MVAPICH_TMP_HOSTFILE, PDSH_MAX_FAN_OUT
from deepspeed.launcher.core_binding import get_numactl_cmd
from deepspeed.utils.logging import logger


class MultiNodeRunner(ABC):
    """One launcher backend. Subclasses name themselves (``name``), say whether their tool is
    installed (``backend_exists``) and build the command (``get_cmd``)."""

    def __init__(self, args, world_info_base64: str):
        self.args = args
        self.validate_args()
        self.user_arguments = self.parse_user_args()
        self.user_script = args.user_script
        self.world_info_base64 = world_info_base64
        self.exports: dict[str, str] = {}

    @abstractmethod
    def backend_exists(self):
        """Whether this backend's tool is installed."""

    @abstractmethod
    def get_cmd(self, environment, active_resources):
        """The command that starts the job."""

    def add_export(self, key: str, var: str) -> None:
        self.exports[key.strip()] = var.strip()

    def parse_user_args(self) -> list[str]:
        return list(self.args.user_args)

    @property
    def name(self) -> str:
        return self.__class__.__name__

    def validate_args(self) -> None:
        """Refuse options this backend cannot honour."""

    def _python_exec(self) -> list[str]:
        if self.args.no_python:
            return []
        return [sys.executable, "-u"] + (["-m"] if self.args.module else [])

    def _refuse_filters(self) -> None:
        if self.args.include != "" or self.args.exclude != "":
            raise ValueError(f"{self.name} backend does not support worker include/exclusion")
        if self.args.num_nodes != -1 or self.args.num_gpus != -1:
            raise ValueError(f"{self.name} backend does not support limiting num nodes/gpus")


def _same_slots_per_node(resource_pool, backend: str) -> tuple[int, int]:
    counts = list(resource_pool.values())
    if not all(n == counts[0] for n in counts):
        raise ValueError(f"{backend} requires same number of devices per node, got {dict(resource_pool)}")
    return sum(counts), counts[0]


class PDSHRunner(MultiNodeRunner):
    """pdsh runs ``deepspeed.launcher.launch`` on every host over ssh; ``%n`` is pdsh's node
    rank."""

    def backend_exists(self):
        return shutil.which("pdsh")

    @property
    def name(self) -> str:
        return "pdsh"

    def parse_user_args(self) -> list[str]:
        # Note: pdsh joins the words into one remote shell line, so an argument with spaces
        # would be split again there; double-quote it (escaping its own double quotes).
        out = []
        for arg in self.args.user_args:
            if " " in arg:
                arg = '"{}"'.format(arg.replace('"', '\\"'))
            out.append(arg)
        return out

    def _launch_words(self) -> list[str]:
        exports = "".join(f"export {k}={v}; " for k, v in self.exports.items())
        words = [
            exports, f"cd {os.path.abspath('.')};", sys.executable, "-u", "-m", "deepspeed.launcher.launch",
            f"--world_info={self.world_info_base64}", "--node_rank=%n",
            f"--master_addr={self.args.master_addr}", f"--master_port={self.args.master_port}",
        ]
        if self.args.no_python:
            words.append("--no_python")
        if self.args.module:
            words.append("--module")
        if self.args.no_local_rank:
            words.append("--no_local_rank")
        if self.args.save_pid:
            words += ["--save_pid", f"{os.getpid()}"]
        if getattr(self.args, "enable_each_rank_log", "None") not in ("None", "", None):
            words.append(f"--enable_each_rank_log={self.args.enable_each_rank_log}")
        if self.args.bind_cores_to_rank:
            words.append("--bind_cores_to_rank")
        if self.args.bind_core_list is not None:
            words.append(f"--bind_core_list={self.args.bind_core_list}")
        return words

    def get_cmd(self, environment, active_resources):
        environment["PDSH_RCMD_TYPE"] = "ssh"
        if self.args.ssh_port is not None:
            environment["PDSH_SSH_ARGS_APPEND"] = (
                f"{environment.get('PDSH_SSH_ARGS_APPEND', '')} -p {self.args.ssh_port}"
            )
        workers = ",".join(active_resources.keys())
        logger.info("Running on the following workers: %s", workers)
        pdsh = ["pdsh", "-S", "-f", str(PDSH_MAX_FAN_OUT), "-w", workers] + split(self.args.launcher_args)
        launch = self._launch_words()
        # The kill command finds the launcher by its command line: python -u -m deepspeed.launcher.launch
        pattern = " ".join(launch[2:6])
        kill_command = pdsh + ["pkill -f ", pattern]
        return pdsh + launch + [self.user_script] + self.user_arguments, kill_command, environment


class OpenMPIRunner(MultiNodeRunner):
    """``mpirun`` (Open MPI) starts every rank from the hostfile; ``-x`` exports variables."""

    def __init__(self, args, world_info_base64, resource_pool):
        super().__init__(args, world_info_base64)
        self.resource_pool = resource_pool
        self.add_export("UCX_TLS", "tcp")

    def backend_exists(self):
        return shutil.which("ompi_info")

    @property
    def name(self) -> str:
        return "openmpi"

    def validate_args(self) -> None:
        self._refuse_filters()

    #: MCA parameters set unless ``--launcher_args`` sets them (or a conflicting one) itself.
    DEFAULT_MCA = (("btl", "^openib", ("btl",)),
                   ("btl_tcp_if_include", "eth0", ("btl_tcp_if_include", "btl_tcp_if_exclude")))

    @staticmethod
    def _user_mca(launcher_args: list[str]) -> set[str]:
        """MCA parameter names in ``--mca NAME VALUE`` / ``-mca NAME VALUE`` of the launcher args."""
        return {launcher_args[i + 1] for i in range(len(launcher_args) - 1)
                if launcher_args[i] in ("--mca", "-mca", "--gmca", "-gmca")}

    def get_cmd(self, environment, active_resources):
        total = sum(self.resource_pool.values())
        launcher_args = split(self.args.launcher_args)
        cmd = ["mpirun", "-n", f"{total}", "-hostfile", f"{self.args.hostfile}"]
        # Note: the user's choice wins (DeepSpeed adds btl_tcp_if_include eth0 unless given); Open MPI
        # refuses btl_tcp_if_include together with btl_tcp_if_exclude, so either one drops the default.
        user = self._user_mca(launcher_args)
        for name, value, overridden_by in self.DEFAULT_MCA:
            if not user.intersection(overridden_by):
                cmd += ["--mca", name, value]
        if self.args.ssh_port is not None:
            cmd += ["--mca", "plm_rsh_args", f"-p {self.args.ssh_port}"]
        cmd += launcher_args
        exports = []
        for k, v in self.exports.items():
            exports += ["-x", f"{k}={v}"]
        return cmd + exports + self._python_exec() + [self.user_script] + self.user_arguments


class MPICHRunner(MultiNodeRunner):
    """MPICH's ``mpirun`` (Hydra): ``-ppn`` ranks per host, ``-genv`` exports, ``-hosts`` list;
    each rank runs ``deepspeed.launcher.launcher_helper``, which turns PMI variables into
    RANK/LOCAL_RANK and runs the script."""

    def __init__(self, args, world_info_base64, resource_pool):
        super().__init__(args, world_info_base64)
        self.resource_pool = resource_pool

    def backend_exists(self):
        return shutil.which("mpirun")

    @property
    def name(self) -> str:
        return "mpich"

    def validate_args(self) -> None:
        self._refuse_filters()

    def _genv_rendezvous(self, total: int, per_node: int, pair) -> list[str]:
        out = []
        for k, v in self.exports.items():
            out += pair(k, v)
        out += ["-genv", "MASTER_ADDR", str(self.args.master_addr)]
        out += ["-genv", "MASTER_PORT", str(self.args.master_port)]
        out += ["-genv", "WORLD_SIZE", str(total)]
        out += ["-genv", "LOCAL_SIZE", str(per_node)]
        return out

    def get_cmd(self, environment, active_resources):
        total, per_node = _same_slots_per_node(self.resource_pool, "MPICH")
        cmd = ["mpirun", "-n", f"{total}", "-ppn", f"{per_node}"] + split(self.args.launcher_args)
        cmd += self._genv_rendezvous(total, per_node, lambda k, v: ["-genv", f"{k}={v}"])
        cmd += ["-hosts", ",".join(self.resource_pool.keys())]
        helper = [sys.executable, "-u", "-m", "deepspeed.launcher.launcher_helper", "--launcher", self.args.launcher]
        if self.args.module:
            helper.append("--module")
        if self.args.no_python:
            helper.append("--no_python")
        if self.args.no_local_rank:
            helper.append("--no_local_rank")
        return cmd + helper + [self.user_script] + self.user_arguments


class IMPIRunner(MPICHRunner):
    """Intel MPI: one ``-n 1 -env RANK i -env LOCAL_RANK j`` section per rank, joined by ``:``;
    Intel MPI's own pinning is off (``I_MPI_PIN=0``) so ``--bind_cores_to_rank`` decides."""

    @property
    def name(self) -> str:
        return "impi"

    def get_cmd(self, environment, active_resources):
        total, per_node = _same_slots_per_node(self.resource_pool, "Intel MPI")
        cmd = ["mpirun", "-ppn", f"{per_node}"] + split(self.args.launcher_args)
        exports: list[str] = []
        for k, v in self.exports.items():
            exports += ["-genv", f"{k}", f"{v}"]
        if self.args.bind_cores_to_rank:
            cores_per_rank, _ = get_numactl_cmd(self.args.bind_core_list, per_node, 0)
            exports += ["-genv", "OMP_NUM_THREADS", str(cores_per_rank)]
        exports += ["-genv", "MASTER_ADDR", str(self.args.master_addr)]
        exports += ["-genv", "MASTER_PORT", str(self.args.master_port)]
        exports += ["-genv", "WORLD_SIZE", str(total)]
        exports += ["-genv", "LOCAL_SIZE", str(per_node)]
        exports += ["-genv", "I_MPI_PIN", "0"]
        exports += ["-hosts", ",".join(self.resource_pool.keys())]
        sections: list[str] = []
        for rank in range(total):
            local_rank = rank % per_node
            prog = []
            if self.args.bind_cores_to_rank:
                prog += get_numactl_cmd(self.args.bind_core_list, per_node, local_rank)[1]
            prog += self._python_exec() + [self.user_script]
            section = ["-n", "1", "-env", "RANK", str(rank), "-env", "LOCAL_RANK", str(local_rank)]
            sections += ([":"] if rank else []) + section + prog + self.user_arguments
        return cmd + exports + sections


class SlurmRunner(MultiNodeRunner):
    """``srun -n <ranks>``: Slurm places the ranks; include/exclude/num_nodes/num_gpus become
    srun's own options and exports go in ``--export=ALL,K=V``."""

    def __init__(self, args, world_info_base64, resource_pool):
        super().__init__(args, world_info_base64)
        self.resource_pool = resource_pool

    def backend_exists(self):
        return shutil.which("sinfo")

    @property
    def name(self) -> str:
        return "slurm"

    def get_cmd(self, environment, active_resources):
        total = sum(self.resource_pool.values())
        cmd = ["srun", "-n", f"{total}"] + split(self.args.launcher_args)
        if getattr(self.args, "comment", ""):
            cmd += ["--comment", self.args.comment]
        if getattr(self.args, "account", ""):
            cmd += ["--account", self.args.account]
        if self.args.include != "":
            cmd += ["--include", f"{self.args.include}"]
        if self.args.exclude != "":
            cmd += ["--exclude", f"{self.args.exclude}"]
        if self.args.num_nodes > 0:
            cmd += ["--nodes", f"{self.args.num_nodes}"]
        if self.args.num_gpus > 0:
            cmd += ["--gpus", f"{self.args.num_gpus}"]
        exports = "--export=ALL" + "".join(f",{k}={v}" for k, v in self.exports.items())
        return cmd + [exports] + self._python_exec() + [self.user_script] + self.user_arguments


class MVAPICHRunner(MultiNodeRunner):
    """MVAPICH2-GDR's ``mpirun``: hosts from a written hostfile, ``-env`` exports, and the MV2
    settings deep-learning jobs need."""

    def __init__(self, args, world_info_base64, resource_pool):
        super().__init__(args, world_info_base64)
        self.resource_pool = resource_pool
        self.add_export("MV2_SMP_USE_CMA", "0")  # CMA is not available on every kernel
        self.add_export("MV2_DEBUG_SHOW_BACKTRACE", "1")
        from deepspeed.accelerator import get_accelerator

        # Note: device-aware MPI settings (MV2_USE_CUDA for CUDA) come from the accelerator.
        for key, value in get_accelerator().mpi_envs("mvapich").items():
            self.add_export(key, value)
        self.add_export("MV2_SUPPORT_DL", "1")
        self.add_export("MV2_ENABLE_AFFINITY", "0")
        self.add_export("MV2_INTER_ALLGATHER_TUNING", "5")
        self.add_export("MV2_CUDA_USE_NAIVE", "0")

    def backend_exists(self):
        if not shutil.which("mpiname"):
            warnings.warn("mpiname does not exist, mvapich is not installed properly")
            return False
        out = subprocess.check_output(["mpiname"]).decode("utf-8").strip()
        if "MVAPICH2-GDR" not in out:
            warnings.warn(f"Expected MVAPICH2-GDR as return for mpiname but received {out}")
            return False
        return True

    @property
    def name(self) -> str:
        return "mvapich"

    def validate_args(self) -> None:
        self._refuse_filters()

    def get_cmd(self, environment, active_resources):
        total, per_node = _same_slots_per_node(self.resource_pool, "mvapich")
        with open(MVAPICH_TMP_HOSTFILE, "w") as fd:
            fd.writelines(f"{host}\n" for host in self.resource_pool.keys())
        cmd = ["mpirun", "-np", f"{total}", "-ppn", f"{per_node}", "--hostfile", f"{MVAPICH_TMP_HOSTFILE}"]
        cmd += split(self.args.launcher_args)
        exports = []
        for k, v in self.exports.items():
            exports += ["-env", f"{k}={v}"]
        return cmd + exports + self._python_exec() + [self.user_script] + self.user_arguments
