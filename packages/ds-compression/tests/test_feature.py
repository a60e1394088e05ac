"""ds-compression installs into the `deepspeed` namespace and registers its feature."""
import importlib.metadata

from deepspeed import _plugins


def test_namespace_import():
    import deepspeed
    import deepspeed.compression

    # Note: the feature module lives in this package, the namespace root in ds-core.
    assert deepspeed.compression.__version__ == importlib.metadata.version("ds-compression")
    assert deepspeed.__file__ != deepspeed.compression.__file__


def test_feature_registered():
    feats = _plugins.features()
    assert "compression" in feats
    assert feats["compression"].distribution == "ds-compression"
