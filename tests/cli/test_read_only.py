"""Read-only commands never create a store and say what to do; `outbox list` counts the events that wait
for no destination; `mappings explain` prints ISO 8601 and exits 1 when the message would be refused
(issue 15)."""
from __future__ import annotations

import pytest

from tests.builders import adt, zfa_2111
from tests.cli.run import one_line, pamgate
from tests.cli.served import fill


@pytest.mark.parametrize("command", [("audit", "verify"), ("outbox", "list")])
def test_a_read_only_command_creates_no_store(tmp_path, command):
    db = tmp_path / "var" / "nothing.db"
    line = one_line(pamgate(tmp_path, *command, env={"PAMGATE_STORE_URL": f"sqlite:///{db}"}))
    assert line == f"pamgate: no store at {db}: run pamgate db upgrade"
    assert not db.exists() and not db.parent.exists()


def test_outbox_list_counts_the_events_that_wait_for_no_destination(tmp_path):
    server, _, codes = fill(tmp_path)
    assert codes == ["AA", "AE", "AA"]
    p = pamgate(tmp_path, "outbox", "list", "--config", server.config_path)
    assert p.returncode == 0, p.stderr
    assert "outbox: 0 pending, 0 done, 0 dead" in p.stdout
    assert "2 event(s) wait for no destination" in p.stdout and "destinations:" in p.stdout
    # the same store, its audit chain read
    p = pamgate(tmp_path, "audit", "verify", "--config", server.config_path)
    assert p.returncode == 0 and "audit chain intact" in p.stdout


def test_mappings_explain_prints_iso_dates_and_exit_1_when_refused(tmp_path):
    good = tmp_path / "good.hl7"
    good.write_text(adt("A01", zfa=zfa_2111("NA", "IC", "20250106090000")))
    p = pamgate(tmp_path, "mappings", "explain", good)
    assert p.returncode == 0, p.stderr
    assert "datetime.datetime(" not in p.stdout and "valid_until" in p.stdout
    assert "valid_until: 2025-07-06T" in p.stdout, p.stdout
    bad = tmp_path / "bad.hl7"
    bad.write_text(adt("A01", ipp="", zfa=zfa_2111("NA", "IC")))
    p = pamgate(tmp_path, "mappings", "explain", bad)
    assert p.returncode == 1 and "would be refused, ACK AE" in p.stdout
