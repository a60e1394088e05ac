"""The ``deepspeed`` command end to end: real rank processes on this machine (CPU, gloo)."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

RUNNER = [sys.executable, "-m", "deepspeed.launcher.runner"]

SCRIPT = textwrap.dedent(
    """
    import argparse, json, os, sys, time

    parser = argparse.ArgumentParser()
    parser.add_argument("--local_rank", type=int, default=-1)
    parser.add_argument("--mode", default="allreduce")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    env = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE",
                                          "MASTER_ADDR", "MASTER_PORT", "CROSS_RANK", "CROSS_SIZE")}
    rank = int(env["RANK"])
    if args.mode == "allreduce":
        import torch
        import torch.distributed as dist
        dist.init_process_group("gloo")
        t = torch.tensor([float(rank + 1)])
        dist.all_reduce(t)
        env["sum"] = t.item()
        dist.destroy_process_group()
    elif args.mode == "fail":
        if rank == 1:
            time.sleep(1)
            sys.exit(3)
        time.sleep(120)
    elif args.mode == "sleep":
        import signal
        def on_int(signum, frame):
            with open(os.path.join(args.out, f"sig{rank}"), "w") as f:
                f.write(str(signum))
            sys.exit(0)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_int)
        with open(os.path.join(args.out, f"ready{rank}.tmp"), "w") as f:
            f.write(str(os.getpid()))
        os.replace(os.path.join(args.out, f"ready{rank}.tmp"), os.path.join(args.out, f"ready{rank}"))
        time.sleep(120)
    env["local_rank_arg"] = args.local_rank
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump(env, f)
    print(f"hello from rank {rank}", flush=True)
    """
)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(SCRIPT)
    return path


def _run(args, tmp_path, timeout=120):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("OMP_NUM_THREADS", None)
    return subprocess.run(RUNNER + ["-H", str(tmp_path / "no_hostfile"), "--master_port", str(_free_port())] + args,
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def test_num_gpus_two_runs_two_cpu_ranks(script, tmp_path):
    proc = _run(["--num_gpus", "2", str(script), "--out", str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, info in enumerate(infos):
        assert info["RANK"] == str(r) and info["LOCAL_RANK"] == str(r) and info["local_rank_arg"] == r
        assert info["WORLD_SIZE"] == "2" and info["LOCAL_SIZE"] == "2" and info["MASTER_ADDR"] == "127.0.0.1"
        assert info["CROSS_RANK"] == "0" and info["CROSS_SIZE"] == "1"
        assert info["sum"] == 3.0  # 1 + 2 over gloo
    assert "hello from rank 1" in proc.stdout


def test_include_localhost_slots_and_no_local_rank(script, tmp_path):
    proc = _run(["--include", "localhost:1", "--no_local_rank", str(script), "--out", str(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    info = json.loads((tmp_path / "rank0.json").read_text())
    assert info["WORLD_SIZE"] == "1" and info["local_rank_arg"] == -1
    assert not (tmp_path / "rank1.json").exists()


def test_rank_failure_stops_others_with_its_code(script, tmp_path):
    start = time.monotonic()
    proc = _run(["--num_gpus", "2", str(script), "--mode", "fail", "--out", str(tmp_path)], tmp_path)
    elapsed = time.monotonic() - start
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert elapsed < 30, f"launcher took {elapsed:.1f}s to stop after a rank died"
    assert "rank 1" in proc.stdout and "exited with code 3" in proc.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_reaches_every_rank(script, tmp_path, sig):
    """SIGINT (Ctrl-C), SIGTERM (a scheduler) and SIGHUP (a closed terminal or ssh session) sent to
    the ``deepspeed`` command alone reach every rank; the command exits 128+signal and no rank
    outlives it. (Before the fix SIGHUP killed the command and left both ranks running.)"""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = RUNNER + ["-H", str(tmp_path / "none"), "--master_port", str(_free_port()), "--num_gpus", "2",
                    str(script), "--mode", "sleep", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready{r}").exists() for r in range(2)):
            assert time.monotonic() < deadline, "ranks did not start"
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        pids = [int((tmp_path / f"ready{r}").read_text()) for r in range(2)]
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
        out = proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    for r in range(2):
        assert (tmp_path / f"sig{r}").read_text() == str(int(sig))
    assert code == 128 + sig
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "a rank outlived the launcher"
    # each rank's own pid is logged (not the launcher's twice)
    for p in pids:
        assert f"process {p} spawned with command" in out, out


def test_launcher_error_is_one_line(script, tmp_path):
    """An error of the launcher itself is one line on stderr, exit code 1; the traceback only with
    DS_LAUNCHER_DEBUG=1."""
    env = dict(os.environ, DS_ACCELERATOR="no_such_accelerator")
    env.pop("DS_LAUNCHER_DEBUG", None)
    cmd = RUNNER + ["-H", str(tmp_path / "none"), "--num_gpus", "2", str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("deepspeed: error: DS_ACCELERATOR=no_such_accelerator: no accelerator named")
    assert lines[0].endswith("(set DS_LAUNCHER_DEBUG=1 for the traceback)")
    debug = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(env, DS_LAUNCHER_DEBUG="1"),
                           cwd=tmp_path)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_each_rank_log(script, tmp_path):
    logs = tmp_path / "logs"
    proc = _run(["--num_gpus", "2", "--enable_each_rank_log", str(logs), str(script), "--out", str(tmp_path),
                 "--mode", "print"],
                tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(os.listdir(logs))
    assert [f.rsplit("_", 1)[1] for f in files] == ["rank0.log", "rank1.log"]
    assert "hello from rank 1" in (logs / files[1]).read_text()


def test_include_with_num_gpus_is_refused(script, tmp_path):
    proc = _run(["--num_gpus", "2", "--include", "localhost:0", str(script)], tmp_path)
    assert proc.returncode != 0
    assert "Cannot specify num_nodes/gpus with include/exclude" in proc.stderr


def test_num_nodes_without_hostfile_is_refused(script, tmp_path):
    proc = _run(["--num_nodes", "2", str(script)], tmp_path)
    assert "Num nodes is >1 but no extra nodes available via hostfile" in proc.stderr


def test_unknown_launcher_with_force_multi(script, tmp_path):
    proc = _run(["--force_multi", "--launcher", "torque", str(script)], tmp_path)
    assert "Unknown launcher torque" in proc.stderr


def test_module_flag(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "job.py").write_text("import os\nprint('module rank', os.environ['RANK'], flush=True)\n")
    proc = _run(["--num_gpus", "1", "--no_local_rank", "--module", "mypkg.job"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "module rank 0" in proc.stdout
