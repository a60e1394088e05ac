"""Every plugin of this repository declares its own plugin-API version, so ds-core loads it (an
inherited DS_PLUGIN_API is refused). Runs in the combined session, where every package is
installed."""

import pathlib
import tomllib

from deepspeed import _plugins

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _declared() -> dict[str, set[str]]:
    """Entry points each group should have, read from the packages' pyproject.toml files."""
    out: dict[str, set[str]] = {g: set() for g in _plugins.GROUPS}
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        eps = tomllib.loads(pyproject.read_text())["project"].get("entry-points", {})
        for group in _plugins.GROUPS:
            out[group] |= set(eps.get(group, {}))
    return out


def test_every_plugin_of_the_repository_loads_with_its_own_api_version():
    declared = _declared()
    assert declared[_plugins.ACCELERATORS] >= {"cpu", "cuda", "rocm", "xpu", "hpu", "npu"}
    for group, names in declared.items():
        installed = _plugins.entry_points(group)
        assert names <= set(installed), f"{group}: not installed: {sorted(names - set(installed))}"
        for name in sorted(names):
            obj = installed[name].load()  # raises PluginError for an inherited or missing version
            cls = obj if isinstance(obj, type) else type(obj)
            assert "DS_PLUGIN_API" in vars(cls) or "DS_PLUGIN_API" in getattr(obj, "__dict__", {}), (group, name)
