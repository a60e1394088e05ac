"""The README's demo (examples/demo.py), shortened: 2 CPU ranks through the launcher, loss goes
down, a checkpoint in DeepSpeed's layout, generated text, the CSV monitor's file."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEMO = os.path.join(ROOT, "examples", "demo.py")

pytestmark = pytest.mark.skipif(not os.path.isfile(DEMO), reason="examples/ is not part of this checkout")


def test_demo_short_run(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, DEMO, "--steps", "40", "--print_every", "20", "--n_layer", "2", "--n_embd", "64",
         "--sample_chars", "60", "--out_dir", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "launching: deepspeed --num_gpus 2" in proc.stdout
    assert "step   40/40 | loss" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    # 40 steps of a tiny model: from ln(74)=4.3 to well under 3.9 (the full demo reaches < half)
    assert summary["first_loss"] == pytest.approx(4.3, abs=0.2)
    assert summary["final_loss"] < summary["first_loss"] - 0.4
    ckpt = out / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == "global_step40"
    assert (ckpt / "global_step40" / "mp_rank_00_model_states.pt").is_file()
    assert summary["sample"].startswith("HAMLET.\n") and len(summary["sample"]) == len("HAMLET.\n") + 60
    assert "--- sample from the checkpoint" in proc.stdout
    assert (out / "demo" / "Train_Samples_lr.csv").is_file()


def test_demo_zero_stage_without_ds_zero(monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("ds_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "deepspeed.zero" else real_find_spec(name, *a))
    monkeypatch.delenv("RANK", raising=False)
    assert demo.main(["--zero_stage", "1"]) == 2
    assert "--zero_stage 1 needs the ds-zero package, which is not installed. Fix: pip install ds-zero" in (
        capsys.readouterr().err)
