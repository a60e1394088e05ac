"""Universal checkpoints: a ZeRO-2 checkpoint saved on 2 gloo ranks, converted by ds_to_universal,
resumes on 1 and 2 ranks at ZeRO stages 0-3 and continues exactly like the uninterrupted run.

Exactness: with 2 data-parallel ranks (or 1 rank accumulating the same 2 micro-batches) the
averaged gradient is ``(g0 + g1) / 2`` whatever the stage or the order of the sum (a sum of two
floats commutes, and halving is exact), every micro-batch is the same computation, and the restored
masters and Adam moments are the saved bits; so the continuation's losses must be bitwise equal
(tolerance 0). With 4 or more ranks the sum of 4 gradients depends on the reduction order, which
differs between collectives: there equality is to fp32 rounding (the 4-rank test at the end).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from deepspeed.testing.distributed import run_distributed

GLOBAL_BATCH, MICRO, SEQ, VOCAB = 4, 2, 6, 32
SAVE_AT, TOTAL = 2, 7


class TinyGPT(torch.nn.Module):
    """Embedding, one tanh block with a LayerNorm, an LM head tied to the embedding."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.wte = torch.nn.Embedding(VOCAB, 16)
        self.wpe = torch.nn.Parameter(torch.randn(SEQ, 16) * 0.02)
        self.fc = torch.nn.Linear(16, 16)
        self.ln = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, VOCAB, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, x):
        h = self.wte(x) + self.wpe
        h = h + torch.tanh(self.fc(self.ln(h)))
        logits = self.head(h)
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, VOCAB, (TOTAL, GLOBAL_BATCH, SEQ), generator=g), torch.randint(0, VOCAB, (4, SEQ), generator=g)


def _config(stage: int, dp: int, universal: bool, offload: bool = False, micro: int = MICRO,
            bf16: bool = False) -> dict:
    zero = {"stage": stage}
    if offload and stage > 0:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {"train_batch_size": GLOBAL_BATCH, "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": GLOBAL_BATCH // (micro * dp),
            "optimizer": {"type": "Adam", "params": {"lr": 0.02, "weight_decay": 0.01}},
            "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 0.02,
                                                         "warmup_num_steps": 5}},
            "zero_optimization": zero, "checkpoint": {"load_universal": universal}, "bf16": {"enabled": bf16}}


