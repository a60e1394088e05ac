"""The command line each multi-node backend generates, compared word for word."""

import collections
import os
import sys

import pytest

from deepspeed.launcher import multinode_runner as mnr
from deepspeed.launcher.constants import MVAPICH_TMP_HOSTFILE
from deepspeed.launcher.runner import deepspeed_env_exports, encode_world_info, parse_args

POOL = collections.OrderedDict([("worker-0", 2), ("worker-1", 2)])
ACTIVE = collections.OrderedDict([("worker-0", [0, 1]), ("worker-1", [0, 1])])
PY = [sys.executable, "-u"]


def _args(*extra):
    return parse_args(["--master_addr", "10.0.0.1", "--master_port", "29600", *extra,
                       "train.py", "--lr", "0.1", "a b"])


def test_pdsh_command_and_kill_command():
    args = _args("--launcher_args", "-R ssh", "--no_local_rank")
    info = encode_world_info(ACTIVE)
    runner = mnr.PDSHRunner(args, info)
    runner.add_export("NCCL_DEBUG", "INFO")
    env = {}
    cmd, kill, env_out = runner.get_cmd(env, ACTIVE)
    pdsh = ["pdsh", "-S", "-f", "1024", "-w", "worker-0,worker-1", "-R", "ssh"]
    assert cmd == pdsh + [
        "export NCCL_DEBUG=INFO; ", f"cd {os.path.abspath('.')};", *PY, "-m", "deepspeed.launcher.launch",
        f"--world_info={info}", "--node_rank=%n", "--master_addr=10.0.0.1", "--master_port=29600",
        "--no_local_rank", "train.py", "--lr", "0.1", '"a b"']
    assert kill == pdsh + ["pkill -f ", f"{sys.executable} -u -m deepspeed.launcher.launch"]
    assert env_out["PDSH_RCMD_TYPE"] == "ssh"


def test_pdsh_ssh_port():
    args = _args("--ssh_port", "2222")
    _, _, env = mnr.PDSHRunner(args, "x").get_cmd({"PDSH_SSH_ARGS_APPEND": "-q"}, ACTIVE)
    assert env["PDSH_SSH_ARGS_APPEND"] == "-q -p 2222"


def test_openmpi_command():
    args = _args("--hostfile", "/job/hf", "--launcher", "openmpi", "--launcher_args=--oversubscribe")
    runner = mnr.OpenMPIRunner(args, "x", POOL)
    runner.add_export("NCCL_IB_DISABLE", "1")
    assert runner.get_cmd({}, ACTIVE) == [
        "mpirun", "-n", "4", "-hostfile", "/job/hf", "--mca", "btl", "^openib",
        "--mca", "btl_tcp_if_include", "eth0", "--oversubscribe",
        "-x", "UCX_TLS=tcp", "-x", "NCCL_IB_DISABLE=1", *PY, "train.py", "--lr", "0.1", "a b"]


@pytest.mark.parametrize("user, defaults", [
    ("--mca btl_tcp_if_include ib0", ["--mca", "btl", "^openib"]),
    ("-mca btl_tcp_if_include 10.0.0.0/24", ["--mca", "btl", "^openib"]),
    ("--mca btl_tcp_if_exclude lo,docker0", ["--mca", "btl", "^openib"]),
    ("--mca btl self,tcp", ["--mca", "btl_tcp_if_include", "eth0"]),
])
def test_openmpi_user_mca_wins_over_defaults(user, defaults):
    # What a user on a host whose interface is not eth0 types: the default must not be added too.
    args = parse_args(["--hostfile", "/job/hf", "--launcher", "openmpi", "--launcher_args", f"{user} --oversubscribe",
                       "--master_addr", "10.0.0.1", "train.py"])
    cmd = mnr.OpenMPIRunner(args, "x", POOL).get_cmd({}, ACTIVE)
    assert cmd == ["mpirun", "-n", "4", "-hostfile", "/job/hf", *defaults, *user.split(), "--oversubscribe",
                   "-x", "UCX_TLS=tcp", *PY, "train.py"]


