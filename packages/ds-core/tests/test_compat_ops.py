"""DeepSpeed's op-builder class names, ``deepspeed.accelerator.<vendor>_accelerator`` modules,
``deepspeed.git_version_info`` and ``deepspeed.ops.__compatible_ops__``, used as DeepSpeed code
uses them. Tests that need an ops package skip when it is not installed (ds-core alone)."""

import importlib
import importlib.util
import subprocess
import sys

import pytest
import torch

import deepspeed
from deepspeed import _plugins
from deepspeed.accelerator import CPU_Accelerator, DeepSpeedAccelerator, get_accelerator, set_accelerator
from deepspeed.ops import op_builder
from deepspeed.ops.op_builder import OpBuilder


def _has(dist_module):
    return importlib.util.find_spec(dist_module) is not None


needs_cpu_ops = pytest.mark.skipif(not _has("ds_ops_cpu"), reason="needs ds-ops-cpu")
needs_cuda_ops = pytest.mark.skipif(not _has("ds_ops_cuda"), reason="needs ds-ops-cuda")


@pytest.fixture
def accelerator():
    """Switch accelerators inside a test and restore the previous one."""
    previous = get_accelerator()
    yield set_accelerator
    set_accelerator(previous)


# DeepSpeed 0.19's class name -> (NAME, BUILD_VAR), from its op_builder/ tree
DEEPSPEED_NAMES = {
    "CPUAdamBuilder": ("cpu_adam", "DS_BUILD_CPU_ADAM"), "CPUAdagradBuilder": ("cpu_adagrad", "DS_BUILD_CPU_ADAGRAD"),
    "CPULionBuilder": ("cpu_lion", "DS_BUILD_CPU_LION"), "FusedAdamBuilder": ("fused_adam", "DS_BUILD_FUSED_ADAM"),
    "FusedLambBuilder": ("fused_lamb", "DS_BUILD_FUSED_LAMB"), "FusedLionBuilder": ("fused_lion", "DS_BUILD_FUSED_LION"),
    "AsyncIOBuilder": ("async_io", "DS_BUILD_AIO"), "GDSBuilder": ("gds", "DS_BUILD_GDS"),
    "QuantizerBuilder": ("quantizer", "DS_BUILD_QUANTIZER"),
    "InferenceBuilder": ("transformer_inference", "DS_BUILD_TRANSFORMER_INFERENCE"),
    "TransformerBuilder": ("transformer", "DS_BUILD_TRANSFORMER"), "SparseAttnBuilder": ("sparse_attn", "DS_BUILD_SPARSE_ATTN"),
    "RaggedOpsBuilder": ("ragged_device_ops", "DS_BUILD_RAGGED_DEVICE_OPS"),
    "FPQuantizerBuilder": ("fp_quantizer", "DS_BUILD_FP_QUANTIZER"), "PinMemoryBuilder": ("pin_memory", "DS_BUILD_PIN_MEMORY"),
}


def test_builder_classes_have_deepspeeds_names():
    for class_name, (name, build_var) in DEEPSPEED_NAMES.items():
        cls = getattr(op_builder, class_name)
        assert class_name in op_builder.__all__
        assert issubclass(cls, OpBuilder) and cls.__name__ == class_name
        assert (cls.NAME, cls.BUILD_VAR) == (name, build_var)
    from deepspeed.ops.op_builder import CPUAdamBuilder, FusedAdamBuilder  # noqa: F401  (DeepSpeed's import line)


@needs_cpu_ops
def test_cpu_builders_resolve_to_the_ops_package_and_load(accelerator):
    from ds_ops_cpu.accelerator import CPU_Accelerator as OpsCPU

    from deepspeed.ops.op_builder import CPUAdagradBuilder, CPUAdamBuilder, CPULionBuilder

    from ds_ops_cpu import op_builders as ops_builders

    accelerator(OpsCPU())
    for cls, fn in ((CPUAdamBuilder, "adam_step"), (CPUAdagradBuilder, "adagrad_step"), (CPULionBuilder, "lion_step")):
        builder = cls()
        assert isinstance(builder, getattr(ops_builders, cls.__name__))  # the ops package's builder
        assert isinstance(builder, cls) and isinstance(builder, OpBuilder) and builder.NAME == cls.NAME
        assert builder.is_compatible() is True
        module = builder.load()  # what DeepSpeed's optimizers do: CPUAdamBuilder().load()
        native = get_accelerator().create_op_builder(cls.NAME).load()
        assert getattr(module, fn) is getattr(native, fn)  # the same kernels, plus DeepSpeed's functions


