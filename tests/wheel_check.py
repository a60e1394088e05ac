"""Install each built wheel alone into a fresh venv and check it imports and registers.

Used by the nox ``build`` session. Note: torch (hundreds of MB) is installed once into a base venv
(nox's shared one, given by ``--base-site``, or one made here) that each fresh venv sees through a ``.pth`` file; nothing of this project is in the base, so every
project dependency a wheel needs must come from its own declared requirements.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile
import venv

IMPORTS = {
    "ds-core": "import deepspeed, deepspeed.accelerator; from deepspeed.accelerator import get_accelerator; get_accelerator()",
    "ds-zero": "import deepspeed.zero",
    "ds-pipe": "import deepspeed.pipe",
    "ds-moe": "import deepspeed.moe",
    "ds-inference": "import deepspeed.inference",
    "ds-compression": "import deepspeed.compression",
    "ds-checkpoint": "import deepspeed.checkpoint",
    "ds-aio": "import deepspeed.io",
    "ds-sequence": "import deepspeed.sequence.layer, deepspeed.runtime.sequence_parallel.ulysses_sp",
    # The drop-in distribution has no module of its own: what integrations check is its metadata.
    "deepspeed": ("import importlib.metadata as md, importlib.util as u, deepspeed.zero, deepspeed.checkpoint.utils; "
                  "assert u.find_spec('deepspeed') and md.metadata('deepspeed')['Name'] == 'deepspeed'; "
                  "print('deepspeed', md.version('deepspeed'))"),
}


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _venv(path: pathlib.Path, base_site: str | None) -> pathlib.Path:
    venv.EnvBuilder(with_pip=True).create(path)
    py = path / "bin" / "python"
    if base_site:
        site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
        pathlib.Path(site, "_torch_base.pth").write_text(base_site + "\n")
    return py


def _wheel(dist: pathlib.Path, package: str) -> pathlib.Path:
    stem = package.replace("-", "_")
    found = sorted(dist.glob(f"{stem}-*.whl"))
    if not found:
        sys.exit(f"FAILED: no wheel for {package} in {dist}")
    return found[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dist", required=True)
    ap.add_argument("--torch", required=True)
    ap.add_argument("--base-site", help="site-packages of an existing venv holding torch (nox's shared base); "
                    "made here when absent")
    ap.add_argument("packages", nargs="+")
    args = ap.parse_args()
    dist = pathlib.Path(args.dist)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = pathlib.Path(tmp)
        base_site = args.base_site
        if not base_site:
            base_py = _venv(tmp_p / "base", None)
            _run([str(base_py), "-m", "pip", "install", "-q", args.torch])
            base_site = _run([str(base_py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()

        def install(name: str, wheels: list[pathlib.Path]) -> pathlib.Path:
            py = _venv(tmp_p / name, base_site)
            _run([str(py), "-m", "pip", "install", "-q", "--find-links", str(dist), *map(str, wheels)])
            return py

        for package in args.packages:
            py = install(package, [_wheel(dist, package)])
            code = IMPORTS.get(package)
            if code is None:  # ops package: found through its entry point only
                name = package.removeprefix("ds-ops-")
                code = (
                    "from deepspeed import _plugins; "
                    f"p = _plugins.accelerators()['{name}']; assert p.distribution == '{package}', p; "
                    "cls = p.load(); print(cls.__name__, 'available' if cls.is_available() else 'not available')"
                )
            if package == "ds-ops-cpu" and (shutil.which("g++") or shutil.which("c++")):
                # With a compiler at build time the wheel ships the ops: first use compiles nothing.
                code += ("; from deepspeed.accelerator import get_accelerator as g; "
                         "built = {n: g().create_op_builder(n).is_built() for n in ('cpu_adam', 'cpu_adagrad', 'cpu_lion')}; "
                         "assert all(built.values()), built; print('prebuilt ops:', sorted(built))")
            out = _run([str(py), "-c", code]).stdout.strip()
            listed = _run([str(py), "-m", "pip", "list", "--format=freeze"]).stdout
            ours = sorted(line.split("==")[0] for line in listed.splitlines() if line.startswith("ds-"))
            print(f"OK  {package:<16} installs alone; project packages in venv: {', '.join(ours)} {out}")

        # The README's à-la-carte example.
        trio = ["ds-core", "ds-zero", "ds-ops-cpu"]
        py = install("trio", [_wheel(dist, p) for p in trio])
        _run([str(py), "-c", "import deepspeed.zero"])
        report = _run([str(py.parent / "ds_report")]).stdout
        for needle in ("cpu   ds-ops-cpu", "zero  ds-zero", "accelerator                 : cpu"):
            if needle not in report:
                sys.exit(f"FAILED: ds_report in the {'+'.join(trio)} venv lacks {needle!r}:\n{report}")
        print(f"OK  pip install {' '.join(trio)}: import deepspeed.zero works, ds_report lists cpu and zero")


if __name__ == "__main__":
    main()
