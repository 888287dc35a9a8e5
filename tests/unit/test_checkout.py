"""A clean checkout must build on another machine: git tracks nothing the build makes
and no link into this machine (e66c4dc once committed a worktree's .venv symlink to
an absolute path; the next checkout's `python3 -m venv .venv` failed on it)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MADE_BY_THE_BUILD = (".venv", "var")     # build-orchestrator.sh deps / start


def tracked() -> list[tuple[str, str, str]]:
    """(mode, object id, path) of every tracked file."""
    if shutil.which("git") is None or not os.path.exists(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    run = subprocess.run(["git", "ls-files", "-s", "-z"], cwd=ROOT, capture_output=True)
    if run.returncode != 0:       # e.g. "dubious ownership": a checkout git will not read
        pytest.skip(f"git ls-files failed: {run.stderr.decode().strip()[:200]}")
    out = run.stdout.decode()
    rows = []
    for line in filter(None, out.split("\0")):
        meta, path = line.split("\t", 1)
        mode, oid, _stage = meta.split()
        rows.append((mode, oid, path))
    return rows


def test_nothing_the_build_makes_is_tracked():
    bad = [p for _, _, p in tracked() if p.split("/")[0] in MADE_BY_THE_BUILD]
    assert bad == []


def test_tracked_symlinks_stay_inside_the_checkout():
    for mode, oid, path in tracked():
        if mode != "120000":
            continue
        target = subprocess.run(["git", "cat-file", "-p", oid], cwd=ROOT, check=True,
                                capture_output=True).stdout.decode()
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
        assert not os.path.isabs(target) and not resolved.startswith(".."), (path, target)
