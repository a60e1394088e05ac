"""aio bench: GB/s of 1 GiB reads and writes through our aio handle (ds-ops-cpu's async_io op,
O_DIRECT thread pool) against ``dd`` with direct I/O (and ``fio`` when installed), alternated
within each round; then ZeRO-Infinity on 2 gloo ranks: stage 3 with the optimizer state on NVMe
vs CPU offload, samples/s and peak RSS per rank.

    python bench/aio.py [--folder DIR] [--size 1G] [--rounds 3] [--no-zero]
    nox -s bench_aio

DeepSpeed's own aio op (``deepspeed==0.19.8``) needs libaio-dev to build and is not compared here.
Writes bench/results/aio.json. Timings are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent


def _ours(folder, size, read, block_size=1 << 20, queue_depth=8, par=2):
    from deepspeed.nvme import run_io

    return run_io(folder, size, read, block_size, queue_depth, False, par, loops=1)["GB/s"]


def _dd(folder, size, read):
    path = os.path.join(folder, "dd_bench.bin")
    bs = 1 << 20
    count = size // bs
    try:
        subprocess.run(["dd", "if=/dev/urandom", f"of={path}", f"bs={bs}", f"count={count}", "oflag=direct"],
                       check=True, capture_output=True)
        if read:
            cmd = ["dd", f"if={path}", "of=/dev/null", f"bs={bs}", "iflag=direct"]
        else:
            cmd = ["dd", "if=/dev/zero", f"of={path}", f"bs={bs}", f"count={count}", "oflag=direct", "conv=notrunc"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return size / (time.perf_counter() - t0) / 1e9
    finally:
        if os.path.exists(path):
            os.unlink(path)


def _fio(folder, size, read):
    out = subprocess.run(["fio", "--name=b", f"--directory={folder}", f"--size={size}", "--bs=1M", "--direct=1",
                          "--iodepth=8", "--ioengine=psync", "--numjobs=1", f"--rw={'read' if read else 'write'}",
                          "--output-format=json"], check=True, capture_output=True, text=True).stdout
    job = json.loads(out)["jobs"][0]["read" if read else "write"]
    for f in pathlib.Path(folder).glob("b.*"):
        f.unlink()
    return job["bw_bytes"] / 1e9


def io_table(folder, size, rounds):
    contenders = {"ours (threadpool, bs=1M qd=8 par=2)": _ours, "dd direct (bs=1M)": _dd}
    if shutil.which("fio"):
        contenders["fio direct psync"] = _fio
    res = {name: {"read": [], "write": []} for name in contenders}
    for _ in range(rounds):
        for op in ("write", "read"):
            for name, fn in contenders.items():
                res[name][op].append(fn(folder, size, op == "read"))
    return {name: {op: {"median": statistics.median(v), "best": max(v), "all": v} for op, v in ops.items()}
            for name, ops in res.items()}


def _zero_body(device, folder, width, depth, steps):
    import resource

    import torch

    import deepspeed

    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    model = torch.nn.Sequential(*layers)
    off = {"device": device}
    if device == "nvme":
        off.update(nvme_path=folder, pipeline_read=True, pipeline_write=True)
    cfg = {"train_micro_batch_size_per_gpu": 8, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
           "aio": {"block_size": 1048576, "queue_depth": 8, "intra_op_parallelism": 2},
           "zero_optimization": {"stage": 3, "offload_optimizer": off, "offload_param": {"device": "cpu"},
                                 "sub_group_size": width * width}}
    engine, _, _, _ = deepspeed.initialize(model=model, config=cfg)
    x = torch.randn(8, width)
    t0 = None
    for s in range(steps):
        if s == 2:
            t0 = time.perf_counter()
        loss = engine(x).square().mean()
        engine.backward(loss)
        engine.step()
    dt = time.perf_counter() - t0
    return {"samples_per_s": 8 * 2 * (steps - 2) / dt,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "loss": float(loss.detach())}


def zero_run(device, folder, width, depth, steps):
    """Both ranks in fresh processes (their peak RSS is their own)."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import aio; "
            "from deepspeed.testing.distributed import run_distributed; "
            "print(json.dumps(run_distributed(aio._zero_body, world_size=2, args=(sys.argv[2], sys.argv[3], "
            "int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])), timeout=900)))")
    proc = subprocess.run([sys.executable, "-c", code, str(HERE), device, folder, str(width), str(depth), str(steps)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ZeRO-Infinity run ({device}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--folder", default=None, help="a folder on the disk to test (default: a temp dir under bench/)")
    p.add_argument("--size", default="1G")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-zero", action="store_true")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--steps", type=int, default=8)
    a = p.parse_args(argv)
    from deepspeed.nvme import parse_size

    size = parse_size(a.size)
    folder = tempfile.mkdtemp(prefix="aio_bench_", dir=a.folder or str(HERE))
    try:
        fs = subprocess.run(["stat", "-f", "-c", "%T", folder], capture_output=True, text=True).stdout.strip()
        t0 = time.perf_counter()
        from deepspeed.ops.op_builder import AsyncIOBuilder

        AsyncIOBuilder().load()
        results = {"filesystem": fs, "size": size, "op_load_s": time.perf_counter() - t0,
                   "io": io_table(folder, size, a.rounds)}
        print(f"filesystem {fs}; {size / 2**30:.2f} GiB; op load {results['op_load_s']:.1f}s")
        print(f"{'contender':40s} {'read GB/s (med/best)':>22s} {'write GB/s (med/best)':>22s}")
        for name, ops in results["io"].items():
            print(f"{name:40s} {ops['read']['median']:>10.2f}/{ops['read']['best']:<10.2f}  "
                  f"{ops['write']['median']:>10.2f}/{ops['write']['best']:<10.2f}")
        if not a.no_zero:
            params = a.depth * (a.width * a.width + a.width)
            z = {dev: zero_run(dev, folder, a.width, a.depth, a.steps) for dev in ("cpu", "nvme")}
            results["zero_infinity"] = {"params": params, **z}
            print(f"ZeRO-3 {params / 1e6:.1f}M params, 2 ranks, offload_param=cpu:")
            for dev, ranks in z.items():
                rss = ", ".join(f"{r['peak_rss_mb']:.0f}" for r in ranks)
                print(f"  offload_optimizer={dev:4s}: samples/s {ranks[0]['samples_per_s']:.1f}, peak RSS per rank "
                      f"{rss} MB, final loss {ranks[0]['loss']:.6g}")
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        (out / "aio.json").write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
