"""ds-aio installs into the `deepspeed` namespace and registers its feature."""
import importlib.metadata

from deepspeed import _plugins


def test_namespace_import():
    import deepspeed
    import deepspeed.io

    # Note: the feature module lives in this package, the namespace root in ds-core.
    assert deepspeed.io.__version__ == importlib.metadata.version("ds-aio")
    assert deepspeed.__file__ != deepspeed.io.__file__


def test_feature_registered():
    feats = _plugins.features()
    assert "io" in feats
    assert feats["io"].distribution == "ds-aio"
