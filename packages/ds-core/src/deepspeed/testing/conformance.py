"""Accelerator conformance kit (needs pytest: ``pip install "ds-core[testing]"``).

Two ways to run it:

* from the command line, on any installed accelerator::

      python -m deepspeed.testing.conformance acme                 # at least one op builder
      python -m deepspeed.testing.conformance acme --ops acme_adam  # these op builders, at least
      python -m deepspeed.testing.conformance acme --no-ops         # declares it ships none

  It exits 0 only when every check ran and passed: an accelerator that is not installed, not
  available on this machine (its device checks cannot run), or without op builders (unless
  ``--no-ops``) fails.
* in a plugin's own test suite: subclass :class:`AcceleratorConformance` (and
  :class:`PluginRegistration`) and set the class attributes; pytest collects every ``test_*``
  method. There the device checks skip, with the plugin's own reason, where the accelerator is
  not available, so the suite still passes on machines without the device.

Every check fails when its subject is missing: an unset name, a plugin that is not installed,
an accelerator with no op builders when it did not declare ``op_builders = ()``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from deepspeed import _plugins
from deepspeed.accelerator.abstract_accelerator import DeepSpeedAccelerator


class AcceleratorConformance:
    accelerator_name: str = ""
    #: Distribution expected to provide the plugin; None for core's built-in CPU accelerator.
    distribution: str | None = None
    #: Op names (``cpu_adam``) the accelerator must provide through ``deepspeed.op_builders``.
    #: None: at least one; ``()``: the accelerator declares that it ships no op builders.
    op_builders: tuple[str, ...] | None = None

    # ---- fixture-free helpers (work under pytest and plain unittest-style runners) ----
    def _cls(self) -> type[DeepSpeedAccelerator]:
        if self.distribution is None:
            from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

            return CPU_Accelerator
        return _plugins.load(_plugins.ACCELERATORS, self.accelerator_name)

    def _acc(self) -> DeepSpeedAccelerator:
        cls = self._cls()
        if not cls.is_available():
            import pytest

            pytest.skip(f"{self.accelerator_name} is not available here: {cls.unavailable_reason()}")
        return cls()

    # ---- the checks ----
    def test_plugin_metadata(self):
        assert self.accelerator_name, f"{type(self).__name__}.accelerator_name is not set"
        cls = self._cls()
        assert issubclass(cls, DeepSpeedAccelerator)
        assert cls._name == self.accelerator_name
        if self.distribution is not None:
            plugin = _plugins.get(_plugins.ACCELERATORS, self.accelerator_name)
            assert plugin.distribution == self.distribution
        assert isinstance(cls.is_available(), bool)
        assert isinstance(cls.unavailable_reason(), str) and cls.unavailable_reason()

    def test_device_names_make_tensors_on_the_device(self):
        acc = self._acc()
        assert isinstance(acc.device_name(), str)
        assert isinstance(acc.current_device_name(), str)
        t = torch.ones(4, device=acc.current_device_name())
        assert acc.on_accelerator(t)
        assert torch.device(acc.device_name(0)).type == t.device.type
        assert acc.device_count() >= 1
        acc.synchronize()

    def test_communication_backend_is_known_to_torch(self):
        acc = self._acc()
        name = acc.communication_backend_name()
        assert isinstance(name, str) and name
        import torch.distributed as dist

        assert dist.is_available()
        assert name in dist.Backend.backend_list, f"{name} is not a torch.distributed backend"

    def test_rng_is_reproducible_and_state_round_trips(self):
        acc = self._acc()
        dev = acc.current_device_name()
        acc.manual_seed(1234)
        a = torch.rand(8, device=dev)
        acc.manual_seed(1234)
        b = torch.rand(8, device=dev)
        assert torch.equal(a, b)
        state = acc.get_rng_state()
        c = torch.rand(8, device=dev)
        acc.set_rng_state(state)
        d = torch.rand(8, device=dev)
        assert torch.equal(c, d)
        acc.manual_seed_all(7)
        assert acc.initial_seed() == 7

    def test_memory_calls_return_byte_counts(self):
        acc = self._acc()
        for fn in (acc.memory_allocated, acc.max_memory_allocated, acc.memory_reserved,
                   acc.max_memory_reserved, acc.total_memory, acc.available_memory):
            value = fn()
            assert isinstance(value, int) and value >= 0, fn.__name__
        assert acc.total_memory() > 0
        acc.empty_cache()
        acc.reset_peak_memory_stats()
        acc.reset_max_memory_allocated()
        assert isinstance(acc.memory_stats(), dict)

    def test_dtypes(self):
        acc = self._acc()
        assert isinstance(acc.is_bf16_supported(), bool)
        assert isinstance(acc.is_fp16_supported(), bool)
        dtypes = acc.supported_dtypes()
        assert torch.float32 in dtypes
        assert (torch.bfloat16 in dtypes) == acc.is_bf16_supported()

    def test_pin_memory_keeps_values(self):
        acc = self._acc()
        t = torch.arange(16, dtype=torch.float32)
        pinned = acc.pin_memory(t)
        assert torch.equal(pinned.cpu(), t)
        assert isinstance(acc.is_pinned(pinned), bool)

    def test_streams_and_events_exist(self):
        acc = self._acc()
        assert acc.Stream is not None
        assert acc.Event is not None
        assert acc.current_stream() is not None

    def test_launcher_envs(self):
        acc = self._acc()
        envs = acc.visible_devices_envs()
        assert envs and all(isinstance(e, str) and e for e in envs)
        env: dict[str, str] = {}
        acc.set_visible_devices_envs(env, [0, 1])
        assert all(env[e] == "0,1" for e in envs)
        assert all(isinstance(p, str) for p in acc.export_envs())

    def test_unknown_op_builder_is_a_clear_error(self):
        import pytest

        acc = self._acc()
        with pytest.raises(_plugins.PluginNotFoundError, match="no op builder 'no_such_op'.*misspelled or not installed"):
            acc.create_op_builder("no_such_op")

    def test_op_builders_load_and_describe_themselves(self):
        acc = self._acc()
        from deepspeed.ops.op_builder import OpBuilder

        registered = _plugins.op_builders(acc._name)
        names = sorted(k.split(".", 1)[1] for k in registered)
        if self.op_builders is None:
            assert registered, (
                f"accelerator '{acc._name}' has no op builders (no '{acc._name}.<op>' entry point in "
                f"{_plugins.OP_BUILDERS}); register them, or declare op_builders = () (--no-ops) "
                f"for an accelerator that ships none")
        else:
            missing = sorted(set(self.op_builders) - set(names))
            assert not missing, f"accelerator '{acc._name}' lacks op builders {missing}; registered: {names}"
        for key, plugin in registered.items():
            cls = plugin.load()
            assert issubclass(cls, OpBuilder), key
            builder = acc.create_op_builder(cls.NAME)
            assert builder.NAME == key.split(".", 1)[1]
            assert isinstance(builder.is_compatible(), bool)
            assert acc.get_op_builder(cls.__name__) is cls


class PluginRegistration:
    """Checks that an accelerator plugin registers correctly and, where its device is absent,
    reports itself unavailable without importing its SDK and is refused clearly by
    ``DS_ACCELERATOR``."""

    accelerator_name: str = ""
    distribution: str = ""
    communication_backend: str = ""
    visible_devices_env: str = ""
    #: Vendor SDK modules that must stay unimported while the plugin is probed; must be set,
    #: ``()`` for an accelerator whose SDK is torch itself.
    sdk_modules: tuple[str, ...] | None = None

    def _plugin_cls(self) -> type[DeepSpeedAccelerator]:
        return _plugins.load(_plugins.ACCELERATORS, self.accelerator_name)

    def _ds_accelerator_env(self):
        import os
        import subprocess
        import sys

        env = dict(os.environ, DS_ACCELERATOR=self.accelerator_name)
        code = "from deepspeed.accelerator import get_accelerator; print(get_accelerator()._name)"
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)

    def test_registered_under_entry_point(self):
        plugin = _plugins.get(_plugins.ACCELERATORS, self.accelerator_name)
        assert plugin.distribution == self.distribution
        cls = plugin.load()
        assert cls._name == self.accelerator_name
        assert cls().communication_backend_name() == self.communication_backend
        assert cls().visible_devices_envs()[0] == self.visible_devices_env

    def test_probe_does_not_import_sdk_when_absent(self):
        import importlib.util
        import sys

        assert self.sdk_modules is not None, (
            f"{type(self).__name__}.sdk_modules is not set: name the vendor SDK modules, or () when "
            f"the accelerator needs none beyond torch")
        cls = self._plugin_cls()
        assert isinstance(cls.is_available(), bool)
        assert cls.unavailable_reason()
        for module in self.sdk_modules:
            if importlib.util.find_spec(module) is None:
                assert module not in sys.modules, f"probing {self.accelerator_name} imported {module}"

    def test_ds_accelerator_env_selects_or_refuses_clearly(self):
        name = self.accelerator_name
        proc = self._ds_accelerator_env()
        if self._plugin_cls().is_available():
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.strip() == name
        else:
            assert proc.returncode == 1
            last = proc.stderr.strip().splitlines()[-1]
            assert f"DS_ACCELERATOR={name}: the {name} accelerator ({self.distribution} " in last
            assert "installed but not available on this machine" in last


class FeatureRegistration:
    """Checks that a feature package installs into the ``deepspeed`` namespace and registers its
    feature object under ``deepspeed.features``. Subclass it in the feature package's tests."""

    feature: str = ""
    distribution: str = ""

    def test_namespace_import(self):
        import importlib
        import importlib.metadata

        import deepspeed

        module = importlib.import_module(f"deepspeed.{self.feature}")
        # The subpackage comes from the feature's distribution, the namespace root from ds-core.
        assert module.__version__ == importlib.metadata.version(self.distribution)
        assert deepspeed.__file__ != module.__file__

    def test_feature_registered(self):
        from deepspeed.protocols import DeepSpeedFeature

        plugin = _plugins.features()[self.feature]
        assert plugin.distribution == self.distribution
        obj = plugin.load()
        assert isinstance(obj, DeepSpeedFeature)
        assert obj.name == self.feature

    def _obj(self):
        return _plugins.load(_plugins.FEATURES, self.feature)

    def test_feature_keeps_the_contract(self):
        """Hooks keep the contract's parameters, the class declares its own plugin API version."""
        from deepspeed import _features

        obj = self._obj()
        _features._check_contract(obj, self.feature, self.distribution)
        assert "DS_PLUGIN_API" in type(obj).__dict__, f"{type(obj).__name__} must declare DS_PLUGIN_API itself"
        _features.FeatureSet([(obj, self.distribution, "0")])

    def test_core_provider_table_agrees_with_the_declaration(self):
        """ds-core names this package when it is missing from its generated table
        (deepspeed/_providers.py); a stale table fails here. Fix: python tools/gen_providers.py."""
        from deepspeed import _providers

        provides = self._obj().provides
        fix = " (stale deepspeed/_providers.py; fix: python tools/gen_providers.py)"
        assert _providers.FEATURES.get(self.feature) == self.distribution, "FEATURES" + fix
        assert {m for m, d in _providers.MODULES.items() if d == self.distribution} == set(provides.modules), \
            "MODULES" + fix
        mine = {k: v for k, v in _providers.SECTIONS.items() if v[0] == self.distribution}
        assert mine == {k: (self.distribution, tuple(tuple(c) for c in use.active_if))
                        for k, use in provides.sections.items()}, "SECTIONS" + fix
        assert {n: v for n, v in _providers.UTILS.items() if v[1] == self.distribution} == {
            n: (mod, self.distribution) for mod, names in provides.utils.items() for n in names}, "UTILS" + fix
        assert _providers.ATTRIBUTES.get(self.distribution, {}) == dict(provides.attributes), "ATTRIBUTES" + fix

    def test_declared_modules_import_and_names_resolve(self):
        import importlib

        provides = self._obj().provides
        assert provides.modules, f"feature '{self.feature}' declares no modules in provides.modules"
        for module in provides.modules:
            importlib.import_module(module)
        for module, names in provides.utils.items():
            mod = importlib.import_module(module)
            for name in names:
                assert hasattr(mod, name), f"{module} has no {name} (declared in provides.utils)"

    def test_sections_and_attributes_are_declared(self):
        """Every section the feature validates is declared in ``provides.sections``, and parsing a
        config sets exactly the attributes ``provides.attributes`` lists."""
        from deepspeed.runtime.config import DeepSpeedConfig

        obj = self._obj()
        provides = obj.provides
        assert set(obj.config_sections()) <= set(provides.sections)
        config = DeepSpeedConfig({"train_batch_size": 1}, world_size=1)
        produced = set(obj.config_attributes(config))
        assert produced <= set(provides.attributes), f"undeclared attributes: {sorted(produced - set(provides.attributes))}"
        for name in provides.attributes:
            assert hasattr(config, name)


