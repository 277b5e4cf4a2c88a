"""Migration 0005 on a store written by `main` before it: the same decisions, and the same patient views,
before and after `upgrade`, on SQLite and on PostgreSQL.

The store is filled by the code of the commit before 0005 (taken from git into a temporary folder and run
in a subprocess, first on the path): the conformance scenarios and the shared samples replayed, DMP results,
a consent recorded through the API. Before the upgrade, today's rules answer over each patient's whole state
document; after it, today's pipeline answers over the history rows it reads. (Today's rules, on both sides:
the rules themselves change between versions, the migration must not change what they are given.)
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from consent_store.store import Store
from tests.stores import pg_database
from tests.store import old_store

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(old_store.__file__)
PATHS = [str(p) for p in sorted((ROOT / "conformance" / "scenarios").iterdir()) if p.is_dir()]
SAMPLES = ROOT.parent / "shared" / "samples"
if SAMPLES.is_dir():
    PATHS += [str(p) for p in sorted(SAMPLES.iterdir()) if p.is_dir()]


@pytest.fixture(scope="module")
def old_main(tmp_path_factory) -> Path:
    """The code of the commit before migration 0005, unpacked from git."""
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout
    try:
        added = git("log", "-1", "--format=%H", "--diff-filter=A", "--",
                    "consent_store/migrations/versions/0005_history_rows.py").strip()
    except (OSError, subprocess.CalledProcessError):
        added = ""
    if not added:
        pytest.skip("no git history here to take the code before migration 0005 from")
    where = tmp_path_factory.mktemp("old-main")
    archive = where / "main.tar"
    git("archive", "-o", str(archive), f"{added}^")
    with tarfile.open(archive) as t:
        t.extractall(where / "src", filter="data")
    return where / "src"


def run_old(old_main: Path, *args) -> str:
    env = {**os.environ, "PYTHONPATH": str(old_main)}
    done = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=old_main, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
    else:
        with pg_database() as u:
            yield u


def test_a_store_written_before_0005_gives_the_same_decisions_after_it(old_main, url):
    probe = subprocess.run([sys.executable, "-c", "import consent_store.store as s; print(s.__file__)"],
                           cwd=old_main, env={**os.environ, "PYTHONPATH": str(old_main)},
                           capture_output=True, text=True)
    assert probe.stdout.startswith(str(old_main)), probe   # the old code, not this worktree's
    run_old(old_main, "fill", url, *PATHS)
    before = old_store.ask(url, PATHS, documents=True)
    store = Store(url)
    try:
        store.upgrade()
    finally:
        store.dispose()
    after = old_store.ask(url, PATHS)
    assert len(before) > 500   # patients of every scenario and sample, each asked several times
    assert any(v and v["history"] for k, v in before.items() if k.endswith("|view"))
    differ = [k for k in before if before[k] != after.get(k)]
    assert not differ, [(k, _diff(before[k], after.get(k))) for k in differ[:3]]


def _diff(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _diff(a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    return (a, b)