def _run(stage: int, save_dir: str | None, load_dir: str | None, universal: bool = False, offload: bool = False,
         tag: str | None = None, micro: int = MICRO, bf16: bool = False):
    """Train to TOTAL steps (from SAVE_AT when loading); per step the loss of a fixed eval batch."""
    import deepspeed
    import deepspeed.comm as dist

    dp, rank = dist.get_world_size(), dist.get_rank()
    engine, *_ = deepspeed.initialize(model=TinyGPT(), config=_config(stage, dp, universal, offload, micro, bf16))
    train, evalb = _data()
    start = 0
    if load_dir is not None:
        path, client = engine.load_checkpoint(load_dir, tag=tag)
        assert path is not None and client == {"note": "kept"}, (path, client)
        assert engine.global_steps == SAVE_AT
        start = SAVE_AT
    losses = []
    for step in range(start, TOTAL):
        for m in range(engine.gradient_accumulation_steps()):
            lo = (m * dp + rank) * micro
            loss = engine(train[step, lo:lo + micro])
            engine.backward(loss)
            engine.step()
        with torch.no_grad():
            losses.append(engine(evalb).item())
        if save_dir is not None and step + 1 == SAVE_AT:
            engine.save_checkpoint(save_dir, tag="step2", client_state={"note": "kept"})
    return losses, engine.get_lr()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An uninterrupted 2-rank ZeRO-2 run that saved at step 2, and its universal conversion."""
    root = tmp_path_factory.mktemp("ckpt")
    results = run_distributed(_run, world_size=2, args=(2, str(root), None), timeout=300)
    assert results[0] == results[1]
    out = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                          str(root / "step2"), "--output_folder", str(root / "step2_universal")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return root, results[0]


def test_layout_matches_deepspeed(saved):
    from deepspeed.runtime.checkpoint_engine._safe_load import safe_load

    root, _ = saved
    assert (root / "latest_universal").read_text() == "step2_universal"
    names = {"wte.weight", "wpe", "fc.weight", "fc.bias", "ln.weight", "ln.bias"}  # head.weight is tied
    assert set(os.listdir(root / "step2_universal" / "zero")) == names | {"optimizer_state.pt"}
    for name in names:
        files = set(os.listdir(root / "step2_universal" / "zero" / name))
        assert files == {"fp32.pt", "exp_avg.pt", "exp_avg_sq.pt", "step.pt"}, (name, files)
    ms = safe_load(str(root / "step2_universal" / "mp_rank_00_model_states.pt"))
    assert ms["universal_checkpoint_info"] == {"universal_checkpoint_version": 0.2}
    fc = safe_load(str(root / "step2_universal" / "zero" / "fc.weight" / "fp32.pt"))["param"]
    # the merged value is the saved model's weight (stage 2 in fp32: master and module agree)
    assert torch.equal(fc, ms["module"]["fc.weight"])


@pytest.mark.parametrize("world,stage,universal", [(1, 3, True), (2, 3, True), (2, 1, True), (1, 0, True),
                                                   (1, 2, False)])
def test_resume_at_another_size_or_stage_is_bitwise(saved, world, stage, universal):
    """universal: through ds_to_universal + checkpoint.load_universal; else the ZeRO files directly
    (DeepSpeed 0.19.8 refuses a 2-rank ZeRO-2 checkpoint on 1 rank)."""
    root, (reference, lr) = saved
    results = run_distributed(_run, world_size=world, args=(stage, None, str(root), universal), timeout=300)
    for losses, got_lr in results:
        assert losses == reference[SAVE_AT:], (losses, reference[SAVE_AT:])  # bitwise: see the module docstring
        assert got_lr == lr


@pytest.mark.parametrize("world,stage", [(1, 3), (2, 0)])
def test_regular_checkpoint_reshards_on_load_without_conversion(saved, world, stage):
    """checkpoint.load_universal with the regular tag: merged in memory, loaded at another stage."""
    root, (reference, _) = saved
    results = run_distributed(_run, world_size=world, args=(stage, None, str(root), True, False, "step2"), timeout=300)
    for losses, _ in results:
        assert losses == reference[SAVE_AT:]


@pytest.mark.parametrize("stage", [2, 3])
def test_universal_resume_with_offload(saved, stage):
    root, (reference, _) = saved
    (losses, _), = run_distributed(_run, world_size=1, args=(stage, None, str(root), True, True), timeout=300)
    assert losses == reference[SAVE_AT:]


def test_corrupt_universal_file_is_named(saved, tmp_path):
    import shutil

    root, _ = saved
    copy = tmp_path / "c"
    shutil.copytree(root / "step2_universal", copy / "step2_universal")
    (copy / "latest_universal").write_text("step2_universal")
    victim = copy / "step2_universal" / "zero" / "fc.bias" / "exp_avg.pt"
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(AssertionError, match=r"CheckpointError: checkpoint file \S*/zero/fc\.bias/exp_avg\.pt is corrupt: "
                                             r"its CRC-32 is \w+, its manifest says"):
        run_distributed(_run, world_size=1, args=(2, None, str(copy), True), timeout=300)


def test_checkpoint_root_converts_its_latest_tag(saved, tmp_path):
    from deepspeed.checkpoint.ds_to_universal import convert
    from deepspeed.runtime.checkpoint_engine._safe_load import safe_load

    root, _ = saved
    out = convert(str(root), str(tmp_path / "u"), progress=False)
    for name in ("fc.weight", "wte.weight"):
        for key in ("fp32", "exp_avg_sq"):
            a = safe_load(os.path.join(out, "zero", name, f"{key}.pt"))["param"]
            b = safe_load(str(root / "step2_universal" / "zero" / name / f"{key}.pt"))["param"]
            assert torch.equal(a, b)


def test_missing_input_is_a_clear_error(tmp_path):
    from deepspeed.checkpoint import ds_to_universal

    with pytest.raises(FileNotFoundError, match="--input_folder must be one tag folder"):
        ds_to_universal.main(["--input_folder", str(tmp_path), "--output_folder", str(tmp_path / "u")])


@pytest.mark.parametrize("source,target", [(3, 1), (0, 2)])
def test_other_source_stages_convert_and_resume_bitwise(tmp_path, source, target):
    """ZeRO-3 shards (per-parameter slices) and a stage-0 checkpoint (torch optimizer state in the
    model-states file), saved on 2 ranks, resume on 1 rank at another stage."""
    from deepspeed.checkpoint.ds_to_universal import convert

    (reference, _), _ = run_distributed(_run, world_size=2, args=(source, str(tmp_path), None), timeout=300)
    convert(str(tmp_path / "step2"), str(tmp_path / "step2_universal"), progress=False)
    (losses, _), = run_distributed(_run, world_size=1, args=(target, None, str(tmp_path), True), timeout=300)
    assert losses == reference[SAVE_AT:]


def test_four_rank_checkpoint_resumes_on_two_and_one(tmp_path):
    """4 ranks, 1 sample each: the sum of 4 gradients depends on the reduction order (ZeRO-3's
    reduce-scatter sums in another order than ZeRO-1's all-reduce), so a resume at another stage
    equals the uninterrupted run to fp32 rounding (1e-6 relative; measured 7.5e-8 at stage 3,
    bitwise at (1 rank, stage 2))."""
    from deepspeed.checkpoint.ds_to_universal import convert

    (reference, _), *_ = run_distributed(_run, world_size=4, args=(1, str(tmp_path), None),
                                         kwargs={"micro": 1}, timeout=300)
    convert(str(tmp_path / "step2"), str(tmp_path / "step2_universal"), progress=False)
    for world, stage in ((2, 3), (1, 2)):
        results = run_distributed(_run, world_size=world, args=(stage, None, str(tmp_path), True),
                                  kwargs={"micro": 1}, timeout=300)
        for losses, _ in results:
            assert losses == pytest.approx(reference[SAVE_AT:], rel=1e-6, abs=0), (world, stage, losses)


def _load_error(load_dir: str, tag):
    import deepspeed

    engine, *_ = deepspeed.initialize(model=TinyGPT(), config=_config(2, 1, True))
    try:
        engine.load_checkpoint(load_dir, tag=tag)
    except Exception as exc:  # noqa: BLE001 - the message is the result
        return f"{type(exc).__name__}: {exc}"
    return None


def test_universal_load_errors_name_the_fix(tmp_path):
    from deepspeed.checkpoint import universal_checkpoint

    assert universal_checkpoint.load.__module__ == "deepspeed.checkpoint.universal_checkpoint"
    (tmp_path / "other").mkdir()
    (nothing, elsewhere), = run_distributed(
        _both_errors, world_size=1, args=(str(tmp_path),), timeout=300)
    assert nothing == (f"FileNotFoundError: load_checkpoint(load_universal=true): neither {tmp_path}/latest_universal "
                       f"nor {tmp_path}/latest exists; pass tag=<checkpoint folder name>")
    assert elsewhere.startswith(f"FileNotFoundError: load_checkpoint(load_universal=true): {tmp_path}/other holds "
                                "neither a universal checkpoint (zero/ folder) nor an engine checkpoint")


def _both_errors(root: str):
    return _load_error(root, None), _load_error(root, "other")


def test_bf16_checkpoint_resumes_bitwise_at_another_stage(tmp_path):
    """bf16 with fp32 masters: the masters and moments are restored, the bf16 copies re-derived."""
    from deepspeed.checkpoint.ds_to_universal import convert

    (reference, _), _ = run_distributed(_run, world_size=2, args=(2, str(tmp_path), None), kwargs={"bf16": True},
                                        timeout=300)
    convert(str(tmp_path / "step2"), str(tmp_path / "step2_universal"), progress=False)
    (losses, _), = run_distributed(_run, world_size=1, args=(3, None, str(tmp_path), True), kwargs={"bf16": True},
                                   timeout=300)
    assert losses == reference[SAVE_AT:]
