"""The plugin registry: lookups, errors that say what to install, and the plugin-API check."""

import pytest

from deepspeed import _plugins


class _Obj:
    pass


def _plugin(group=_plugins.ACCELERATORS, name="acme", dist="acme-ds-ops", version="0.3.0"):
    return _plugins.Plugin(group, name, "acme_ds_ops.accelerator:Acme", dist, version)


@pytest.mark.parametrize("declared", ["1.0", (1, 0)])
def test_api_version_accepted(declared):
    obj = _Obj()
    obj.DS_PLUGIN_API = declared
    _plugins.check_api(obj, _plugin())


def test_newer_major_api_is_refused_with_package_version_and_range():
    obj = _Obj()
    obj.DS_PLUGIN_API = "2.0"
    with pytest.raises(_plugins.PluginError) as info:
        _plugins.check_api(obj, _plugin())
    msg = str(info.value)
    assert "plugin 'acme' (deepspeed.accelerators) from acme-ds-ops 0.3.0 targets plugin API 2.0" in msg
    assert "accepts plugin API 1.0 to 1.0" in msg
    assert "Fix: install a release of acme-ds-ops built for plugin API 1.x" in msg


def test_newer_minor_api_is_refused():
    obj = _Obj()
    obj.DS_PLUGIN_API = "1.9"
    with pytest.raises(_plugins.PluginError, match="targets plugin API 1.9"):
        _plugins.check_api(obj, _plugin())


def test_missing_api_declaration_is_refused():
    with pytest.raises(_plugins.PluginError, match=r"does not declare a plugin API version \(DS_PLUGIN_API = None\)"):
        _plugins.check_api(_Obj(), _plugin())


def test_missing_plugin_names_group_installed_and_pip_install(monkeypatch):
    fake = {"cpu": _plugin(name="cpu", dist="ds-ops-cpu", version="0.1.0")}
    monkeypatch.setattr(_plugins, "entry_points", lambda group: fake if group == _plugins.ACCELERATORS else {})
    with pytest.raises(_plugins.PluginNotFoundError) as info:
        _plugins.get(_plugins.ACCELERATORS, "cuda")
    assert str(info.value) == (
        "deepspeed.accelerators: no plugin named 'cuda' (misspelled or not installed). "
        "Installed: cpu. Fix: pip install ds-ops-cuda"
    )
    with pytest.raises(_plugins.PluginNotFoundError, match=r"no plugin named 'zero' .* Installed: none\. Fix: pip install ds-zero"):
        _plugins.get(_plugins.FEATURES, "zero")
    with pytest.raises(_plugins.PluginNotFoundError, match=r"no plugin named 'tpu' \(misspelled or not installed\)\. Installed: cpu\.$"):
        _plugins.get(_plugins.ACCELERATORS, "tpu")


def test_op_builder_hint_comes_from_the_accelerator_prefix():
    assert _plugins.provider_hint(_plugins.OP_BUILDERS, "cuda.fused_adam") == "ds-ops-cuda"
    assert _plugins.provider_hint(_plugins.OP_BUILDERS, "acme.x") is None


def test_unknown_group_is_a_value_error():
    with pytest.raises(ValueError, match="unknown plugin group 'deepspeed.nope'"):
        _plugins.entry_points("deepspeed.nope")


def test_broken_plugin_import_names_the_package():
    bad = _plugins.Plugin(_plugins.FEATURES, "broken", "no_such_module_xyz:feature", "broken-dist", "9.9")
    with pytest.raises(_plugins.PluginError, match=r"from broken-dist 9.9 failed to import no_such_module_xyz:feature: ModuleNotFoundError"):
        bad.load()


def test_entry_points_are_cached():
    a = _plugins.entry_points(_plugins.FEATURES)
    assert _plugins.entry_points.cache_info().hits >= 0
    b = _plugins.entry_points(_plugins.FEATURES)
    assert a == b
    before = _plugins.entry_points.cache_info().hits
    _plugins.entry_points(_plugins.FEATURES)
    assert _plugins.entry_points.cache_info().hits == before + 1
