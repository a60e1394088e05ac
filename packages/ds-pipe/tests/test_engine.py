"""PipelineEngine against one process (fp32, 10 SGD steps of 4 micro-batches): 1F1B, zero-bubble
and interleaved on 2 stages, 2 stages x 2 data-parallel ranks on 4; tied weights; checkpoints
reloaded at 1 and 4 stages.

Tolerance: 1e-5 relative (the issue's bound) on every loss and parameter; the pipeline sums the
same products in another order (per micro-batch, per stage), so ~1e-7 differences are expected.
"""

import os
import sys

import pytest
import torch

import deepspeed
from deepspeed.testing.distributed import run_distributed

sys.path.insert(0, os.path.dirname(__file__))
import _pipe_models as M  # noqa: E402

RTOL = 1e-5


def _train(schedule="1f1b", virtual_stages=1, num_stages=2, dp=1, save_dir=None, gas=4, clip=0.0):
    import deepspeed.comm as dist

    model = M.build(num_stages=num_stages, virtual_stages=virtual_stages)
    extra = {} if schedule == "1f1b" else {"pipeline": {"schedule": schedule}}
    if clip:
        extra["gradient_clipping"] = clip
    engine, *_ = deepspeed.initialize(model=model, config=M.config(gas=gas, dp=dp, **extra))
    it = iter(M.data(engine._grid.data_parallel_id, dp, gas))
    losses = [float(engine.train_batch(it)) for _ in range(M.STEPS)]
    out = {"losses": losses, "params": {k: v.detach().clone() for k, v in engine.module.state_dict().items()},
           "stage": engine.stage_id, "dp": engine._grid.data_parallel_id, "gas": engine.gradient_accumulation_steps()}
    x = M.data(0, 1, 1, 1)[0]
    out["eval_after"] = float(engine.eval_batch(iter([x, x]), num_micro_batches=2))
    if schedule == "interleaved":  # 3 micro-batches cannot be interleaved over 2 stages
        try:
            deepspeed.initialize(model=M.build(num_stages=num_stages, virtual_stages=virtual_stages),
                                 config=M.config(gas=3, dp=dp, **extra))
        except ValueError as e:
            out["few_micro_batches"] = str(e)
    if save_dir is not None:
        engine.save_checkpoint(save_dir, tag="t")
        x = M.data(0, 1, 1, 1)[0]
        out["eval"] = float(engine.eval_batch(iter([x]), num_micro_batches=1))
        out["logits"] = engine.eval_batch(iter([x]), return_logits=True, num_micro_batches=1)[1]
    dist.barrier()
    return out


def _eval_of(params):
    """The reference model's loss on the eval micro-batch, with ``params``."""
    model = M.build(num_stages=1)
    model.load_state_dict(params)
    x, y = M.data(0, 1, 1, 1)[0]
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model(x), y))


def _check(results, ref):
    ref_losses, ref_params = ref
    want_eval = _eval_of(ref_params)
    for r in results:  # eval_batch's loss reaches every stage
        torch.testing.assert_close(r["eval_after"], want_eval, rtol=RTOL, atol=0)
    for r in results:
        assert r["gas"] == 4
        torch.testing.assert_close(torch.tensor(r["losses"]), torch.tensor(ref_losses), rtol=RTOL, atol=0)
    merged = {}
    for r in results:
        for k, v in r["params"].items():
            merged.setdefault(k, []).append(v)
    assert set(merged) == set(ref_params)
    for k, copies in merged.items():
        for v in copies:  # every holder (data-parallel copies, tied copies) equals the reference
            torch.testing.assert_close(v, ref_params[k], rtol=RTOL, atol=1e-7)
    return merged


@pytest.fixture(scope="module")
def ref():
    return M.reference()


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    """2 stages, 1F1B, trained then checkpointed (tag "t") and evaluated on one micro-batch."""
    ckpt = str(tmp_path_factory.mktemp("pipe_ckpt"))
    return ckpt, run_distributed(_train, world_size=2, kwargs={"save_dir": ckpt})


def _assert_tied_identical(merged):
    # tied embeddings: the first and last stage hold copies that stay identical
    assert len(merged["tied_modules.emb.weight"]) >= 2
    first = merged["tied_modules.emb.weight"][0]
    assert all(torch.equal(first, w) for w in merged["tied_modules.emb.weight"])