def test_openmpi_module_and_no_python():
    runner = mnr.OpenMPIRunner(_args("--module"), "x", POOL)
    assert runner.get_cmd({}, ACTIVE)[-5:] == [*PY, "-m", "train.py", "--lr", "0.1", "a b"][-5:]
    assert "-m" in runner.get_cmd({}, ACTIVE)
    runner = mnr.OpenMPIRunner(_args("--no_python"), "x", POOL)
    assert sys.executable not in runner.get_cmd({}, ACTIVE)


@pytest.mark.parametrize("cls", [mnr.OpenMPIRunner, mnr.MPICHRunner, mnr.IMPIRunner, mnr.MVAPICHRunner])
@pytest.mark.parametrize("flag", [("--include", "worker-0"), ("--num_gpus", "1")])
def test_mpi_backends_refuse_filters(cls, flag):
    with pytest.raises(ValueError, match="backend does not support"):
        cls(_args(*flag), "x", POOL)


def test_mpich_command():
    args = _args("--launcher", "mpich")
    runner = mnr.MPICHRunner(args, "x", POOL)
    runner.add_export("PYTHONPATH", "/src")
    assert runner.get_cmd({}, ACTIVE) == [
        "mpirun", "-n", "4", "-ppn", "2", "-genv", "PYTHONPATH=/src",
        "-genv", "MASTER_ADDR", "10.0.0.1", "-genv", "MASTER_PORT", "29600",
        "-genv", "WORLD_SIZE", "4", "-genv", "LOCAL_SIZE", "2", "-hosts", "worker-0,worker-1",
        *PY, "-m", "deepspeed.launcher.launcher_helper", "--launcher", "mpich",
        "train.py", "--lr", "0.1", "a b"]


def test_mpich_needs_equal_slots():
    runner = mnr.MPICHRunner(_args(), "x", collections.OrderedDict([("a", 2), ("b", 1)]))
    with pytest.raises(ValueError, match="MPICH requires same number of devices per node"):
        runner.get_cmd({}, ACTIVE)


def test_impi_command_one_section_per_rank():
    args = _args("--launcher", "impi")
    runner = mnr.IMPIRunner(args, "x", POOL)
    cmd = runner.get_cmd({}, ACTIVE)
    head = ["mpirun", "-ppn", "2", "-genv", "MASTER_ADDR", "10.0.0.1", "-genv", "MASTER_PORT", "29600",
            "-genv", "WORLD_SIZE", "4", "-genv", "LOCAL_SIZE", "2", "-genv", "I_MPI_PIN", "0",
            "-hosts", "worker-0,worker-1"]
    assert cmd[:len(head)] == head
    sections = " ".join(cmd[len(head):]).split(" : ")
    assert len(sections) == 4
    for rank, section in enumerate(sections):
        assert section == (f"-n 1 -env RANK {rank} -env LOCAL_RANK {rank % 2} "
                           f"{sys.executable} -u train.py --lr 0.1 a b")


def test_slurm_command():
    args = _args("--launcher", "slurm", "--include", "worker-0", "--comment", "run1", "--launcher_args", "-p gpu")
    runner = mnr.SlurmRunner(args, "x", POOL)
    runner.add_export("NCCL_DEBUG", "WARN")
    runner.add_export("UCX_TLS", "tcp")
    assert runner.get_cmd({}, ACTIVE) == [
        "srun", "-n", "4", "-p", "gpu", "--comment", "run1", "--include", "worker-0",
        "--export=ALL,NCCL_DEBUG=WARN,UCX_TLS=tcp", *PY, "train.py", "--lr", "0.1", "a b"]
    args = _args("--launcher", "slurm", "--num_nodes", "2", "--num_gpus", "8")
    assert mnr.SlurmRunner(args, "x", POOL).get_cmd({}, ACTIVE)[:7] == [
        "srun", "-n", "4", "--nodes", "2", "--gpus", "8"]


