"""ds_report: versions, the accelerator chosen and why, plugins and op builders."""

import os
import shutil
import subprocess
import sys

import torch

from deepspeed import _plugins


def _ds_report(*args, env=None):
    exe = shutil.which("ds_report", path=os.path.dirname(sys.executable)) or shutil.which("ds_report")
    assert exe, "the ds_report console script is not installed"
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env)


def test_report_lists_torch_accelerator_reason_and_plugins():
    proc = _ds_report()
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"torch version               : {torch.__version__}" in out
    assert "accelerator                 : cpu" in out
    assert "chosen because" in out
    if not _plugins.accelerators():  # ds-core alone
        assert "Accelerator plugins" in out and "none installed" in out
    else:
        header = next(line for line in out.splitlines() if line.startswith("name ") and "priority" in line)
        assert header.split() == ["name", "distribution", "version", "priority", "available"]
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for name, p in _plugins.accelerators().items():
        assert rows[name][:4] == [name, p.distribution, p.version, str(p.load().priority)], rows[name]
    for name, p in _plugins.features().items():
        assert p.distribution in out
    for key in _plugins.op_builders():
        assert key in out


def test_report_fails_clearly_when_ds_accelerator_cannot_be_honoured():
    proc = _ds_report(env=dict(os.environ, DS_ACCELERATOR="cuda"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("ds_report: error: DS_ACCELERATOR=cuda: ")
    assert "Fix:" in proc.stderr


def test_hide_operator_status():
    proc = _ds_report("--hide_operator_status")
    assert proc.returncode == 0
    assert "Op builders" not in proc.stdout


class _Dist:
    def __init__(self, version, requires):
        self.version, self.requires = version, requires


def test_deepspeed_distribution_line(monkeypatch):
    import importlib.metadata as md

    from deepspeed import env_report

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    line = env_report.deepspeed_distribution()
    assert line.startswith("not installed: Transformers / Accelerate / Lightning will not see DeepSpeed")
    assert "Fix: pip install this project's packages/deepspeed" in line
    monkeypatch.setattr(md, "distribution", lambda name: _Dist("0.19.8.0", ["ds-core<0.2,>=0.1", "ds-zero<0.2,>=0.1"]))
    assert env_report.deepspeed_distribution() == "0.19.8.0 (what Transformers / Accelerate / Lightning detect)"
    monkeypatch.setattr(md, "distribution", lambda name: _Dist("0.19.8", ["hjson", "ninja", "torch"]))
    assert env_report.deepspeed_distribution().startswith("0.19.8, not this project's (it does not require ds-core)")


def test_report_has_the_deepspeed_distribution_line():
    import importlib.metadata as md

    proc = _ds_report()
    assert proc.returncode == 0, proc.stderr
    line = next(v for v in proc.stdout.splitlines() if v.startswith("deepspeed distribution"))
    try:
        version = md.version("deepspeed")
    except md.PackageNotFoundError:
        assert line.endswith(": not installed: Transformers / Accelerate / Lightning will not see DeepSpeed (they "
                             "look for the 'deepspeed' distribution). Fix: pip install this project's "
                             "packages/deepspeed (not DeepSpeed from PyPI)"), line
    else:
        assert line == f"deepspeed distribution      : {version} (what Transformers / Accelerate / Lightning detect)"
