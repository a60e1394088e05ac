"""Pipeline parallelism: measured bubble per schedule, and training throughput and peak RSS per
rank of ds-pipe vs the PyPI ``deepspeed`` release's PipelineEngine.

The model: 8 ``Linear(1024, 1024)`` + ReLU layers (8.4M parameters), MSE loss, SGD, micro-batch 32,
as 2 pipeline stages on 2 gloo ranks with one intra-op thread each (the partition puts 4 layers on
each stage).

Bubble: every compute instruction (forward, backward, and the zero-bubble B and W passes) is
timed on each rank; over the pipeline part of a batch (first instruction to the last compute on
any rank) ``bubble = 1 - sum(busy) / (ranks * wall)``, the median over the timed batches. Theory:
1F1B ``(p-1)/(m+p-1)``, interleaved ``(p-1)/(v*m+p-1)``, zero-bubble (ZB-H1) the idealised
timeline of its stream with the measured F, B and W times (deepspeed.runtime.pipe._verify).

Throughput: 1F1B, ``gradient_accumulation_steps`` 8, ours and DeepSpeed alternating run by run
(fresh processes each, so ``ru_maxrss`` is that run's), medians of samples/s, peak RSS and CPU
seconds per batch of each rank (the last does not depend on how loaded the machine is, wall time
does: the load average is recorded); the same worker code runs in both venvs (``import deepspeed`` is this project in ours, ``deepspeed==0.19.8`` in the reference).

    python bench/pipe.py --runs 3 --reference-python /path/to/venv/bin/python [--together]

``--together`` starts both implementations at the same time each round: on a machine shared with
other jobs, one after the other can see very different loads, side by side they see the same.
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
HIDDEN, LAYERS, MICRO_BATCH, STAGES = 1024, 8, 32, 2
SCHEDULES = ("1f1b", "interleaved", "zero_bubble")


# -- worker (runs in either venv) -------------------------------------------------------------------
def _layers():
    import torch
    from deepspeed.pipe import LayerSpec

    out = []
    for _ in range(LAYERS):
        out += [LayerSpec(torch.nn.Linear, HIDDEN, HIDDEN), torch.nn.ReLU()]
    return out


def _instrument(engine, spans):
    """Time every compute instruction of our engine (spans: [(kind, start, end)])."""
    import time

    from deepspeed.runtime.pipe import schedule as S

    compute = {S.ForwardPass: "F", S.BackwardPass: "B", S.BackwardInputPass: "I", S.BackwardWeightPass: "W"}
    table = dict(type(engine)._INSTRUCTION_MAP)
    for cls, kind in compute.items():
        fn = table[cls]

        def timed(self, cmd, _fn=fn, _kind=kind):
            t = time.perf_counter()
            _fn(self, cmd)
            spans.append((_kind, t, time.perf_counter()))

        table[cls] = timed
    engine._INSTRUCTION_MAP = table


def _rank(rank: int, world: int, port: int, schedule: str, micro_batches: int, steps: int, warmup: int,
          out_dir: str, measure: bool) -> None:
    import resource
    import time

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    import torch

    torch.set_num_threads(1)
    import deepspeed
    from deepspeed.pipe import PipelineModule

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    virtual = 2 if schedule == "interleaved" else 1
    kw = {"virtual_stages": virtual} if virtual > 1 else {}
    model = PipelineModule(_layers(), num_stages=STAGES, loss_fn=torch.nn.MSELoss(), partition_method="uniform",
                           **kw)
    cfg = {"train_micro_batch_size_per_gpu": MICRO_BATCH, "gradient_accumulation_steps": micro_batches,
           "steps_per_print": 10**9, "wall_clock_breakdown": False}
    if schedule != "1f1b":
        cfg["pipeline"] = {"schedule": schedule}
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(MICRO_BATCH, HIDDEN, generator=g), torch.randn(MICRO_BATCH, HIDDEN, generator=g))
            for _ in range(micro_batches)]

    def batches():
        while True:
            yield from data

    it = batches()
    spans: list = []
    if measure:
        _instrument(engine, spans)
    for _ in range(warmup):
        engine.train_batch(it)
    batch_spans = []
    torch.distributed.barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        spans.clear()
        torch.distributed.barrier()
        start = time.perf_counter()
        engine.train_batch(it)
        batch_spans.append({"start": start, "spans": list(spans)})
    torch.distributed.barrier()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"samples_per_s": steps * MICRO_BATCH * micro_batches / elapsed, "peak_rss_mib": rss_mib,
                   "cpu_s_per_batch": cpu / steps, "deepspeed": deepspeed.__version__, "batches": batch_spans if measure else []}, f)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _worker(schedule, micro_batches, steps, warmup, out_dir, measure) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank, args=(STAGES, port, schedule, micro_batches, steps, warmup, out_dir, measure),
                       nprocs=STAGES, start_method="spawn")


# -- driver -------------------------------------------------------------------------------------------
def _start(python, env, schedule, micro_batches, steps, warmup, measure, tmp):
    cmd = [python, os.path.abspath(__file__), "--worker", schedule, "--micro-batches", str(micro_batches),
           "--steps", str(steps), "--warmup", str(warmup), "--out-dir", tmp] + (["--measure"] if measure else [])
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _collect(proc, tmp) -> dict:
    out = proc.communicate(timeout=900)[0]
    files = [os.path.join(tmp, f"rank{r}.json") for r in range(STAGES)]
    if not all(os.path.exists(f) for f in files):
        return {"error": out[-3000:]}
    ranks = [json.load(open(f)) for f in files]
    return {"samples_per_s": ranks[0]["samples_per_s"], "peak_rss_mib": [r["peak_rss_mib"] for r in ranks],
            "cpu_s_per_batch": [r["cpu_s_per_batch"] for r in ranks],
            "version": ranks[0]["deepspeed"], "ranks": ranks}


def _run(python, env, schedule, micro_batches, steps, warmup, measure=False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return _collect(_start(python, env, schedule, micro_batches, steps, warmup, measure, tmp), tmp)


def _run_together(impls, schedule, micro_batches, steps, warmup) -> dict:
    """Every implementation at the same time (same machine load for all)."""
    tmps = {i: tempfile.mkdtemp() for i in impls}
    procs = {i: _start(*impls[i], schedule, micro_batches, steps, warmup, False, tmps[i]) for i in impls}
    return {i: _collect(procs[i], tmps[i]) for i in impls}


def _bubble(ranks, schedule, micro_batches) -> dict:
    """Measured bubble (median over batches) and the schedule's theory for the measured pass times."""
    from deepspeed.runtime.pipe import schedule as S
    from deepspeed.runtime.pipe._verify import simulate

    p, m = STAGES, micro_batches
    bubbles, costs = [], {}
    for b in range(len(ranks[0]["batches"])):
        per_rank = [r["batches"][b] for r in ranks]
        start = min(x["start"] for x in per_rank)
        end = max(s[2] for x in per_rank for s in x["spans"])
        busy = sum(s[2] - s[1] for x in per_rank for s in x["spans"])
        bubbles.append(1 - busy / (p * (end - start)))
        for x in per_rank:
            for kind, t0, t1 in x["spans"]:
                costs.setdefault(kind, []).append(t1 - t0)
    cost = {k: statistics.median(v) for k, v in costs.items()}
    if schedule == "1f1b":
        theory = (p - 1) / (m + p - 1)
    elif schedule == "interleaved":
        theory = (p - 1) / (2 * m + p - 1)
    else:
        theory = simulate([S.ZeroBubbleSchedule(m, p, s) for s in range(p)],
                          costs={"F": cost["F"], "I": cost["I"], "W": cost["W"]}).bubble
    return {"measured": statistics.median(bubbles), "theory": theory, "pass_ms": {k: v * 1e3 for k, v in cost.items()}}


