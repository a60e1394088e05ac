"""Hugging Face Trainer, Accelerate and TRL run this repo's DeepSpeed on 2 CPU ranks.

Each job is a real launch (torchrun, the ``deepspeed`` launcher, ``accelerate launch``) of a script
in jobs/, training a tiny random-init Llama built in the script for 30 steps. Checked here, from
what each job wrote: the loss fell (last logged <= 0.7 x first), the engine ran at the ZeRO stage
asked (asked of the engine inside the job), and, for the Trainer jobs, the checkpoint the Trainer
saved consolidates with its copied ``zero_to_fp32.py`` into a model that ``from_pretrained`` loads
in a plain process with the trained model's eval loss (1e-4 fp32, 1e-2 bf16).

samples/s of every job go to $DS_INTEGRATIONS_RESULTS (JSON) when set.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

JOBS = pathlib.Path(__file__).parent / "jobs"
BIN = pathlib.Path(sys.executable).parent
STEPS = 30
TIMEOUT = 600
TRAINER = [(launcher, stage, dtype) for launcher in ("torchrun", "deepspeed") for stage in (2, 3)
           for dtype in ("fp32", "bf16")]
EVAL_TOL = {"fp32": 1e-4, "bf16": 1e-2}
_RESULTS: dict[str, dict] = {}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    # Note: 2 ranks on a 2-core machine; never reach a hub (everything is built in the jobs).
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


def _launch(name: str, cmd: list[str], out: pathlib.Path) -> dict:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    log = proc.stdout + proc.stderr
    (out.parent / f"{out.name}.log").write_text(log)
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}): {' '.join(cmd)}\n{log[-6000:]}"
    result = json.loads((out / "result.json").read_text())
    _RESULTS[name] = {"samples_per_second": result["samples_per_second"], "stage": result["stage"],
                      "first_loss": result["losses"][0], "last_loss": result["losses"][-1]}
    if os.environ.get("DS_INTEGRATIONS_RESULTS"):
        path = pathlib.Path(os.environ["DS_INTEGRATIONS_RESULTS"])
        path.write_text(json.dumps(_RESULTS, indent=1, sort_keys=True))
    return result


def _trained(result: dict, stage: int, steps: int = STEPS) -> None:
    losses = result["losses"]
    assert result["stage"] == stage, f"engine ran ZeRO stage {result['stage']}, asked {stage}"
    assert result["world_size"] == 2
    assert len(losses) == steps, f"{len(losses)} logged losses, expected {steps}"
    assert losses[-1] <= 0.7 * losses[0], f"loss {losses[0]:.4f} -> {losses[-1]:.4f} (needs <= 0.7x)"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("integrations")


@pytest.fixture(scope="module")
def trainer_jobs(workdir):
    """Runs each Trainer job once, on first request."""
    done: dict = {}

    def run(launcher: str, stage: int, dtype: str) -> tuple[dict, pathlib.Path]:
        key = (launcher, stage, dtype)
        if key not in done:
            out = workdir / f"trainer-{launcher}-z{stage}-{dtype}"
            script = [str(JOBS / "hf_trainer.py"), "--stage", str(stage), "--dtype", dtype, "--out", str(out)]
            if launcher == "torchrun":
                cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                       "--master_port", str(_port()), *script]
            else:
                cmd = [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(_port()), *script]
            done[key] = (_launch(f"trainer {launcher} zero{stage} {dtype}", cmd, out), out)
        return done[key]

    return run


@pytest.mark.parametrize("launcher,stage,dtype", TRAINER, ids=[f"{a}-zero{b}-{c}" for a, b, c in TRAINER])
def test_trainer_trains_at_the_stage_asked(trainer_jobs, launcher, stage, dtype):
    result, out = trainer_jobs(launcher, stage, dtype)
    _trained(result, stage)
    files = set(result["ckpt_files"])
    assert {"latest", "zero_to_fp32.py", "global_step30"} <= files, sorted(files)
    if stage == 3:
        assert {"zero_pp_rank_0_mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_model_states.pt"} <= files
    else:
        assert "mp_rank_00_model_states.pt" in files
    assert (out / f"checkpoint-{STEPS}" / "latest").read_text().strip() == f"global_step{STEPS}"


@pytest.mark.parametrize("launcher,stage,dtype", TRAINER, ids=[f"{a}-zero{b}-{c}" for a, b, c in TRAINER])
def test_zero_to_fp32_checkpoint_reproduces_eval_loss(trainer_jobs, launcher, stage, dtype):
    result, out = trainer_jobs(launcher, stage, dtype)
    ckpt = out / f"checkpoint-{STEPS}"
    proc = subprocess.run([sys.executable, str(JOBS / "eval_consolidated.py"), str(ckpt), str(out / "fp32"),
                           "--dtype", dtype], env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-6000:]
    plain = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "pytorch_model.bin" in plain["files"]
    assert abs(plain["eval_loss"] - result["eval_loss"]) <= EVAL_TOL[dtype], (
        f"consolidated eval loss {plain['eval_loss']:.6f} vs trained {result['eval_loss']:.6f}")


def test_trainer_resumes_from_the_engine_checkpoint(trainer_jobs, workdir):
    # resume_from_checkpoint loads the engine's checkpoint (deepspeed_load_checkpoint): steps 31-36
    # after resuming match an uninterrupted 36-step run.
    _, first = trainer_jobs("torchrun", 3, "fp32")
    runs = {}
    for name, extra in (("resumed", ["--resume", str(first / f"checkpoint-{STEPS}")]), ("straight", [])):
        out = workdir / f"trainer-resume-{name}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()),
               str(JOBS / "hf_trainer.py"), "--stage", "3", "--dtype", "fp32", "--steps", "36", "--out", str(out), *extra]
        runs[name] = _launch(f"trainer resume {name}", cmd, out)
    resumed, straight = runs["resumed"], runs["straight"]
    assert resumed["global_steps"] == straight["global_steps"] == 36
    assert resumed["logged_steps"] == straight["logged_steps"] == list(range(1, 37))
    tail = [(a, b) for a, b in zip(resumed["losses"][STEPS:], straight["losses"][STEPS:])]
    assert len(tail) == 6 and all(abs(a - b) <= 1e-3 * abs(b) for a, b in tail), tail


@pytest.mark.parametrize("stage", (2, 3))
def test_lightning_converter_reads_the_checkpoint(trainer_jobs, stage):
    # Lightning's zero_to_fp32 wrapper (its CPU path; its DeepSpeed strategy itself needs CUDA).
    result, out = trainer_jobs("torchrun", stage, "fp32")
    proc = subprocess.run([sys.executable, str(JOBS / "eval_consolidated.py"), str(out / f"checkpoint-{STEPS}"),
                           str(out / "lightning"), "--dtype", "fp32", "--lightning"], env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-6000:]
    plain = json.loads(proc.stdout.strip().splitlines()[-1])
    assert abs(plain["eval_loss"] - result["eval_loss"]) <= EVAL_TOL["fp32"]


ACCELERATE = {
    # --zero_stage-style flags: a torch optimizer and scheduler, GAS and clipping from the flags
    "flags-zero2": (["--zero_stage", "2", "--gradient_accumulation_steps", "2", "--gradient_clipping", "0.5"],
                    None, 2),
    # a config file with "auto" values and an optimizer/scheduler: DummyOptim / DummyScheduler
    "config-zero3": ([], pathlib.Path(__file__).parent / "ds_config_zero3.json", 3),
}


@pytest.mark.parametrize("name", sorted(ACCELERATE))
def test_accelerate_launch_use_deepspeed(workdir, name):
    flags, config, stage = ACCELERATE[name]
    out = workdir / f"accelerate-{name}"
    if config is not None:
        flags = [*flags, "--deepspeed_config_file", str(config)]
    cmd = [str(BIN / "accelerate"), "launch", "--use_deepspeed", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_port()), *flags,
           str(JOBS / "accelerate_loop.py"), "--out", str(out)]
    result = _launch(f"accelerate {name}", cmd, out)
    _trained(result, stage)
    assert result["global_steps"] == STEPS
    if config is None:  # the flags reached the engine
        assert (result["gas"], result["gradient_clipping"]) == (2, 0.5)
        assert result["optimizer"] == "DeepSpeedZeroOptimizer"
    else:  # "auto" filled by Accelerate: GAS 1, clipping 1.0; DeepSpeed built the optimizer
        assert (result["gas"], result["gradient_clipping"]) == (1, 1.0)
        assert result["optimizer"] == "DeepSpeedZeroOptimizer_Stage3"


def test_trl_sft_under_zero3(workdir):
    out = workdir / "trl-sft"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()),
           str(JOBS / "trl_sft.py"), "--out", str(out)]
    result = _launch("trl sft zero3", cmd, out)
    _trained(result, 3)
    assert result["gathered_shapes_ok"] and result["generated"] == 4 and result["partitioned_after"], result