@needs_cpu_ops
@needs_cuda_ops
def test_host_ops_fall_back_to_cpu_under_a_device_accelerator(accelerator):
    from ds_ops_cuda.accelerator import CUDA_Accelerator

    from deepspeed.ops.op_builder import CPUAdamBuilder, FusedAdamBuilder

    from ds_ops_cpu.op_builders import CPUAdamBuilder as OpsCPUAdamBuilder

    accelerator(CUDA_Accelerator())
    assert isinstance(CPUAdamBuilder(), OpsCPUAdamBuilder)  # a host op: the cpu builder
    fused = FusedAdamBuilder()
    assert isinstance(fused, FusedAdamBuilder) and fused.is_compatible() is False
    with pytest.raises(RuntimeError, match=r"FusedAdamBuilder\(\)\.load\(\): no installed ops package provides the "
                                           r"'fused_adam' op for the cuda accelerator\. ds-ops-cuda .* is installed but "
                                           r"does not provide it"):
        fused.load()


def test_missing_ops_package_names_the_pip_install(accelerator, monkeypatch, caplog):
    from deepspeed.ops.op_builder import CPUAdamBuilder, QuantizerBuilder

    accelerator(CPU_Accelerator())  # core's plain CPU accelerator, as with ds-core alone
    monkeypatch.setattr(_plugins, "op_builders", lambda accelerator=None: {})
    monkeypatch.setattr(_plugins, "accelerators", lambda: {})
    builder = CPUAdamBuilder()
    assert type(builder) is CPUAdamBuilder and builder.NAME == "cpu_adam"
    with caplog.at_level("WARNING", logger="DeepSpeed"):
        assert builder.is_compatible(verbose=True) is False
    assert "no installed ops package provides the 'cpu_adam' op for the cpu accelerator" in caplog.text
    with pytest.raises(RuntimeError, match=r"CPUAdamBuilder\(\)\.load\(\): .*'cpu_adam' op for the cpu accelerator\. "
                                           r"Fix: pip install ds-ops-cpu"):
        builder.load()
    with pytest.raises(RuntimeError, match="pip install ds-ops-cpu"):
        QuantizerBuilder().jit_load()


def test_compatible_ops_tables(accelerator):
    from deepspeed.ops.op_builder import CPUAdamBuilder, FusedLambBuilder
    from deepspeed.ops.op_builder.all_ops import ALL_OPS, accelerator_name

    ops = deepspeed.ops.__compatible_ops__
    assert set(DEEPSPEED_NAMES[n][0] for n in DEEPSPEED_NAMES) <= set(ops)
    assert ops["deepspeed_not_implemented"] is False
    assert ops["cpu_adam"] is CPUAdamBuilder().is_compatible()
    assert ops["fused_lamb"] is FusedLambBuilder().is_compatible()
    assert accelerator_name == get_accelerator()._name
    assert isinstance(ALL_OPS["cpu_adam"], CPUAdamBuilder) and ALL_OPS["cpu_adam"].NAME == "cpu_adam"


def test_git_version_info():
    from deepspeed.git_version_info import (accelerator_name, compatible_ops, git_branch, git_hash, installed_ops,
                                            torch_info, version)

    assert version == deepspeed.__version__
    assert torch_info["version"] == ".".join(torch.__version__.split(".")[:2])
    assert set(torch_info) == {"version", "cuda_version", "hip_version"}
    assert accelerator_name == get_accelerator()._name
    assert set(installed_ops) == set(compatible_ops) - {"deepspeed_not_implemented"}
    assert all(isinstance(v, bool) for v in installed_ops.values())
    assert deepspeed.__git_hash__ == git_hash and deepspeed.__git_branch__ == git_branch
    try:
        expected = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=deepspeed.__path__[0],
                                  capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        expected = "[none]"
    assert git_hash == expected or git_hash == "[none]"


VENDOR_MODULES = [("deepspeed.accelerator.cuda_accelerator", "CUDA_Accelerator", "ds_ops_cuda", "cuda", "nccl"),
                  ("deepspeed.accelerator.xpu_accelerator", "XPU_Accelerator", "ds_ops_xpu", "xpu", "xccl"),
                  ("deepspeed.accelerator.npu_accelerator", "NPU_Accelerator", "ds_ops_npu", "npu", "hccl"),
                  ("deepspeed.accelerator.hpu_accelerator", "HPU_Accelerator", "ds_ops_hpu", "hpu", "hccl")]


@pytest.mark.parametrize("module, cls_name, package, name, backend", VENDOR_MODULES)
def test_vendor_accelerator_modules_reexport_the_ops_package(module, cls_name, package, name, backend):
    if not _has(package):
        pytest.skip(f"needs {package}")
    mod = importlib.import_module(module)
    cls = getattr(mod, cls_name)
    assert cls.__module__ == f"{package}.accelerator" and issubclass(cls, DeepSpeedAccelerator)
    acc = cls()  # constructing one never needs the device (the plugin rule)
    assert acc._name == name and acc.communication_backend_name() == backend
    assert isinstance(cls.is_available(), bool)


