"""The CPU op builders: prebuilt detection, JIT build shared by concurrent ranks, and the PyTorch
fallback (with its warning) when building is impossible."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import torch

import ds_ops_cpu._prebuilt as prebuilt_pkg
from deepspeed.accelerator import get_accelerator
from deepspeed.ops._cpu_optimizer import NativeOpFallbackWarning, _reset_native
from deepspeed.ops.adam import DeepSpeedCPUAdam
from deepspeed.ops.op_builder.builder import _clear_loaded
from ds_ops_cpu.op_builders import CPUAdagradBuilder, CPUAdamBuilder, CPULionBuilder


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("DS_OPS_CACHE_DIR", str(tmp_path / "cache"))
    _reset_native()
    _clear_loaded()
    yield tmp_path
    _reset_native()
    _clear_loaded()


def test_builders_are_registered_for_the_cpu_accelerator():
    acc = get_accelerator()
    assert acc._name == "cpu"
    for name, cls in (("cpu_adam", CPUAdamBuilder), ("cpu_adagrad", CPUAdagradBuilder), ("cpu_lion", CPULionBuilder)):
        assert type(acc.create_op_builder(name)) is cls
        assert acc.get_op_builder(cls.__name__) is cls


def test_prebuilt_module_is_used_when_the_wheel_ships_it():
    shipped = sorted(p.name for p in pathlib.Path(prebuilt_pkg.__file__).parent.glob("cpu_adam_op*"))
    b = CPUAdamBuilder()
    if shipped:  # installed from a wheel: first use needs no compile
        assert b.is_built()
        module = b.load()
        assert pathlib.Path(module.__file__).parent == pathlib.Path(prebuilt_pkg.__file__).parent
        assert not b.jit_mode
    else:  # editable checkout: nothing prebuilt, the JIT cache serves
        assert not b.is_built()


def test_two_ranks_build_once(fresh, monkeypatch):
    monkeypatch.setenv("DS_OPS_SKIP_PREBUILT", "1")
    script = (
        "from ds_ops_cpu.op_builders import CPULionBuilder; m = CPULionBuilder().load(verbose=False); "
        "print(m.__file__); print(m.runnable_isas()[0])"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    files = {o[0].strip().splitlines()[-2] for o in outs}
    assert len(files) == 1, files  # both ranks loaded the same build
    log = pathlib.Path(files.pop()).parent / "build.log"
    assert log.read_text().count("built by") == 1


def test_impossible_build_falls_back_to_pytorch_with_one_warning(fresh, monkeypatch):
    monkeypatch.setenv("DS_OPS_SKIP_PREBUILT", "1")
    monkeypatch.setenv("CXX", str(fresh / "no-such-compiler"))
    p = torch.randn(1000)
    q = p.clone()
    with pytest.warns(NativeOpFallbackWarning, match=r"(?s)'cpu_adam' is unavailable, using the PyTorch reference path.*no C\+\+ compiler found"):
        ours = DeepSpeedCPUAdam([p], lr=1e-2, weight_decay=0.01)
    assert not ours.uses_native and ours.isa == "pytorch"
    ref = torch.optim.AdamW([q], lr=1e-2, weight_decay=0.01)
    for _ in range(10):
        g = torch.randn(1000)
        p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    assert torch.equal(p, q)  # the reference path is torch's own arithmetic


def test_ds_report_notes_name_the_isa(monkeypatch):
    monkeypatch.setenv("DS_CPU_ISA", "scalar")
    assert CPUAdamBuilder().compatibility_notes().startswith("ISA scalar (forced by DS_CPU_ISA")
    assert CPUAdamBuilder().is_compatible()
