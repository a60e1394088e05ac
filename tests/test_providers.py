"""ds-core's provider table (deepspeed/_providers.py) is generated from the packages; it must be
up to date with every feature's ``provides`` declaration and every ops package's entry points.
Runs in the combined session, where every package is installed."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("gen_providers", ROOT / "tools" / "gen_providers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_provider_table_is_fresh():
    gen = _generator()
    assert gen.TARGET.read_text() == gen.render(gen.collect()), (
        "packages/ds-core/src/deepspeed/_providers.py is stale. Fix: python tools/gen_providers.py and commit it")


def test_every_feature_package_is_in_the_table():
    import tomllib

    from deepspeed import _providers

    for pyproject in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        meta = tomllib.loads(pyproject.read_text())["project"]
        for name in meta.get("entry-points", {}).get("deepspeed.features", {}):
            assert _providers.FEATURES[name] == meta["name"]
        for name in meta.get("entry-points", {}).get("deepspeed.accelerators", {}):
            assert _providers.ACCELERATORS[name] == meta["name"]
