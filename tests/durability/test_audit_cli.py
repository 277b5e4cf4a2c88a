"""`pamgate audit verify`, run as a user runs it, on a store whose audit trail was altered by hand."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import yaml
from sqlalchemy import text

from consent_store.store import Store
from engine.config import Config
from engine.assembly import build_pipeline
from tests.builders import adt, zfa_2111

NOW = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)


def verify(tmp_path, url):
    cfg = tmp_path / "verify.yaml"
    cfg.write_text(yaml.safe_dump({"store": {"url": url}}))
    return subprocess.run([sys.executable, "-m", "pamgate.cli", "audit", "verify", "--config", str(cfg)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def fill(url):
    pipeline, store = build_pipeline(Config()), Store(url)
    try:
        with store.transaction() as uow:
            for i in range(5):
                m = adt("A31", ipp=f"7{i}", control_id=f"audit-{i}", zfa=zfa_2111("NA", "IC"))
                work = pipeline.prepare(m, m.encode(), NOW)
                assert work.run(uow).code == "AA"
            return [r[0] for r in uow.conn.execute(text("SELECT seq FROM audit ORDER BY seq"))]
    finally:
        store.dispose()


def tamper(url, sql, **params):
    store = Store(url)
    try:
        with store.transaction() as uow:
            assert uow.conn.execute(text(sql), params).rowcount == 1
    finally:
        store.dispose()


def test_an_intact_chain_passes_and_an_altered_row_is_named(tmp_path, store_url):
    seqs = fill(store_url)
    ok = verify(tmp_path, store_url)
    assert ok.returncode == 0, ok.stderr
    assert "audit chain intact: 5 entries" in ok.stdout

    # someone rewrites the facts of the third entry, leaving its hashes alone
    third = seqs[2]
    tamper(store_url, "UPDATE audit SET payload = replace(payload, 'IC', 'INC') WHERE seq = :s", s=third)
    bad = verify(tmp_path, store_url)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and f"broken at entry {third}:" in lines[0] and "content" in lines[0], bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_removed_row_is_found(tmp_path, store_url):
    seqs = fill(store_url)
    tamper(store_url, "DELETE FROM audit WHERE seq = :s", s=seqs[1])
    bad = verify(tmp_path, store_url)
    # the entry after the hole no longer follows its predecessor
    assert bad.returncode == 1 and f"broken at entry {seqs[2]}:" in bad.stderr and "prev_hash" in bad.stderr


def test_a_removed_tail_is_found(tmp_path, store_url):
    seqs = fill(store_url)
    tamper(store_url, "DELETE FROM audit WHERE seq = :s", s=seqs[-1])
    bad = verify(tmp_path, store_url)
    assert bad.returncode == 1 and "chain's end" in bad.stderr
