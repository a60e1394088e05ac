"""ds-aio's swapping, tools and DeepSpeed paths, on ds-ops-cpu's async_io op (the test extra)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch

from deepspeed.io.optimizer_swapper import OptimizerStateSwapper
from deepspeed.io.swap import SwapFolder, TensorSwapper, aio_settings


def test_deepspeed_paths_and_gds_refusal():
    from deepspeed.io.gds import gds_handle
    from deepspeed.ops.aio import AsyncIOBuilder

    h = AsyncIOBuilder().load().aio_handle(1 << 20, 8, False, True, 2)
    assert h.get_intra_op_parallelism() == 2
    with pytest.raises(RuntimeError, match="GDS .* needs a device ops package that provides the 'gds' op"):
        gds_handle()


def test_aio_settings_from_config():
    assert aio_settings({"block_size": 4096, "thread_count": 3, "use_gds": False}) == {
        "block_size": 4096, "queue_depth": 8, "intra_op_parallelism": 3, "single_submit": False,
        "overlap_events": True}


def test_tensor_swapper_round_trip_and_cleanup(tmp_path):
    folder = SwapFolder(tmp_path, tag="t")
    sw = TensorSwapper(folder, {"block_size": 65536}, buffer_count=2)
    ts = {f"k{i}": torch.randn(n) for i, n in enumerate((1, 1000, 65536 * 3 + 5))}
    for k, t in ts.items():
        sw.swap_out(k, t, async_op=True)
    assert sw.wait() == 3
    assert sorted(os.listdir(folder.path)) == ["k0.swp", "k1.swp", "k2.swp"]
    for k, t in ts.items():
        back = sw.swap_in(k)
        assert torch.equal(back, t) and back.data_ptr() % 4096 == 0
        sw.release(back)
    with pytest.raises(KeyError, match="nothing was swapped out under that name"):
        sw.swap_in("nope")
    sw.close()
    assert not os.path.exists(folder.path) and os.listdir(tmp_path) == []


def test_failed_write_is_reported_and_never_read_back(tmp_path):
    """A write that runs out of space (RLIMIT_FSIZE: EFBIG part-way, as a full disk would)."""
    sw = TensorSwapper(SwapFolder(tmp_path), {"block_size": 1 << 16})
    big = torch.randn(1 << 20)  # 4 MiB
    sw.swap_out("w", big)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, old_limit[1]))
    try:
        with pytest.raises(RuntimeError, match=r"swap-out of 'w' failed: write to '.*w\.swp' failed at file offset "
                                               r"\d+: File too large"):
            sw.swap_out("w", big * 2)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    with pytest.raises(RuntimeError, match=r"swap file .*w\.swp is not a complete copy \(write to '.*w\.swp' failed"):
        sw.swap_in("w")
    sw.swap_out("w", big)  # rewriting makes it valid again
    assert torch.equal(sw.swap_in("w"), big)
    sw.close()


def test_swap_folder_refuses_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="nvme_path is not set"):
        SwapFolder(None)
    with pytest.raises(ValueError, match=f"nvme_path='{tmp_path / 'x'}' does not exist. Fix: create the folder"):
        SwapFolder(tmp_path / "x")


def test_optimizer_state_swapper_matches_plain_optimizer(tmp_path):
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(n)) for n in (1000, 5000, 77)]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    o1, o2 = DeepSpeedCPUAdam(ps, lr=1e-2), DeepSpeedCPUAdam(ref, lr=1e-2)
    sw = OptimizerStateSwapper(o1, tmp_path, pipeline_read=True, pipeline_write=True)
    for _ in range(5):
        for a, b in zip(ps, ref):
            g = torch.randn_like(a)
            a.grad, b.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    assert all(torch.equal(a, b) for a, b in zip(ps, ref))
    assert all(o1.state[p]["exp_avg"].numel() == 0 for p in ps)  # on disk between steps
    sd = o1.state_dict()  # a checkpoint holds the real values
    assert torch.equal(sd["state"][1]["exp_avg_sq"], o2.state[ref[1]]["exp_avg_sq"])
    assert all(o1.state[p]["exp_avg"].numel() == 0 for p in ps)
    folder = sw.folder.path
    assert len(os.listdir(folder)) == 6
    sw.close()
    assert not os.path.exists(folder)


def _cli(*args):
    return subprocess.run([sys.executable, "-c", "import sys; from deepspeed.nvme import " + args[0] +
                           " as m; sys.exit(m(sys.argv[1:]))", *args[1:]], capture_output=True, text=True)


def test_ds_io_and_ds_nvme_tune(tmp_path):
    r = _cli("ds_io_main", "--folder", str(tmp_path), "--io_size", "8M", "--read", "--validate", "--loops", "1",
             "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["op"] == "read" and out["GB/s"] > 0 and out["engine"] == "threadpool" and out["direct"] is True
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"block_size": [65536, 1048576], "queue_depth": [2], "io_parallel": [1]}))
    r = _cli("ds_nvme_tune_main", "--nvme_dir", str(tmp_path), "--io_size", "4M", "--loops", "1", "--sweep_config",
             str(sweep), "--log_dir", str(tmp_path / "log"))
    assert r.returncode == 0, r.stderr
    best = json.loads(r.stdout)["aio"]
    assert best["block_size"] in (65536, 1048576) and best["queue_depth"] == 2
    assert len((tmp_path / "log" / "ds_nvme_tune.jsonl").read_text().splitlines()) == 4
    assert sorted(os.listdir(tmp_path)) == ["log", "sweep.json"]  # no benchmark file left behind
    r = _cli("ds_io_main", "--folder", str(tmp_path / "missing"))
    assert r.returncode != 0 and "is not an existing folder" in r.stderr