@pytest.mark.parametrize("module, cls_name, dist", [("cuda_accelerator", "CUDA_Accelerator", "ds-ops-cuda"),
                                                     ("xpu_accelerator", "XPU_Accelerator", "ds-ops-xpu")])
def test_vendor_accelerator_module_without_its_package(monkeypatch, module, cls_name, dist):
    monkeypatch.setattr(_plugins, "accelerators", lambda: {})
    monkeypatch.delitem(sys.modules, f"deepspeed.accelerator.{module}", raising=False)
    with pytest.raises(ImportError, match=f"cannot import {cls_name} from deepspeed.accelerator.{module}: no ops "
                                          f"package registers the .* accelerator .*Fix: pip install {dist}"):
        importlib.import_module(f"deepspeed.accelerator.{module}")
    monkeypatch.delitem(sys.modules, f"deepspeed.accelerator.{module}", raising=False)


def test_each_builder_loads_or_names_the_fix():
    from deepspeed.ops.op_builder import (AsyncIOBuilder, FusedLambBuilder, FusedLionBuilder, GDSBuilder,
                                          InferenceBuilder, QuantizerBuilder)
    from deepspeed.ops.op_builder._compat_names import MissingOpBuilder

    for cls in (AsyncIOBuilder, FusedLambBuilder, FusedLionBuilder, GDSBuilder, InferenceBuilder, QuantizerBuilder):
        builder = cls()
        assert isinstance(builder, cls) and isinstance(builder, OpBuilder) and builder.NAME == cls.NAME
        if isinstance(builder, MissingOpBuilder):  # no installed ops package has it for this accelerator
            assert builder.is_compatible() is False
            with pytest.raises(RuntimeError, match=f"{cls.__name__}\\(\\)\\.load\\(\\): no installed ops package provides "
                                                   f"the '{cls.NAME}' op .*Fix: "):
                builder.load()
        else:  # an ops package registers it: it builds or says why not
            assert isinstance(builder.is_compatible(), bool)


# DeepSpeed's per-op builder modules (deepspeed/ops/op_builder/<op>.py) and the class each defines
PER_OP_MODULES = [
    ("deepspeed.ops.op_builder.async_io", "AsyncIOBuilder"), ("deepspeed.ops.op_builder.cpu_adagrad", "CPUAdagradBuilder"),
    ("deepspeed.ops.op_builder.cpu_adam", "CPUAdamBuilder"), ("deepspeed.ops.op_builder.cpu_lion", "CPULionBuilder"),
    ("deepspeed.ops.op_builder.dc", "DeepCompileBuilder"), ("deepspeed.ops.op_builder.evoformer_attn", "EvoformerAttnBuilder"),
    ("deepspeed.ops.op_builder.fp_quantizer", "FPQuantizerBuilder"), ("deepspeed.ops.op_builder.fused_adam", "FusedAdamBuilder"),
    ("deepspeed.ops.op_builder.fused_lamb", "FusedLambBuilder"), ("deepspeed.ops.op_builder.fused_lion", "FusedLionBuilder"),
    ("deepspeed.ops.op_builder.gds", "GDSBuilder"), ("deepspeed.ops.op_builder.inference_core_ops", "InferenceCoreBuilder"),
    ("deepspeed.ops.op_builder.inference_cutlass_builder", "InferenceCutlassBuilder"),
    ("deepspeed.ops.op_builder.pin_memory", "PinMemoryBuilder"), ("deepspeed.ops.op_builder.quantizer", "QuantizerBuilder"),
    ("deepspeed.ops.op_builder.ragged_ops", "RaggedOpsBuilder"), ("deepspeed.ops.op_builder.ragged_utils", "RaggedUtilsBuilder"),
    ("deepspeed.ops.op_builder.random_ltd", "RandomLTDBuilder"), ("deepspeed.ops.op_builder.sparse_attn", "SparseAttnBuilder"),
    ("deepspeed.ops.op_builder.spatial_inference", "SpatialInferenceBuilder"),
    ("deepspeed.ops.op_builder.stochastic_transformer", "StochasticTransformerBuilder"),
    ("deepspeed.ops.op_builder.transformer", "TransformerBuilder"),
    ("deepspeed.ops.op_builder.transformer_inference", "InferenceBuilder"), ("deepspeed.ops.op_builder.utils", "UtilsBuilder"),
]


@pytest.mark.parametrize("module, class_name", PER_OP_MODULES)
def test_per_op_builder_modules(module, class_name):
    cls = getattr(importlib.import_module(module), class_name)
    assert cls is getattr(op_builder, class_name)
    builder = cls()  # DeepSpeed's code: PinMemoryBuilder().load() / .is_compatible()
    assert isinstance(builder, cls) and builder.NAME == cls.NAME
    assert builder.is_compatible() in (True, False)


