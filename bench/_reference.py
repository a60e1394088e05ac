"""Runs code in a separate venv that holds the PyPI ``deepspeed`` release, so benches compare
against it in the same run without this project ever importing it.

``python bench/_reference.py --ensure [--venv DIR]`` creates the venv if needed (torch first, then
``deepspeed==0.19.8`` with ``--no-build-isolation`` fallback, ops left to JIT: ``DS_BUILD_OPS=0``)
and prints its python. Benches use :class:`ReferenceWorker`: a persistent process in that venv
that executes snippets sent over a pipe and returns the JSON value each leaves in ``result``, so
calls can alternate with in-process contenders.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import venv

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEEPSPEED = "deepspeed==0.19.8"
TORCH = "torch==2.13.0"
DEFAULT_VENV = ROOT / ".nox" / "_deepspeed_reference"


def _python(venv_dir: pathlib.Path) -> pathlib.Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def reference_env(venv_dir: pathlib.Path) -> dict[str, str]:
    """Environment of the reference process: JIT ops (DS_BUILD_OPS=0) cached inside the venv."""
    env = dict(os.environ)
    env["DS_BUILD_OPS"] = "0"
    env.setdefault("TORCH_EXTENSIONS_DIR", str(venv_dir / "torch_extensions"))
    env.pop("PYTHONPATH", None)
    return env


def ensure(venv_dir: pathlib.Path = DEFAULT_VENV) -> pathlib.Path:
    """The venv's python, creating the venv (torch, then deepspeed) when it lacks deepspeed."""
    py = _python(venv_dir)
    if py.exists() and subprocess.run([str(py), "-c", "import deepspeed"], capture_output=True, env=reference_env(venv_dir)).returncode == 0:
        return py
    venv.EnvBuilder(with_pip=True, clear=not py.exists()).create(venv_dir)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH], check=True)
    env = reference_env(venv_dir)
    # Note: deepspeed's setup imports torch; with build isolation it cannot see the venv's torch.
    if subprocess.run([*pip, DEEPSPEED], env=env).returncode != 0:
        subprocess.run([*pip, "setuptools", "wheel", "py-cpuinfo", "hjson", "ninja", "psutil", "packaging", "pydantic", "msgpack", "tqdm", "einops"], check=True)
        subprocess.run([*pip, "--no-build-isolation", DEEPSPEED], check=True, env=env)
    return py


_WORKER = r"""
import json, sys, traceback
scope = {}
for line in sys.stdin:
    code = json.loads(line)
    try:
        scope.pop("result", None)
        exec(code, scope)
        out = {"ok": True, "result": scope.get("result")}
    except BaseException:
        out = {"ok": False, "error": traceback.format_exc()}
    sys.__stdout__.write("\x1e" + json.dumps(out) + "\n")
    sys.__stdout__.flush()
"""


class ReferenceWorker:
    """A persistent python process in the reference venv; ``call(code)`` runs ``code`` in one
    shared namespace and returns the value it assigns to ``result`` (JSON-serialisable)."""

    def __init__(self, python: str | os.PathLike, venv_dir: pathlib.Path | None = None) -> None:
        venv_dir = venv_dir or pathlib.Path(python).resolve().parent.parent
        self.proc = subprocess.Popen(
            [str(python), "-u", "-c", _WORKER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=reference_env(venv_dir),
        )

    def call(self, code: str):
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(code) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("\x1e"):
                out = json.loads(line[1:])
                if not out["ok"]:
                    raise RuntimeError(f"reference process failed:\n{out['error']}")
                return out["result"]
            sys.stderr.write(line)  # the reference's own prints (build logs) pass through
        raise RuntimeError(f"reference process exited with code {self.proc.wait()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def __enter__(self) -> "ReferenceWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=pathlib.Path, default=DEFAULT_VENV)
    parser.add_argument("--ensure", action="store_true", help="create the venv if needed, print its python")
    args = parser.parse_args(argv)
    py = ensure(args.venv) if args.ensure else _python(args.venv)
    print(py)
    return 0


if __name__ == "__main__":
    sys.exit(main())