def test_mvapich_command_writes_hostfile():
    runner = mnr.MVAPICHRunner(_args("--launcher", "mvapich"), "x", POOL)
    cmd = runner.get_cmd({}, ACTIVE)
    assert cmd[:8] == ["mpirun", "-np", "4", "-ppn", "2", "--hostfile", MVAPICH_TMP_HOSTFILE, "-env"]
    assert "MV2_SUPPORT_DL=1" in cmd and "MV2_SMP_USE_CMA=0" in cmd
    assert cmd[-5:] == [*PY, "train.py", "--lr", "0.1", "a b"][-5:]
    with open(MVAPICH_TMP_HOSTFILE) as fd:
        assert fd.read() == "worker-0\nworker-1\n"


def test_deepspeed_env_file_exported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / ".deepspeed_env").write_text("# comment\nFOO=bar\nNCCL_DEBUG=INFO\nURL=a=b\n")
    exports = deepspeed_env_exports({"NCCL_DEBUG": "WARN", "PYTHONPATH": "/x", "HOME": "/h", "OMP_NUM_THREADS": "4"})
    # prefixed variables of the environment, then the file's lines (the file wins)
    assert exports["FOO"] == "bar" and exports["URL"] == "a=b" and exports["NCCL_DEBUG"] == "INFO"
    assert exports["PYTHONPATH"] == "/x" and "HOME" not in exports
    # the CPU accelerator's export prefixes (OMP_, KMP_...) travel too
    assert exports["OMP_NUM_THREADS"] == "4"


def test_ds_env_file_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    custom = tmp_path / "my.env"
    custom.write_text("ONLY=here\n")
    monkeypatch.setenv("DS_ENV_FILE", str(custom))
    assert deepspeed_env_exports({})["ONLY"] == "here"
    custom.write_text("no equals sign\n")
    with pytest.raises(ValueError, match="every line must be KEY=VALUE"):
        deepspeed_env_exports({})


def test_environment_name_constant():
    from deepspeed.launcher import runner

    assert runner.DEEPSPEED_ENVIRONMENT_NAME == os.getenv("DS_ENV_FILE", ".deepspeed_env")


def test_core_binding_split():
    from deepspeed.launcher.core_binding import cores_for_rank, get_numactl_cmd, parse_core_list

    assert parse_core_list("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    assert cores_for_rank("0-7", 2, 1) == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="1 core\\(s\\) cannot be split between 2 local ranks"):
        cores_for_rank("3", 2, 0)
    with pytest.raises(ValueError, match="'x' is not a core number or range"):
        parse_core_list("0,x")
    import shutil

    if shutil.which("numactl") is None and shutil.which("taskset") is None:
        pytest.skip("neither numactl nor taskset is installed")
    count, prefix = get_numactl_cmd("0-3,8-11", 2, 1)
    assert count == 4 and prefix[-1] == "8-11" and prefix[0] in ("numactl", "taskset")


def test_impi_bind_cores_to_rank():
    import shutil

    if shutil.which("numactl") is None and shutil.which("taskset") is None:
        pytest.skip("neither numactl nor taskset is installed")
    runner = mnr.IMPIRunner(_args("--bind_cores_to_rank", "--bind_core_list", "0-7"), "x", POOL)
    cmd = " ".join(runner.get_cmd({}, ACTIVE))
    assert "-genv OMP_NUM_THREADS 4" in cmd
    assert "-env LOCAL_RANK 1 " in cmd and ("-C 4-7 " in cmd or "-c 4-7 " in cmd)


def test_launcher_helper_maps_mpi_variables():
    from deepspeed.launcher import launcher_helper

    env = launcher_helper.rank_env({"PMI_RANK": "3", "MPI_LOCALRANKID": "1", "PMI_SIZE": "4"})
    assert env == {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}
    args = launcher_helper.parse_args(["--launcher", "mpich", "--module", "pkg.train", "--lr", "1"])
    assert launcher_helper.build_command(args, "1") == [sys.executable, "-u", "-m", "pkg.train", "--local_rank=1",
                                                         "--lr", "1"]
    with pytest.raises(RuntimeError, match="found no MPI rank variable"):
        launcher_helper.rank_env({})