def test_two_stages_1f1b_match_one_process(two_stage, ref):
    _, results = two_stage
    _assert_tied_identical(_check(results, ref))
    assert sorted(r["stage"] for r in results) == [0, 1]


CLIP = 0.25


@pytest.fixture(scope="module")
def ref_clipped():
    norms = []
    out = M.reference(clip=CLIP, norms=norms)
    assert sum(n > CLIP for n in norms) >= 3  # clipping is active on several steps
    return out


@pytest.mark.parametrize("schedule,virtual,clip", [("zero_bubble", 1, CLIP), ("interleaved", 2, 0.0)])
def test_two_stages_match_one_process(schedule, virtual, clip, ref, ref_clipped):
    """Zero-bubble also clips gradients by the norm over both stages (the tied weight counted once)."""
    results = run_distributed(_train, world_size=2, kwargs={"schedule": schedule, "virtual_stages": virtual,
                                                            "clip": clip})
    _assert_tied_identical(_check(results, ref_clipped if clip else ref))
    if schedule == "interleaved":
        assert all(r["few_micro_batches"] == (
            "ds_config.pipeline.schedule=\"interleaved\" needs a number of micro-batches divisible by the stages: "
            "gradient_accumulation_steps=3, stages=2; use a multiple of 2") for r in results)
    assert sorted(r["stage"] for r in results) == [0, 1]


def _expected_eval(results):
    return [r for r in results if r["stage"] == 1][0]


def _reload(ckpt, num_stages):
    model = M.build(num_stages=num_stages)
    engine, *_ = deepspeed.initialize(model=model, config=M.config(gas=1))
    path, client = engine.load_checkpoint(ckpt, tag="t")
    assert path is not None and engine.global_steps == M.STEPS
    x = M.data(0, 1, 1, 1)[0]
    loss = float(engine.eval_batch(iter([x])))
    logits = engine.eval_batch(iter([x]), return_logits=True, num_micro_batches=1)[1]
    return {"stage": engine.stage_id, "last": engine.is_last_stage(), "eval": loss, "logits": logits,
            "files": sorted(os.listdir(os.path.join(ckpt, "t")))}


def test_checkpoint_of_two_stages_reloads_as_one_stage(two_stage):
    ckpt, results = two_stage
    want = _expected_eval(results)
    got = _reload(ckpt, 1)
    # DeepSpeed's names: one file per layer that is a module (layer 8 is the tied copy's forward_fn)
    layer_files = [f for f in got["files"] if f.startswith("layer_")]
    assert layer_files == [f"layer_{i:02d}-model_states.pt" for i in range(8)]
    assert "mp_rank_00_model_states.pt" in got["files"] and "mp_rank_01_model_states.pt" in got["files"]
    torch.testing.assert_close(got["eval"], want["eval"], rtol=1e-6, atol=0)
    torch.testing.assert_close(got["logits"], want["logits"], rtol=1e-6, atol=1e-7)


def _four_ranks(ckpt):
    """2 stages x 2 data-parallel ranks trained, then the 2-stage checkpoint loaded as 4 stages."""
    out = _train(num_stages=2, dp=2)
    out["reload"] = _reload(ckpt, 4)
    return out


def test_pipe_x_data_parallel_and_four_stage_reload(two_stage):
    ckpt, results2 = two_stage
    results = run_distributed(_four_ranks, world_size=4, args=(ckpt,), timeout=240)
    assert sorted((r["stage"], r["dp"]) for r in results) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    merged = _check(results, M.reference(dp=2))
    _assert_tied_identical(merged)
    assert len(merged["tied_modules.emb.weight"]) == 4  # 2 stages x 2 data-parallel copies
    want = _expected_eval(results2)
    for r in results:
        got = r["reload"]
        torch.testing.assert_close(got["eval"], want["eval"], rtol=1e-6, atol=0)  # broadcast to every stage
        if got["last"]:
            torch.testing.assert_close(got["logits"], want["logits"], rtol=1e-6, atol=1e-7)
    assert sorted(r["reload"]["stage"] for r in results) == [0, 1, 2, 3]
