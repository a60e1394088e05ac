"""Communication-efficient training: bytes on the wire per step and samples/s for ZeRO-3, MiCS and
the 1-bit optimizers (ours vs the PyPI ``deepspeed`` release where it runs on this machine).

The tiny GPT of bench/tiny_gpt.py on gloo ranks, one intra-op thread per rank. Bytes per step are
read from the comms logger of whichever ``deepspeed`` runs (both have ``comms_logger.comms_dict``:
``{op: {msg_size: [count, ...]}}``) over the timed steps, which start after the 1-bit optimizers'
warm-up (``freeze_step`` = warm-up steps), summed over ops as message bytes (the collective's whole
buffer) and as wire bytes (message bytes x the op's bus factor: 2(n-1)/n for all-reduce, (n-1)/n for
all-gather / reduce-scatter / all-to-all). Each measurement is a fresh set of processes; the two
implementations alternate run by run (order flipped every round); the table shows medians.

ZeRO++ (qwZ, hpZ, qgZ, LoCo) is not in the table: ds-zero refuses those keys (not implemented).

    python bench/comm_efficient.py --runs 3 --steps 6 --reference-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
WARMUP = 3

#: name -> (world size, zero_optimization, optimizer {type, params})
CONFIGS = {
    "adam": (2, {"stage": 0}, {"type": "Adam", "params": {"lr": 1e-4, "torch_adam": True}}),
    "onebit_adam": (2, {"stage": 0}, {"type": "OneBitAdam", "params": {"lr": 1e-4, "freeze_step": WARMUP}}),
    "zero_one_adam": (2, {"stage": 0}, {"type": "ZeroOneAdam", "params": {
        "lr": 1e-4, "var_freeze_step": WARMUP, "local_step_scaler": 2, "local_step_clipper": 4}}),
    "onebit_lamb": (2, {"stage": 0}, {"type": "OneBitLamb", "params": {"lr": 1e-3, "freeze_step": WARMUP}}),
    "stage3_4ranks": (4, {"stage": 3}, {"type": "Adam", "params": {"lr": 1e-4, "torch_adam": True}}),
    "mics2_4ranks": (4, {"stage": 3, "mics_shard_size": 2}, {"type": "Adam", "params": {"lr": 1e-4, "torch_adam": True}}),
}


def _bus(op: str, n: int) -> float:
    if "all_reduce" in op:
        return 2 * (n - 1) / n
    if op.startswith(("all_gather", "reduce_scatter", "all_to_all")):
        return (n - 1) / n
    return 1.0


# -- worker (runs in either venv) ------------------------------------------------------------------
def _rank(rank: int, world: int, port: int, name: str, steps: int, out_dir: str) -> None:
    import time

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, HERE)
    import deepspeed
    import deepspeed.comm as dist
    from tiny_gpt import MICRO_BATCH, build_model, make_batch

    deepspeed.init_distributed(dist_backend="gloo")
    _, zero, opt = CONFIGS[name]
    cfg = {"train_micro_batch_size_per_gpu": MICRO_BATCH, "steps_per_print": 10**9, "optimizer": opt,
           "zero_optimization": zero, "comms_logger": {"enabled": False}}
    engine, *_ = deepspeed.initialize(model=build_model(), config=cfg)
    batches = [make_batch(s, rank) for s in range(steps + WARMUP)]

    def step(x, y):
        loss = engine(x, y)
        engine.backward(loss)
        engine.step()
        return float(loss.detach())

    for s in range(WARMUP):
        step(*batches[s])
    # bytes: one pass of the timed steps with the logger on; time: the same steps with it off
    dist.configure(enabled=True, prof_all=True, prof_ops=[], verbose=False, debug=False)
    for s in range(WARMUP, WARMUP + steps):
        step(*batches[s])
    sizes = {op: {int(size): v[0] for size, v in d.items()} for op, d in dist.comms_logger.comms_dict.items()}
    dist.configure(enabled=False)
    torch.distributed.barrier()
    t0 = time.perf_counter()
    for s in range(WARMUP, WARMUP + steps):
        loss = step(*batches[s])
    torch.distributed.barrier()
    elapsed = time.perf_counter() - t0
    msg = sum(size * count for d in sizes.values() for size, count in d.items()) / steps
    wire = sum(size * count * _bus(op, world) for op, d in sizes.items() for size, count in d.items()) / steps
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"samples_per_s": steps * MICRO_BATCH * world / elapsed, "msg_bytes": msg, "wire_bytes": wire,
                   "loss": loss, "deepspeed": deepspeed.__version__}, f)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _worker(name: str, steps: int, out_dir: str) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world = CONFIGS[name][0]
    mp.start_processes(_rank, args=(world, port, name, steps, out_dir), nprocs=world, start_method="spawn")


# -- driver --------------------------------------------------------------------------------------------
def _run(python: str, name: str, steps: int, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [python, os.path.abspath(__file__), "--worker", name, "--steps", str(steps), "--out-dir", tmp]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return {"error": "timed out after 900 s"}
        path = os.path.join(tmp, "rank0.json")
        if not os.path.exists(path):
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if "Error" in ln or "error" in ln]
            return {"error": (lines[-1] if lines else (proc.stderr or proc.stdout)[-300:]).strip()}
        return json.load(open(path))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per run (after the warm-up)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--reference-python", default=os.environ.get("DS_REFERENCE_PYTHON"),
                    help="python of a venv with deepspeed==0.19.8 (bench/_reference.py --ensure); without it only ours")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "comm_efficient.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.steps, args.out_dir)
        return {}
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"--configs: unknown {unknown}; choose from {list(CONFIGS)}")
    impls = {"ours": (sys.executable, dict(os.environ))}
    if args.reference_python:
        env = dict(os.environ, DS_ACCELERATOR="cpu", DS_BUILD_OPS="0")
        env.pop("PYTHONPATH", None)
        impls["deepspeed"] = (args.reference_python, env)
    runs = {n: {i: [] for i in impls} for n in names}
    for r in range(args.runs):
        order = list(impls) if r % 2 == 0 else list(reversed(impls))
        for name in names:
            for impl in order:
                res = _run(*impls[impl][:1], name, args.steps, impls[impl][1])
                runs[name][impl].append(res)
                shown = res["error"] if "error" in res else (
                    f"{res['samples_per_s']:7.2f} samples/s  {res['msg_bytes'] / 2**20:8.3f} MiB/step msg  "
                    f"{res['wire_bytes'] / 2**20:8.3f} MiB/step wire")
                print(f"run {r + 1}/{args.runs} {name:14s} {impl:9s} {shown}", flush=True)
    summary = {}
    print(f"\n{'config':14s} {'impl':9s} {'samples/s':>10s} {'MiB/step msg':>13s} {'MiB/step wire':>14s}")
    for name in names:
        for impl in impls:
            ok = [x for x in runs[name][impl] if "error" not in x]
            if not ok:
                summary.setdefault(name, {})[impl] = {"error": runs[name][impl][-1]["error"]}
                print(f"{name:14s} {impl:9s} fails: {runs[name][impl][-1]['error'][:100]}")
                continue
            row = {k: statistics.median(x[k] for x in ok) for k in ("samples_per_s", "msg_bytes", "wire_bytes")}
            row["ok_runs"] = len(ok)
            summary.setdefault(name, {})[impl] = row
            print(f"{name:14s} {impl:9s} {row['samples_per_s']:10.2f} {row['msg_bytes'] / 2**20:13.3f} "
                  f"{row['wire_bytes'] / 2**20:14.3f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"steps": args.steps, "runs": args.runs, "summary": summary, "raw": runs}, f, indent=1)
    os.replace(tmp, args.out)
    return summary


if __name__ == "__main__":
    main()