def _grads(steps, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g), [torch.randn(n, generator=g) for _ in range(steps)]


@needs_cpu_ops
@pytest.mark.parametrize("adamw_mode, torch_cls", [(True, torch.optim.AdamW), (False, torch.optim.Adam)])
def test_deepspeed_adam_call_interface(adamw_mode, torch_cls):
    # the calls DeepSpeed's DeepSpeedCPUAdam makes on CPUAdamBuilder().load()
    from deepspeed.ops.op_builder import CPUAdamBuilder

    ds_opt_adam = CPUAdamBuilder().load()
    p0, grads = _grads(3, 1000)
    param, exp_avg, exp_avg_sq = p0.clone(), torch.zeros(1000), torch.zeros(1000)
    ref_param = torch.nn.Parameter(p0.clone())
    ref = torch_cls([ref_param], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    assert ds_opt_adam.create_adam(7, 1e-2, 0.9, 0.99, 1e-8, 0.1, adamw_mode, False) == 0
    for step, grad in enumerate(grads, start=1):
        ds_opt_adam.adam_update(7, step, 1e-2, 0.9, 0.99, 1e-8, 0.1, True, param, grad, exp_avg, exp_avg_sq)
        ref_param.grad = grad.clone()
        ref.step()
    assert torch.allclose(param, ref_param.detach(), rtol=1e-6, atol=1e-7)
    assert torch.allclose(exp_avg_sq, ref.state[ref_param]["exp_avg_sq"], rtol=1e-6, atol=1e-9)
    ds_opt_adam.destroy_adam(7)
    with pytest.raises(ValueError, match=r"adam_update: no adam optimizer with id 7; call create_adam\(7, ...\) first"):
        ds_opt_adam.adam_update(7, 4, 1e-2, 0.9, 0.99, 1e-8, 0.1, True, param, grads[0], exp_avg, exp_avg_sq)
    ds_opt_adam.create_adam(8, 1e-2, 0.9, 0.99, 1e-8, 0.0, True, False)
    with pytest.raises(ValueError, match="adam_update: grads must be a contiguous float32 CPU tensor"):
        ds_opt_adam.adam_update(8, 1, 1e-2, 0.9, 0.99, 1e-8, 0.0, True, param, grads[0].bfloat16(), exp_avg, exp_avg_sq)


@needs_cpu_ops
def test_deepspeed_adagrad_and_lion_call_interfaces():
    from deepspeed.ops.op_builder import CPUAdagradBuilder, CPULionBuilder
    from deepspeed.testing.reference import ReferenceLion

    adagrad, lion = CPUAdagradBuilder().load(), CPULionBuilder().load()
    p0, grads = _grads(3, 777, seed=1)
    a, a_sum, a_ref = p0.clone(), torch.zeros(777), torch.nn.Parameter(p0.clone())
    a_opt = torch.optim.Adagrad([a_ref], lr=0.1, eps=1e-10, weight_decay=0.01)
    lp, l_avg, l_ref = p0.clone(), torch.zeros(777), torch.nn.Parameter(p0.clone())
    l_opt = ReferenceLion([l_ref], lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    adagrad.create_adagrad(0, 0.1, 1e-10, 0.01, False)
    lion.create_lion(0, 1e-3, 0.9, 0.99, 0.1, False)
    for step, grad in enumerate(grads, start=1):
        adagrad.adagrad_update(0, step, 0.1, 1e-10, 0.01, a, grad, a_sum)
        lion.lion_update(0, step, 1e-3, 0.9, 0.99, 0.1, lp, grad, l_avg)
        a_ref.grad, l_ref.grad = grad.clone(), grad.clone()
        a_opt.step()
        l_opt.step()
    assert torch.allclose(a, a_ref.detach(), rtol=1e-6, atol=1e-7)
    assert torch.allclose(lp, l_ref.detach(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="lion_update: exp_avg has 3 elements, the params have 777"):
        lion.lion_update(0, 4, 1e-3, 0.9, 0.99, 0.1, lp, grads[0], torch.zeros(3))
    adagrad.destroy_adagrad(0)
    lion.destroy_lion(0)


def test_op_builder_all_lists_every_deepspeed_builder_class():
    """``deepspeed.ops.op_builder.__all__`` is written out for the public-surface check; it must
    name exactly the DeepSpeed builder classes the module exports (``from ... import *`` users)."""
    import deepspeed.ops.op_builder as op_builder
    from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

    assert sorted(op_builder.__all__) == sorted(["CompileUnit", "OpBuilder", *BUILDER_CLASSES])
    for name in BUILDER_CLASSES:
        assert getattr(op_builder, name) is BUILDER_CLASSES[name]
