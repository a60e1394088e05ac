"""ZeRO training throughput and peak RSS per rank: ds-zero vs the PyPI ``deepspeed`` release.

The tiny GPT of bench/tiny_gpt.py (4 layers, hidden 256, vocab 1000, seq 128, micro-batch 4,
Adam lr 1e-4) on 2 gloo ranks, one intra-op thread per rank, at stages 0-3 and stages 2/3 with
optimizer (and, at 3, parameter) offload to the CPU. Stage 0 also runs PyTorch's own data
parallelism (DDP, fused AdamW) and a no-communication floor (each rank trains alone, fused AdamW):
no data-parallel implementation can beat the floor on this machine, so it bounds what stage 0 can
reach. Every measurement is a fresh pair of
processes running one configuration, so peak RSS (``ru_maxrss``) belongs to that run alone; the
two implementations alternate run by run (the order flips every round, since this machine is
noisy). The same worker code runs in both: ``import deepspeed`` resolves to this project in our
venv and to ``deepspeed==0.19.8`` in the reference venv (see bench/_reference.py).

    python bench/zero.py --runs 3 --steps 6 --reference-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = {
    "stage0": {"stage": 0},
    "stage1": {"stage": 1},
    "stage2": {"stage": 2},
    "stage3": {"stage": 3},
    "stage2_offload": {"stage": 2, "offload_optimizer": {"device": "cpu"}},
    "stage3_offload": {"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}},
}


#: PyTorch-only contenders (run in our venv, stage 0 only): DDP, and no communication at all.
TORCH_IMPLS = ("torch-ddp", "floor")


# -- worker (runs in either venv) ------------------------------------------------------------------
def _rank(rank: int, world: int, port: int, name: str, steps: int, warmup: int, out_dir: str,
          mode: str = "deepspeed") -> None:
    import resource
    import time

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, HERE)
    import deepspeed
    from tiny_gpt import MICRO_BATCH, build_model, make_batch

    deepspeed.init_distributed(dist_backend="gloo")
    batches = [make_batch(s, rank) for s in range(steps)]
    if mode in TORCH_IMPLS:
        model = build_model()
        if mode == "torch-ddp":
            model = torch.nn.parallel.DistributedDataParallel(model)
        torch_opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

        def step(x, y):
            model(x, y).backward()
            torch_opt.step()
            torch_opt.zero_grad(set_to_none=True)
    else:
        zero = dict(CONFIGS[name])
        offload = "offload_optimizer" in zero
        opt = {"type": "Adam", "params": {"lr": 1e-4}}
        if not offload:
            opt["params"]["torch_adam"] = True  # Note: DeepSpeed's FusedAdam needs CUDA
        cfg = {"train_micro_batch_size_per_gpu": MICRO_BATCH, "steps_per_print": 10**9, "optimizer": opt,
               "zero_optimization": zero, "wall_clock_breakdown": False}
        engine, *_ = deepspeed.initialize(model=build_model(), config=cfg)

        def step(x, y):
            loss = engine(x, y)
            engine.backward(loss)
            engine.step()

    for s in range(warmup):
        step(*batches[s % steps])
    torch.distributed.barrier()
    t0 = time.perf_counter()
    for s in range(steps):
        step(*batches[s])
    torch.distributed.barrier()
    elapsed = time.perf_counter() - t0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"samples_per_s": steps * MICRO_BATCH * world / elapsed, "peak_rss_mib": rss_mib,
                   "deepspeed": deepspeed.__version__}, f)
    # Note: without this, gloo's threads may still be alive at interpreter exit ("terminate called
    # without an active exception", SIGABRT) in either implementation.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _worker(name: str, steps: int, warmup: int, out_dir: str, mode: str) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank, args=(2, port, name, steps, warmup, out_dir, mode), nprocs=2, start_method="spawn")


# -- driver --------------------------------------------------------------------------------------------
def _run(python: str, name: str, steps: int, warmup: int, env: dict, mode: str = "deepspeed") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [python, os.path.abspath(__file__), "--worker", name, "--steps", str(steps), "--warmup", str(warmup),
               "--out-dir", tmp, "--mode", mode]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        files = [os.path.join(tmp, f"rank{r}.json") for r in range(2)]
        if not all(os.path.exists(f) for f in files):  # a crash at exit after both ranks reported still counts
            return {"error": (proc.stderr or proc.stdout)[-2000:]}
        ranks = [json.load(open(f)) for f in files]
    return {"samples_per_s": ranks[0]["samples_per_s"], "peak_rss_mib": max(r["peak_rss_mib"] for r in ranks),
            "version": ranks[0]["deepspeed"]}


def _reference_env(python: str) -> dict:
    env = dict(os.environ, DS_ACCELERATOR="cpu", DS_BUILD_OPS="0")
    env.pop("PYTHONPATH", None)
    venv = os.path.dirname(os.path.dirname(python))
    ext = os.path.join(os.path.dirname(venv), "ext")
    env.setdefault("TORCH_EXTENSIONS_DIR", ext if os.path.isdir(ext) else os.path.join(venv, "torch_extensions"))
    return env


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each implementation per configuration (>= 3)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--reference-python", default=os.environ.get("DS_REFERENCE_PYTHON"),
                    help="python of a venv with deepspeed==0.19.8 (bench/_reference.py --ensure makes one); "
                         "without it only ds-zero runs")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "zero.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="deepspeed", help=argparse.SUPPRESS)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch DDP and no-communication runs at stage 0")
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.steps, args.warmup, args.out_dir, args.mode)
        return {}

    impls = {"ours": (sys.executable, dict(os.environ), "deepspeed")}
    if args.reference_python:
        impls["deepspeed"] = (args.reference_python, _reference_env(args.reference_python), "deepspeed")
    if not args.no_torch:
        for mode in TORCH_IMPLS:
            impls[mode] = (sys.executable, dict(os.environ), mode)
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"--configs: unknown {unknown}; choose from {list(CONFIGS)}")
    def applies(impl: str, name: str) -> bool:
        return impl not in TORCH_IMPLS or name == "stage0"

    runs: dict = {n: {i: [] for i in impls if applies(i, n)} for n in names}
    for r in range(args.runs):
        order = list(impls) if r % 2 == 0 else list(reversed(impls))
        for name in names:
            for impl in order:
                if not applies(impl, name):
                    continue
                python, env, mode = impls[impl]
                res = _run(python, name, args.steps, args.warmup, env, mode)
                runs[name][impl].append(res)
                shown = res.get("error", "").splitlines()[-1:] if "error" in res else \
                    f"{res['samples_per_s']:7.2f} samples/s  peak RSS {res['peak_rss_mib']:6.0f} MiB"
                print(f"run {r + 1}/{args.runs} {name:15s} {impl:9s} {shown}", flush=True)

    def med(values):
        return statistics.median(values) if values else float("nan")

    summary = {}
    print()
    main_impls = [i for i in impls if i not in TORCH_IMPLS]
    both = "deepspeed" in impls
    head = f"{'config':15s}" + "".join(f" {i + ' samples/s':>20s} {i + ' RSS MiB':>17s}" for i in main_impls)
    print(head + ("   speed ratio  RSS ratio" if both else ""))
    for name in names:
        row = {}
        for impl in runs[name]:
            ok = [x for x in runs[name][impl] if "error" not in x]
            row[impl] = {"samples_per_s": med([x["samples_per_s"] for x in ok]),
                         "peak_rss_mib": med([x["peak_rss_mib"] for x in ok]), "ok_runs": len(ok)}
        line = f"{name:15s}" + "".join(f" {row[i]['samples_per_s']:20.2f} {row[i]['peak_rss_mib']:17.0f}" for i in main_impls)
        if both:
            row["speed_ratio"] = row["ours"]["samples_per_s"] / row["deepspeed"]["samples_per_s"]
            row["rss_ratio"] = row["ours"]["peak_rss_mib"] / row["deepspeed"]["peak_rss_mib"]
            line += f"   {row['speed_ratio']:11.2f}  {row['rss_ratio']:9.2f}"
        summary[name] = row
        print(line)
        for impl in TORCH_IMPLS:
            if impl in row:
                extra = f"  (deepspeed / {impl}: {row['deepspeed']['samples_per_s'] / row[impl]['samples_per_s']:.2f})" if both else ""
                print(f"{'':15s} {impl + ' samples/s':>20s} {row[impl]['samples_per_s']:8.2f}   ours / {impl}: "
                      f"{row['ours']['samples_per_s'] / row[impl]['samples_per_s']:.2f}{extra}")
    report = {"benchmark": "tiny GPT (4x256, vocab 1000, seq 128, micro-batch 4), Adam, 2 gloo ranks, 1 thread each",
              "summary": summary, "runs": runs, "steps": args.steps, "warmup": args.warmup,
              "host": platform.node(), "python": platform.python_version()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
