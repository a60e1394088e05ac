"""A vendor package outside this repository is discovered and selectable with no change here.

The test writes a tiny distribution (an accelerator and one op builder) into a temp dir, installs
it into a fresh venv that sees this environment's packages, and checks discovery, selection,
op-builder lookup and ds_report from a new process.
"""

import pathlib
import subprocess
import sysconfig
import textwrap
import venv

import pytest

PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "acme-ds-ops"
version = "0.3.0"
dependencies = ["ds-core>=0.1,<0.2"]

[project.entry-points."deepspeed.accelerators"]
acme = "acme_ds_ops.accelerator:ACME_Accelerator"

[project.entry-points."deepspeed.op_builders"]
"acme.acme_scale" = "acme_ds_ops.builders:AcmeScaleBuilder"
"""

ACCELERATOR = """
from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator


class ACME_Accelerator(CPU_Accelerator):
    # An "ACME" device that runs on the host, so the test can use it for real.
    DS_PLUGIN_API = "1.0"
    _name = "acme"
    _visible_devices_env = "ACME_VISIBLE_DEVICES"
    priority = 1000
"""

BUILDERS = """
import types

from deepspeed.ops.op_builder import OpBuilder


class AcmeScaleBuilder(OpBuilder):
    DS_PLUGIN_API = "1.0"
    NAME = "acme_scale"
    BUILD_VAR = "DS_BUILD_ACME_SCALE"

    def absolute_name(self):
        return "acme_ds_ops.acme_scale_op"

    def sources(self):
        return []

    def load(self, verbose=True):
        return types.SimpleNamespace(scale=lambda t, s: t * s)
"""

CHECK = """
import torch
from deepspeed.accelerator import get_accelerator
from deepspeed.accelerator.real_accelerator import selection_reason

acc = get_accelerator()
assert acc._name == "acme", acc
assert "acme-ds-ops 0.3.0" in selection_reason(), selection_reason()
op = acc.create_op_builder("acme_scale").load()
assert torch.equal(op.scale(torch.ones(3), 2.0), torch.full((3,), 2.0))
assert type(acc.create_op_builder("AcmeScaleBuilder")).__name__ == "AcmeScaleBuilder"
assert acc.visible_devices_envs() == ["ACME_VISIBLE_DEVICES"]
print("selected", acc._name)
"""


@pytest.fixture(scope="module")
def vendor_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("vendor")
    src = root / "acme-ds-ops"
    pkg = src / "src" / "acme_ds_ops"
    pkg.mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "__init__.py").write_text("")
    (pkg / "accelerator.py").write_text(textwrap.dedent(ACCELERATOR))
    (pkg / "builders.py").write_text(textwrap.dedent(BUILDERS))
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # Note: the fresh venv sees this environment's packages (torch, ds-core) through a .pth file,
    # so the vendor package installs on top without copying torch. addsitedir (not a bare path)
    # also runs the parent's own .pth files, which is where editable installs live.
    parent = sysconfig.get_paths()["purelib"]
    pathlib.Path(site, "_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return py


def test_vendor_plugin_is_discovered_and_selected(vendor_venv):
    proc = subprocess.run([str(vendor_venv), "-c", CHECK], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "selected acme"


def test_vendor_plugin_appears_in_ds_report(vendor_venv):
    code = "from deepspeed.env_report import report; print(report())"
    proc = subprocess.run([str(vendor_venv), "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "acme-ds-ops" in proc.stdout
    assert "acme.acme_scale" in proc.stdout


def test_vendor_plugin_selectable_by_env_name(vendor_venv):
    code = "from deepspeed.accelerator import get_accelerator; print(get_accelerator()._name)"
    env = {"DS_ACCELERATOR": "cpu", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(vendor_venv), "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cpu"
    env["DS_ACCELERATOR"] = "acme"
    proc = subprocess.run([str(vendor_venv), "-c", code], capture_output=True, text=True, env=env)
    assert proc.stdout.strip() == "acme", proc.stderr
