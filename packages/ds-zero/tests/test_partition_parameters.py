"""deepspeed.zero.Init, GatheredParameters and register_external_parameter in one process (world size 1)."""

import pytest
import torch

import deepspeed
from deepspeed.runtime.zero import partition_parameters as pp
from deepspeed.zero import GatheredParameters, Init, ZeroParamStatus, register_external_parameter


def test_init_partitions_and_gathers():
    with Init():
        lin = torch.nn.Linear(3, 5)

        class Defined(torch.nn.Module):  # a class defined inside the context is wrapped too
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.ones(4, 2))

        inner = Defined()
    for p, shape in ((lin.weight, (5, 3)), (lin.bias, (5,)), (inner.w, (4, 2))):
        assert p.numel() == 0 and tuple(p.ds_shape) == shape and p.ds_status == ZeroParamStatus.NOT_AVAILABLE
        assert p.partition_numel() == p.ds_numel == torch.Size(shape).numel()
    with GatheredParameters(inner.w, modifier_rank=0):
        assert inner.w.shape == (4, 2) and bool((inner.w == 1).all())
        inner.w.data.mul_(3)
    assert inner.w.numel() == 0 and bool((inner.w.ds_tensor == 3).all())
    with GatheredParameters([inner.w]):  # no modifier: changes are dropped
        inner.w.data.zero_()
    assert bool((inner.w.ds_tensor == 3).all())
    # the patches are gone after the context
    assert torch.nn.Linear(2, 2).weight.numel() == 4 and "__init_subclass__" not in torch.nn.Module.__dict__


def test_init_disabled_and_module_argument():
    with Init(enabled=False):
        lin = torch.nn.Linear(3, 5)
    assert lin.weight.numel() == 15 and not hasattr(lin.weight, "ds_id")
    Init(module=lin)
    assert lin.weight.numel() == 0 and lin.weight.ds_numel == 15


def test_init_dtype_from_config_and_factory_wrapper(monkeypatch):
    seen = []

    def wrapper(fn, dtype):
        def wrapped(*args, **kwargs):
            seen.append(fn)
            t = fn(*args, **kwargs)
            return t if fn is pp._orig_torch_arange else t.to(dtype)
        return wrapped

    # Note: Transformers replaces this module attribute before entering Init; it must be honoured.
    monkeypatch.setattr(pp, "zero_wrapper_for_fp_tensor_constructor", wrapper)
    with Init(config_dict_or_path={"bf16": {"enabled": True}}):
        assert torch.zeros(2).dtype == torch.bfloat16 and torch.arange(3.0).dtype == torch.float32
        lin = torch.nn.Linear(2, 2)
    assert lin.weight.ds_tensor.dtype == torch.bfloat16 and pp._orig_torch_arange in seen
    assert torch.zeros(2).dtype == torch.float32


def test_init_rejects_unsupported():
    with pytest.raises(NotImplementedError, match="ZeRO\\+\\+ qwZ"):
        Init(zero_quantized_weights=True)
    with pytest.raises(NotImplementedError, match="needs ds-aio"):
        Init(remote_device="nvme")
    with pytest.raises(ValueError, match="expected a dict, a path to a JSON file"):
        Init(config_dict_or_path=42)


def test_external_parameter_is_gathered_for_the_forward():
    class Head(torch.nn.Module):
        def __init__(self, embed):
            super().__init__()
            self.embed = [embed]  # not a submodule: its weight is external to Head
            register_external_parameter(self, embed.weight)

        def forward(self, h):
            return h @ self.embed[0].weight.t()

    with Init():
        embed = torch.nn.Embedding(7, 3)
        head = Head(embed)
    from deepspeed.runtime.zero._fetch import ParameterFetcher

    fetcher = ParameterFetcher(head)
    out = head(torch.ones(2, 3))
    assert out.shape == (2, 7) and embed.weight.numel() == 0
    fetcher.remove()
    with pytest.raises(ValueError, match="was not registered as external"):
        deepspeed.zero.unregister_external_parameter(head, torch.nn.Parameter(torch.zeros(1)))


def test_init_reads_the_config_with_the_main_parser():
    """An HF-style config with fp16.enabled "auto" means "the default" (fp32), not fp16; a bad key is an
    error naming it; an unknown keyword argument is refused instead of swallowed."""
    with Init(config_dict_or_path={"fp16": {"enabled": "auto"}, "bf16": {"enabled": "auto"},
                                   "train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 3}}):
        lin = torch.nn.Linear(2, 2)
    assert lin.weight.ds_tensor.dtype == torch.float32
    with pytest.raises(ValueError, match=r"unknown key 'zero_optimization.stage3_prefetch_bucket'; did you mean"):
        Init(config_dict_or_path={"zero_optimization": {"stage": 3, "stage3_prefetch_bucket": 10}})
    with pytest.raises(TypeError, match="unexpected keyword argument 'remote_devices'"):
        Init(remote_devices="cpu")
