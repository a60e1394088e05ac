"""deepspeed.checkpointing: recomputation gives the same gradients, RNG is replayed, options from
configure() and from the activation_checkpointing config section, partitioning over an mpu."""

import pytest
import torch
import torch.distributed as dist

import deepspeed
import deepspeed.checkpointing as ckpt
from deepspeed.runtime.activation_checkpointing import checkpointing as impl
from deepspeed.testing.distributed import run_distributed


@pytest.fixture(autouse=True)
def _fresh_settings():
    impl._unconfigure()
    yield
    impl._unconfigure()


def _block():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Dropout(0.5), torch.nn.Tanh(), torch.nn.Linear(6, 6))


def _grads(use_ckpt, fn=None, seed=7):
    block = _block()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    torch.manual_seed(seed)
    out = (fn or ckpt.checkpoint)(block, x) if use_ckpt else block(x)
    out.pow(2).sum().backward()
    return [p.grad.clone() for p in block.parameters()] + [x.grad.clone()], out.detach()


@pytest.mark.parametrize("fn", [ckpt.checkpoint, ckpt.non_reentrant_checkpoint])
def test_checkpoint_matches_plain_backward_with_dropout(fn):
    ref, ref_out = _grads(False)
    got, out = _grads(True, fn)
    torch.testing.assert_close(out, ref_out)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)


def test_cpu_checkpointing_and_profile_options(caplog):
    ckpt.configure(None, checkpoint_in_cpu=True, profile=True, synchronize=True)
    assert ckpt.is_configured()
    ref, _ = _grads(False)
    got, _ = _grads(True)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)
    ckpt.reset()
    assert ckpt.is_configured()


def test_configure_from_deepspeed_config_and_engine():
    cfg = {"train_micro_batch_size_per_gpu": 1,
           "activation_checkpointing": {"partition_activations": True, "cpu_checkpointing": True,
                                        "contiguous_memory_optimization": True, "number_checkpoints": 4,
                                        "profile": True}}
    deepspeed.initialize(model=torch.nn.Linear(2, 2), config=cfg)
    s = impl._settings
    assert ckpt.is_configured()
    assert (s.partition_activations, s.cpu_checkpointing, s.contiguous_memory_optimization, s.num_checkpoints,
            s.profile) == (True, True, True, 4, True)
    # explicit arguments override the config (Lightning passes both)
    ckpt.configure(None, deepspeed_config=cfg, checkpoint_in_cpu=False)
    assert impl._settings.cpu_checkpointing is False
    impl._unconfigure()
    with pytest.raises(ValueError, match="contiguous_memory_optimization needs number_checkpoints"):
        ckpt.configure(None, contiguous_checkpointing=True)


class _WorldMPU:
    """Model parallel over the whole (2-rank) world."""

    def get_model_parallel_world_size(self):
        return dist.get_world_size()

    def get_model_parallel_rank(self):
        return dist.get_rank()

    def get_model_parallel_group(self):
        return dist.group.WORLD


def _partitioned_body():
    ckpt.configure(_WorldMPU(), partition_activations=True, checkpoint_in_cpu=True)
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    saved = []
    orig_init = impl._Saved.__init__

    def spy(self, t, s):
        orig_init(self, t, s)
        saved.append(self.data.numel())

    impl._Saved.__init__ = spy
    try:
        ckpt.checkpoint(block, x).sum().backward()
    finally:
        impl._Saved.__init__ = orig_init
    got = [p.grad.tolist() for p in block.parameters()] + [x.grad.tolist()]
    for p in block.parameters():
        p.grad = None
    x2 = x.detach().clone().requires_grad_(True)
    block(x2).sum().backward()
    ref = [p.grad.tolist() for p in block.parameters()] + [x2.grad.tolist()]
    return got == ref, saved


def test_partition_activations_over_an_mpu():
    """Each of 2 model-parallel ranks keeps 8 of the 15 input elements; gradients are unchanged."""
    for equal, saved in run_distributed(_partitioned_body):
        assert equal and saved == [8]


def test_rng_tracker_and_model_parallel_seed():
    ckpt.model_parallel_cuda_manual_seed(42)
    tracker = ckpt.get_cuda_rng_tracker()
    before = torch.rand(1)
    torch.manual_seed(42)
    assert torch.equal(torch.rand(1), before)
    with tracker.fork():
        a = torch.rand(2)
    with tracker.fork():
        b = torch.rand(2)
    torch.manual_seed(42 + 2718)
    assert torch.equal(torch.cat([a, b]), torch.rand(4))
    with pytest.raises(ValueError, match="seed 2760 already exists"):
        tracker.add("other", 42 + 2718)
    with pytest.raises(ValueError, match="'nope' is not added"):
        with tracker.fork("nope"):
            pass
