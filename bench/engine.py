"""Training throughput of the DeepSpeed engine (stage 0) vs torch DDP on 2 gloo ranks.

Same model (bench/tiny_gpt.py), same data, same optimizer (torch Adam, lr 1e-4), one intra-op
thread per rank. Both live in the same two processes and runs alternate DDP / engine (the order
flips every round, since this machine is noisy); each run times ``--steps`` steps, after
``--warmup`` untimed steps of each. Prints a table of medians and writes JSON.

    python bench/engine.py --runs 15 --steps 4 --out bench/results/engine.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _session(rounds: int, steps: int, warmup: int, bucket: int | None) -> dict[str, list[float]]:
    """One rank's body: DDP and the engine side by side in the same processes, timed in
    alternating blocks of ``steps`` steps; returns samples/s (all ranks) of every block."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import deepspeed
    from tiny_gpt import MICRO_BATCH, build_model, make_batch

    rank, world = dist.get_rank(), dist.get_world_size()
    ddp = DDP(build_model())
    ddp_opt = torch.optim.Adam(ddp.parameters(), lr=1e-4)
    cfg = {"train_micro_batch_size_per_gpu": MICRO_BATCH, "steps_per_print": float("inf"),
           "optimizer": {"type": "Adam", "params": {"lr": 1e-4, "torch_adam": True, "adam_w_mode": False}}}
    if bucket:
        cfg["zero_optimization"] = {"stage": 0, "reduce_bucket_size": bucket}
    engine, *_ = deepspeed.initialize(model=build_model(), config=cfg)

    def ddp_step(x, y):
        loss = ddp(x, y)
        ddp_opt.zero_grad(set_to_none=True)
        loss.backward()
        ddp_opt.step()

    def engine_step(x, y):
        loss = engine(x, y)
        engine.backward(loss)
        engine.step()

    fns = {"ddp": ddp_step, "deepspeed": engine_step}
    batches = [make_batch(s, rank) for s in range(steps)]
    for fn in fns.values():
        for s in range(warmup):
            fn(*batches[s % steps])
    out: dict[str, list[float]] = {"ddp": [], "deepspeed": [], "ddp_cpu_s": [], "deepspeed_cpu_s": []}
    for r in range(rounds):
        for mode in (("ddp", "deepspeed") if r % 2 == 0 else ("deepspeed", "ddp")):
            fn = fns[mode]
            dist.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            for s in range(steps):
                fn(*batches[s])
            dist.barrier()
            out[mode].append(steps * MICRO_BATCH * world / (time.perf_counter() - t0))
            out[f"{mode}_cpu_s"].append((time.process_time() - c0) / steps)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="runs of each mode (>= 3 for a median)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--bucket", type=int, default=None,
                    help="engine reduce_bucket_size in elements (default: the engine default, 1M without ZeRO)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "engine.json"))
    args = ap.parse_args(argv)

    from deepspeed.testing.distributed import run_distributed

    per_rank = run_distributed(_session, world_size=2, args=(args.runs, args.steps, args.warmup, args.bucket),
                               timeout=1800)
    # every rank times the same barrier-delimited blocks; rank 0's numbers are the run's
    results = per_rank[0]
    for r in range(args.runs):
        print(f"run {r + 1}/{args.runs}  ddp {results['ddp'][r]:8.2f}  deepspeed {results['deepspeed'][r]:8.2f} "
              "samples/s", flush=True)
    med = {m: statistics.median(results[m]) for m in ("ddp", "deepspeed")}
    cpu = {m: statistics.median(results[f"{m}_cpu_s"]) for m in ("ddp", "deepspeed")}
    ratio = med["deepspeed"] / med["ddp"]
    # Note: each run's pair (engine, DDP) ran back to back, so the median of per-run ratios is the
    # figure least affected by load from other processes on the machine.
    paired = statistics.median(e / d for e, d in zip(results["deepspeed"], results["ddp"]))
    print()
    print(f"{'mode':10s} {'median samples/s':>17s} {'CPU s/step (rank 0)':>20s}")
    for m in ("ddp", "deepspeed"):
        print(f"{m:10s} {med[m]:17.2f} {cpu[m]:20.4f}")
    print(f"engine / DDP: ratio of medians {ratio:.3f}, median of paired ratios {paired:.3f}  (target >= 0.95)")
    report = {
        "benchmark": "engine stage 0 vs torch DDP, 2 gloo ranks, tiny GPT (4x256, 4 heads, vocab 1000, seq 128, "
                     "micro-batch 4), torch Adam",
        "runs": results, "median_samples_per_s": med, "median_cpu_s_per_step_rank0": cpu,
        "ratio_engine_over_ddp": ratio, "median_paired_ratio_engine_over_ddp": paired,
        "steps": args.steps, "warmup": args.warmup, "reduce_bucket_size": args.bucket,
        "host": platform.node(), "python": platform.python_version(),
        "torch": __import__("torch").__version__, "threads_per_rank": 1,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