def _reference_env(python: str) -> dict:
    env = dict(os.environ, DS_ACCELERATOR="cpu", DS_BUILD_OPS="0")
    env.pop("PYTHONPATH", None)
    venv = os.path.dirname(os.path.dirname(python))
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(venv, "torch_extensions"))
    return env


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="throughput runs of each implementation (alternating)")
    ap.add_argument("--steps", type=int, default=5, help="timed batches per run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bubble-micro-batches", default="2,4,8")
    ap.add_argument("--micro-batches", type=int, default=8, help="gradient_accumulation_steps of the throughput runs")
    ap.add_argument("--reference-python", default=os.environ.get("DS_REFERENCE_PYTHON"),
                    help="python of a venv with deepspeed==0.19.8 (bench/_reference.py --ensure); without it only "
                         "ds-pipe runs")
    ap.add_argument("--skip-bubble", action="store_true")
    ap.add_argument("--together", action="store_true",
                    help="run the implementations at the same time each round instead of one after the other (on a "
                         "shared machine both then see the same load)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "pipe.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.micro_batches, args.steps, args.warmup, args.out_dir, args.measure)
        return {}

    report: dict = {"benchmark": f"{LAYERS} x Linear({HIDDEN},{HIDDEN})+ReLU, MSE, SGD, micro-batch {MICRO_BATCH}, "
                                 f"{STAGES} stages on {STAGES} gloo ranks, 1 thread each",
                    "host": platform.node(), "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg()}
    ours = (sys.executable, dict(os.environ))
    if not args.skip_bubble:
        rows = {}
        print(f"{'schedule':12s} {'m':>3s} {'measured':>9s} {'theory':>8s}   pass ms (F/B or F/I/W)")
        for schedule in SCHEDULES:
            for m in [int(x) for x in args.bubble_micro_batches.split(",")]:
                if schedule == "interleaved" and m % STAGES:
                    continue
                res = _run(*ours, schedule, m, args.steps, args.warmup, measure=True)
                if "error" in res:
                    print(f"{schedule:12s} {m:3d} error: {res['error'].splitlines()[-1:]}")
                    rows[f"{schedule}/m{m}"] = res
                    continue
                b = _bubble(res["ranks"], schedule, m)
                rows[f"{schedule}/m{m}"] = b
                passes = "/".join(f"{v:.1f}" for _, v in sorted(b["pass_ms"].items(), key=lambda kv: "FBIW".index(kv[0])))
                print(f"{schedule:12s} {m:3d} {b['measured']:9.3f} {b['theory']:8.3f}   {passes}", flush=True)
        report["bubble"] = rows

    impls = {"ours": ours}
    if args.reference_python:
        impls["deepspeed"] = (args.reference_python, _reference_env(args.reference_python))
    runs: dict = {i: [] for i in impls}
    for r in range(args.runs):
        together = _run_together(impls, "1f1b", args.micro_batches, args.steps, args.warmup) if args.together else {}
        for impl in (list(impls) if r % 2 == 0 else list(reversed(impls))):
            res = together[impl] if args.together else _run(*impls[impl], "1f1b", args.micro_batches, args.steps,
                                                            args.warmup)
            res.pop("ranks", None)
            runs[impl].append(res)
            shown = res["error"].splitlines()[-1:] if "error" in res else \
                f"{res['samples_per_s']:8.2f} samples/s  peak RSS per rank {[round(x) for x in res['peak_rss_mib']]} MiB" \
                f"  CPU s/batch per rank {[round(x, 3) for x in res['cpu_s_per_batch']]}"
            print(f"run {r + 1}/{args.runs} 1f1b m={args.micro_batches} {impl:9s} {shown}", flush=True)
    summary = {}
    for impl, rs in runs.items():
        ok = [x for x in rs if "error" not in x]
        summary[impl] = {"samples_per_s": statistics.median([x["samples_per_s"] for x in ok]) if ok else None,
                         "peak_rss_mib_per_rank": [statistics.median([x["peak_rss_mib"][k] for x in ok])
                                                   for k in range(STAGES)] if ok else None,
                         "cpu_s_per_batch_per_rank": [statistics.median([x["cpu_s_per_batch"][k] for x in ok])
                                                      for k in range(STAGES)] if ok else None,
                         "ok_runs": len(ok), "version": ok[0]["version"] if ok else None}
    if "deepspeed" in summary and summary["deepspeed"]["samples_per_s"] and summary["ours"]["samples_per_s"]:
        summary["speed_ratio"] = summary["ours"]["samples_per_s"] / summary["deepspeed"]["samples_per_s"]
        summary["rss_ratio_per_rank"] = [a / b for a, b in zip(summary["ours"]["peak_rss_mib_per_rank"],
                                                                 summary["deepspeed"]["peak_rss_mib_per_rank"])]
    report["load_average_at_end"] = os.getloadavg()
    report["throughput"] = {"summary": summary, "runs": runs, "micro_batches": args.micro_batches,
                            "together": args.together,
                            "steps": args.steps, "warmup": args.warmup}
    print(json.dumps(summary, indent=2))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
