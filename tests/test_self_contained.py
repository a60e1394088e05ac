"""A clone stands alone: no file of the project refers to a path outside the repository (a
sibling folder, the machine it was written on, a home directory, a local package mirror) or to
documents that are not in it."""

from __future__ import annotations

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".nox", ".venv", "dist", "build", "__pycache__", "demo_output", "node_modules"}

# Note: each pattern is split so this file does not match itself.
OUTSIDE = re.compile("|".join([
    r"\.\./" + r"shared\b",                        # a sibling folder of the checkout
    r"(?<![\w.])/" + r"work/",                     # the machine the project was written on
    r"(?<![\w.])/" + r"root/",                     # a home directory
    r"(?<![\w.])/" + r"home/[A-Za-z0-9_.-]+/",
    r"(?<![\w.])/" + r"Users/[A-Za-z0-9_.-]+/",
    r"(?<![\w.])/" + r"opt/(?:wheels|pypi)",        # a machine-local package mirror
    r"\bDESIGN" + r"(?:\.md| §)",                  # documents kept outside the repository
    r"\bCONVENTIONS" + r"\.md",
]))


def _files() -> list[pathlib.Path]:
    """Tracked files plus new ones git does not ignore; a plain walk when this is not a git checkout."""
    proc = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                          cwd=ROOT, capture_output=True)
    if proc.returncode == 0 and proc.stdout:
        return [ROOT / name for name in proc.stdout.decode().split("\0") if name]
    return [p for p in ROOT.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)]


def _hits(path: pathlib.Path) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError:  # listed by git but deleted in the working tree
        return []
    if b"\0" in data[:8192]:  # binary
        return []
    text = data.decode("utf-8", errors="replace")
    return [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]


def test_no_file_refers_to_a_path_outside_the_repository():
    files = _files()
    assert len(files) > 100, f"found only {len(files)} files under {ROOT}"
    hits = [h for f in files for h in _hits(f)]
    assert not hits, "files refer to paths or documents outside the repository:\n" + "\n".join(hits)


def test_the_scan_catches_each_kind_of_reference():
    samples = {
        "The architecture is in `../" "shared/DES" "IGN.md`": True,
        "python /" "work/main/tools/x.py": True,
        "cache under /" "root/.cache/pip": True,
        "see /" "home/alice/notes.txt": True,
        "find-links = /" "opt/wheels": True,
        "as DESIGN" " §3 says": True,
        "the rules in CONVENTIONS" ".md": True,
        "DeepSpeed writes /tmp/deepspeed_mvapich_hostfile": False,
        "docs/architecture.md and packages/ds-core/README.md": False,
        "a network/work/ folder inside the repo": False,
    }
    for text, flagged in samples.items():
        assert bool(OUTSIDE.search(text)) is flagged, text
