"""Rules a plugin must keep to be used: its own plugin-API version (never inherited), a priority
that does not tie with another available accelerator, and the conformance kit, which fails when
its subject is missing (an accelerator without op builders)."""

import subprocess
import sys
import textwrap

import pytest

from deepspeed import _plugins
from deepspeed.accelerator import DeepSpeedAccelerator, get_accelerator, real_accelerator
from deepspeed.testing import conformance
from deepspeed.testing.conformance import AcceleratorConformance

VENDOR = """
from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator
from deepspeed.ops.op_builder import OpBuilder


class Inherits(CPU_Accelerator):
    # Built for another plugin API, but declares nothing: the base's "1.0" must not vouch for it.
    _name = "inherits"


class Declares(CPU_Accelerator):
    DS_PLUGIN_API = "1.0"
    _name = "declares"


class InheritsBuilder(OpBuilder):
    NAME = "scale"
"""


@pytest.fixture
def vendor_module(tmp_path, monkeypatch):
    (tmp_path / "acme_rules_vendor.py").write_text(VENDOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    _plugins.reset()
    yield "acme_rules_vendor"
    _plugins.reset()
    sys.modules.pop("acme_rules_vendor", None)


def _plugin(group, name, value):
    return _plugins.Plugin(group, name, value, "acme-ds-ops", "0.3.0")


def test_inherited_api_version_is_refused(vendor_module):
    plugin = _plugin(_plugins.ACCELERATORS, "inherits", f"{vendor_module}:Inherits")
    with pytest.raises(_plugins.PluginError) as info:
        plugin.load()
    assert str(info.value) == (
        "plugin 'inherits' (deepspeed.accelerators) from acme-ds-ops 0.3.0: acme_rules_vendor:Inherits does "
        "not declare its own plugin API version; it inherits DS_PLUGIN_API = '1.0' from "
        "deepspeed.accelerator.abstract_accelerator.DeepSpeedAccelerator, which states what that base class "
        f"targets, not what acme_rules_vendor:Inherits was written for. ds-core {_plugins._core_version()} "
        "accepts plugin API 1.0 to 1.0. Fix: set DS_PLUGIN_API = \"1.0\" in the class body of "
        "acme_rules_vendor:Inherits once it keeps that contract, or upgrade acme-ds-ops."
    )


def test_inherited_op_builder_api_is_refused_and_own_declaration_loads(vendor_module):
    builder = _plugin(_plugins.OP_BUILDERS, "acme.scale", f"{vendor_module}:InheritsBuilder")
    with pytest.raises(_plugins.PluginError, match=r"InheritsBuilder does not declare its own plugin API version; "
                       r"it inherits DS_PLUGIN_API = '1.0' from deepspeed\.ops\.op_builder\.builder\.OpBuilder"):
        builder.load()
    ok = _plugin(_plugins.ACCELERATORS, "declares", f"{vendor_module}:Declares").load()
    assert ok.__name__ == "Declares"


@pytest.fixture
def fresh_selection(monkeypatch):
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    real_accelerator._reset_for_tests()
    yield
    real_accelerator._reset_for_tests()


class _Tie(DeepSpeedAccelerator):
    priority = 7

    @classmethod
    def is_available(cls):
        return True


class _Alpha(_Tie):
    _name = "alpha"


class _Beta(_Tie):
    _name = "beta"


class _Gamma(_Tie):
    _name = "gamma"
    priority = 8

    @classmethod
    def is_available(cls):
        return False


def _registry(monkeypatch, classes):
    plugins = {c._name: _plugins.Plugin(_plugins.ACCELERATORS, c._name, f"x:{c.__name__}", f"ds-ops-{c._name}", "1.0.0")
               for c in classes}
    monkeypatch.setattr(_plugins, "accelerators", lambda: plugins)
    monkeypatch.setattr(_plugins.Plugin, "load", lambda self: {c._name: c for c in classes}[self.name])


def test_priority_tie_is_an_error_naming_both_and_ds_accelerator(monkeypatch, fresh_selection):
    _registry(monkeypatch, [_Beta, _Alpha, _Gamma])  # gamma is higher but unavailable
    with pytest.raises(RuntimeError) as info:
        get_accelerator()
    assert str(info.value) == (
        "2 available accelerators share the highest priority 7: alpha (ds-ops-alpha 1.0.0) and beta "
        "(ds-ops-beta 1.0.0); ds-core does not guess between them. Fix: set DS_ACCELERATOR=alpha or "
        "DS_ACCELERATOR=beta (or call deepspeed.accelerator.set_accelerator), or give one plugin its own "
        "priority (class attribute `priority`, higher wins)."
    )
    monkeypatch.setenv("DS_ACCELERATOR", "beta")
    assert type(get_accelerator()) is _Beta


def test_no_tie_when_one_priority_is_higher(monkeypatch, fresh_selection):
    class _Alpha2(_Alpha):
        priority = 9

    _registry(monkeypatch, [_Beta, _Alpha2])
    assert type(get_accelerator()) is _Alpha2


class _NoOpsKit(AcceleratorConformance):
    accelerator_name = "cpu"
    distribution = None  # core's CPU accelerator


def test_kit_fails_for_an_accelerator_without_op_builders(monkeypatch):
    monkeypatch.setattr(_plugins, "op_builders", lambda accelerator=None: {})
    with pytest.raises(AssertionError, match=r"accelerator 'cpu' has no op builders \(no 'cpu\.<op>' entry point in "
                       r"deepspeed\.op_builders\); register them, or declare op_builders = \(\)"):
        _NoOpsKit().test_op_builders_load_and_describe_themselves()
    _NoOpsKit.op_builders = ("cpu_adam",)
    try:
        with pytest.raises(AssertionError, match=r"accelerator 'cpu' lacks op builders \['cpu_adam'\]; registered: \[\]"):
            _NoOpsKit().test_op_builders_load_and_describe_themselves()
    finally:
        _NoOpsKit.op_builders = None


def test_kit_fails_when_the_name_is_unset():
    class _Unset(AcceleratorConformance):
        pass

    with pytest.raises(AssertionError, match="_Unset.accelerator_name is not set"):
        _Unset().test_plugin_metadata()


NOOPS_MODULE = """
from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator


class NoOps(CPU_Accelerator):
    DS_PLUGIN_API = "1.0"
    _name = "noops"
    priority = -50
"""


@pytest.fixture
def noops_dist(tmp_path, monkeypatch):
    """A distribution (a dist-info folder on sys.path, no pip) registering an accelerator without
    op builders; its entry point is real, so the kit finds it as it would a vendor's."""
    (tmp_path / "acme_noops.py").write_text(textwrap.dedent(NOOPS_MODULE))
    info = tmp_path / "acme_noops-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-noops\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[deepspeed.accelerators]\nnoops = acme_noops:NoOps\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    _plugins.reset()
    yield
    _plugins.reset()
    sys.modules.pop("acme_noops", None)


def test_kit_command_fails_on_accelerator_without_op_builders(noops_dist, capsys):
    """``python -m deepspeed.testing.conformance noops`` (main() is what ``-m`` runs)."""
    assert conformance.main(["noops"]) == 1
    out = capsys.readouterr().out
    assert "accelerator 'noops' has no op builders" in out
    assert "1 failed, 10 passed" in out
    assert conformance.main(["noops", "--no-ops"]) == 0
    assert "11 passed" in capsys.readouterr().out


def test_kit_command_fails_on_a_missing_accelerator():
    """The documented entry point, as a module in a fresh process, refuses a name not installed."""
    proc = subprocess.run([sys.executable, "-m", "deepspeed.testing.conformance", "nosuch"],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith(
        "conformance: deepspeed.accelerators: no plugin named 'nosuch' (misspelled or not installed).")