# ---- command line: python -m deepspeed.testing.conformance <accelerator> ----
_CLI_TEST = """from deepspeed.testing.conformance import AcceleratorConformance


class TestConformance(AcceleratorConformance):
    accelerator_name = {name!r}
    distribution = {distribution!r}
    op_builders = {ops!r}
"""


def main(argv: list[str] | None = None) -> int:
    """Run :class:`AcceleratorConformance` on one installed accelerator; the exit code is 0 only
    when every check ran and passed."""
    import os
    import pathlib
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m deepspeed.testing.conformance",
                                 description="Run ds-core's accelerator conformance kit on an installed accelerator.")
    ap.add_argument("accelerator", help="entry-point name in deepspeed.accelerators (cpu, cuda, acme...)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--ops", default=None, help="comma-separated op names it must provide (default: at least one)")
    group.add_argument("--no-ops", action="store_true", help="the accelerator ships no op builders")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)
    try:
        import pytest
    except ImportError:
        print("deepspeed.testing.conformance needs pytest. Fix: pip install \"ds-core[testing]\"", file=sys.stderr)
        return 2
    name = args.accelerator
    if name in _plugins.accelerators():
        plugin = _plugins.get(_plugins.ACCELERATORS, name)
        distribution: str | None = plugin.distribution
        try:
            cls = plugin.load()
        except _plugins.PluginError as exc:
            print(f"conformance: {exc}", file=sys.stderr)
            return 1
    elif name == "cpu":
        from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator as cls

        distribution = None
    else:
        try:
            _plugins.get(_plugins.ACCELERATORS, name)
        except _plugins.PluginNotFoundError as exc:
            print(f"conformance: {exc}", file=sys.stderr)
        return 1
    ops = () if args.no_ops else (tuple(o for o in args.ops.split(",") if o) if args.ops else None)
    with tempfile.TemporaryDirectory() as tmp:
        # Note: a fresh module name per run, so a second run in one process never reuses the first.
        test = pathlib.Path(tmp, f"test_conformance_{pathlib.Path(tmp).name.lstrip('tmp')}.py")
        test.write_text(_CLI_TEST.format(name=name, distribution=distribution, ops=ops))
        code = int(pytest.main([str(test), "-q", "-rs", "-p", "no:cacheprovider", "--import-mode=importlib", "--rootdir", tmp,
                                "-c", os.devnull, *args.pytest_args]))
    if code == 0 and not cls.is_available():
        print(f"conformance: FAILED: {name} is not available on this machine ({cls.unavailable_reason()}), "
              f"so its device checks were skipped. Run the kit where the device is present.", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
