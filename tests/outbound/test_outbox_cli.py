"""Dead letters: a destination that keeps failing goes dead after max_attempts; `pamgate outbox list`,
`show` and `retry` inspect and replay them."""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest_twisted
import yaml
from twisted.internet import reactor

from engine import metrics
from outbound.dispatcher import Dispatcher
from tests.outbound.conftest import enqueue, envelope, statuses
from tests.outbound.receivers import HttpReceiver
from tests.outbound.test_dispatcher import FAST, config, drained
from tests.serving import ROOT


def pamgate_process(cfg_path, *args):
    """The real command, in a process of its own."""
    p = subprocess.run([sys.executable, "-m", "pamgate.cli", "outbox", *args, "--config", str(cfg_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def pamgate(cfg_path, *args):
    """The same entry point, `pamgate.cli.main`, in this process: a second each saved."""
    from pamgate.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["outbox", *args, "--config", str(cfg_path)])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest_twisted.ensureDeferred
async def test_dead_letters_listed_shown_and_replayed(tmp_path, sqlite_store):
    store = sqlite_store
    receiver = HttpReceiver()                         # not up: every attempt is refused
    dest = {"name": "dpi", "type": "http", "url": receiver.url, "max_attempts": 3, **FAST}
    cfg = config(dest)
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump({"store": {"url": store.url}, "destinations": [dest]}))
    events = [envelope("IPP9731", n) for n in range(3)] + [envelope("IPP5550", 0)]
    enqueue(store, events, cfg.routes())
    d = Dispatcher(store, cfg, reactor, metrics)
    await d.start()
    try:
        await drained(store, 4)
    finally:
        await d.stop()
    assert statuses(store) == {"dead": 4}

    code, out, err = pamgate_process(cfg_path, "list", "--status", "dead")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "outbox: 0 pending, 0 done, 4 dead"
    assert lines[1].split()[:3] == ["DELIVERY", "STATUS", "TRIES"]
    body = lines[2:]
    assert len(body) == 4 and all(" dead " in x and " 3 " in x and "connection refused" in x for x in body)
    assert all(e["id"] in out for e in events)
    assert "IPP9731" not in out and "IPP5550" not in out          # no identity in the listing
    code, out, _ = pamgate(cfg_path, "list", "--status", "done")
    assert code == 0 and out.splitlines()[1] == "no done deliveries"

    code, out, err = pamgate(cfg_path, "show", events[0]["id"])
    assert code == 0, err
    assert f"event {events[0]['id']}" in out and "consent.changed" in out
    assert "delivery 1/dpi: dead, 3 attempt(s)" in out and "last error: connection refused" in out
    assert '"n": 0' in out and '"id": "IPP9731"' in out and "patient_key" not in out
    code, out2, _ = pamgate(cfg_path, "show", "1/dpi")
    assert code == 0 and out2 == out

    for bad, words in ((["show", "no-such-event"], "no-such-event: no such event or delivery"),
                       (["show", "1/elsewhere"], "1/elsewhere: no such event or delivery"),
                       (["retry"], "give either an ID or --all-dead"),
                       (["retry", "1", "--all-dead"], "give either an ID or --all-dead")):
        code, out, err = pamgate(cfg_path, *bad)
        assert code != 0 and out == "" and err.count("\n") == 1 and words in err, (bad, err)
        assert "Traceback" not in err

    # one replayed by its id, then the rest
    code, out, err = pamgate(cfg_path, "retry", events[3]["id"])
    assert code == 0 and "1 delivery back in the queue" in out, err
    assert statuses(store) == {"dead": 3, "pending": 1}
    code, out, err = pamgate(cfg_path, "retry", "--all-dead")
    assert code == 0 and "3 deliveries back in the queue" in out, err
    with store.transaction() as uow:
        assert {(r["status"], r["attempts"]) for r in uow.deliveries()} == {("pending", 0)}

    receiver.up()
    try:
        d = Dispatcher(store, cfg, reactor, metrics)
        await d.start()
        try:
            await drained(store, 4)
        finally:
            await d.stop()
    finally:
        receiver.down()
    assert statuses(store) == {"done": 4}
    assert [e["id"] for e in receiver.accepted if e["patient"]["id"] == "IPP9731"] == [e["id"] for e in events[:3]]
    code, out, err = pamgate(cfg_path, "retry", events[0]["id"])
    assert code != 0 and "already delivered" in err


def test_outbox_on_a_store_without_the_schema_is_one_line(tmp_path):
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{tmp_path / 'empty.db'}"}}))
    code, out, err = pamgate_process(cfg_path, "list")
    assert code != 0 and err.count("\n") == 1 and "pamgate db upgrade" in err and "Traceback" not in err
