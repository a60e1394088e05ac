"""Accelerator selection order and core's plain CPU accelerator."""

import os
import subprocess
import sys

import pytest

from deepspeed import _plugins
from deepspeed.accelerator import CPU_Accelerator, DeepSpeedAccelerator, get_accelerator, set_accelerator
from deepspeed.accelerator import real_accelerator
from deepspeed.testing.conformance import AcceleratorConformance


class TestCoreCPUConformance(AcceleratorConformance):
    """Core's fallback CPU accelerator passes the same kit every plugin runs."""

    accelerator_name = "cpu"
    distribution = None
    # Core's CPU accelerator has no kernels of its own (ds-ops-cpu registers cpu.<op> builders).
    op_builders = ()


@pytest.fixture(autouse=True)
def fresh_selection(monkeypatch):
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    real_accelerator._reset_for_tests()
    yield
    real_accelerator._reset_for_tests()


class _Fake(DeepSpeedAccelerator):
    _name = "fake"
    priority = 10
    available = True

    @classmethod
    def is_available(cls):
        return cls.available

    @classmethod
    def unavailable_reason(cls):
        return "the fake device is unplugged"


class _FakeHigh(_Fake):
    _name = "fakehigh"
    priority = 20
    available = False


def _fake_registry(monkeypatch, classes):
    plugins = {}
    for cls in classes:
        p = _plugins.Plugin(_plugins.ACCELERATORS, cls._name, f"x:{cls.__name__}", f"ds-ops-{cls._name}", "1.2.3")
        plugins[cls._name] = p
    monkeypatch.setattr(_plugins, "accelerators", lambda: plugins)
    monkeypatch.setattr(_plugins.Plugin, "load", lambda self: {c._name: c for c in classes}[self.name])


def test_auto_picks_highest_priority_available(monkeypatch):
    _fake_registry(monkeypatch, [_Fake, _FakeHigh])
    acc = get_accelerator()
    assert type(acc) is _Fake  # _FakeHigh has higher priority but is unavailable
    assert "highest-priority available plugin (ds-ops-fake 1.2.3, priority 10)" in real_accelerator.selection_reason()
    _FakeHigh.available = True
    try:
        real_accelerator._reset_for_tests()
        assert type(get_accelerator()) is _FakeHigh
    finally:
        _FakeHigh.available = False


def test_no_plugin_falls_back_to_plain_cpu(monkeypatch):
    _fake_registry(monkeypatch, [])
    acc = get_accelerator()
    assert type(acc) is CPU_Accelerator
    assert "plain CPU accelerator from ds-core (no kernels)" in real_accelerator.selection_reason()


def test_env_beats_auto_and_explicit_beats_env(monkeypatch):
    _fake_registry(monkeypatch, [_Fake, _FakeHigh])
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert type(get_accelerator()) is CPU_Accelerator
    assert real_accelerator.selection_reason().startswith("DS_ACCELERATOR=cpu")
    set_accelerator(_Fake())
    assert type(get_accelerator()) is _Fake
    assert real_accelerator.selection_reason() == "set_accelerator(_Fake())"


def test_env_names_unavailable_plugin_and_reason(monkeypatch):
    _fake_registry(monkeypatch, [_Fake, _FakeHigh])
    monkeypatch.setenv("DS_ACCELERATOR", "fakehigh")
    with pytest.raises(RuntimeError) as info:
        get_accelerator()
    assert str(info.value) == (
        "DS_ACCELERATOR=fakehigh: the fakehigh accelerator (ds-ops-fakehigh 1.2.3) is installed but not "
        "available on this machine: the fake device is unplugged. Fix: unset DS_ACCELERATOR to pick an "
        "available accelerator, or run where fakehigh is present."
    )


def test_env_unknown_name_lists_installed_and_fix(monkeypatch):
    _fake_registry(monkeypatch, [_Fake])
    monkeypatch.setenv("DS_ACCELERATOR", "xpu")
    with pytest.raises(ValueError, match=r"DS_ACCELERATOR=xpu: no accelerator named 'xpu' is installed .*Installed: cpu \(ds-core, no kernels\), fake \(ds-ops-fake\)\. Fix: pip install ds-ops-xpu"):
        get_accelerator()


def test_set_accelerator_rejects_non_accelerators():
    with pytest.raises(ValueError, match="set_accelerator expects an instance of deepspeed.accelerator.DeepSpeedAccelerator, got builtins.str"):
        set_accelerator("cuda")


def test_ds_accelerator_cuda_fails_clearly_in_a_fresh_process():
    env = dict(os.environ, DS_ACCELERATOR="cuda")
    code = "from deepspeed.accelerator import get_accelerator; get_accelerator()"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    if "cuda" in _plugins.accelerators():
        assert "installed but not available on this machine" in last
    else:
        assert last.endswith("Fix: pip install ds-ops-cuda, or unset DS_ACCELERATOR.")


def test_cpu_memory_figures_track_allocation():
    import torch

    acc = CPU_Accelerator()
    before = acc.memory_allocated()
    big = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB touched
    after = acc.memory_allocated()
    assert after - before >= 48 * 1024 * 1024
    assert acc.max_memory_allocated() >= after - 4096
    del big
