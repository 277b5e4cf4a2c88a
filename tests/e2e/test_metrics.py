"""/metrics after a short replay: each family an alert or the dashboard is written on is there, and the
shipped alert rules and Grafana dashboard name only metrics that pamgate serves."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from tests.builders import adt, zfa_2111
from tests.durability.support import wait_until
from tests.serving import ROOT, Server

TOKEN = "m3trics"
FAMILIES = ("pamgate_build_info", "pamgate_last_message_timestamp_seconds", "pamgate_mllp_connections",
            "pamgate_dead_letters", "pamgate_pending_deliveries", "pamgate_oldest_pending_delivery_age_seconds",
            "pamgate_decision_latency_seconds", "pamgate_journal_rows", "pamgate_store_up",
            "pamgate_store_unavailable_acks_total", "pamgate_apply_process_restarts_total")


def scrape(server) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/metrics",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers.get_content_type() == "text/plain"
        return r.read().decode()


def samples(text: str) -> dict[str, list[tuple[str, float]]]:
    """{sample name: [(labels, value)]} of a Prometheus text exposition."""
    out: dict[str, list] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{.*\})? (\S+)$", line)
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return out


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bpamgate_[a-z_]+\b", expr))


def test_metrics_after_a_short_replay(tmp_path):
    folder = tmp_path / "feed"
    folder.mkdir()
    for i, (app, ipp) in enumerate([("GAM-A", "800001"), ("GAM-A", "800002"), ("GAM-B", "800003")]):
        (folder / f"{i}.hl7").write_text(adt("A01", ipp=ipp, app=app, zfa=zfa_2111("INO", "IC")))
    server = Server(tmp_path, config={
        "api": {"token": TOKEN},
        # nothing listens on port 9: the first attempt fails and, with max_attempts 1, is a dead letter;
        # `late` waits an hour before its first retry, so its deliveries stay pending
        "destinations": [{"name": "gone", "type": "http", "url": "http://127.0.0.1:9/x", "max_attempts": 1,
                          "poll_interval": 0.1},
                         {"name": "late", "type": "http", "url": "http://127.0.0.1:9/y", "backoff": 3600,
                          "max_backoff": 3600, "poll_interval": 0.1}]}).start()
    try:
        replay = subprocess.run([sys.executable, "-m", "pamgate.cli", "replay", str(folder),
                                 "--to", f"mllp://127.0.0.1:{server.mllp_port}"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        status, answer = server.http("POST", "/v1/decisions", {
            "patient": {"id": "800001", "authority": "HOSP-T"}, "action": "consult",
            "user": {"id": "doc1", "profession": "10"}}, token=TOKEN)
        assert status == 200, answer
        wait_until(lambda: any(v > 0 for _, v in samples(scrape(server)).get("pamgate_dead_letters", [])),
                   timeout=30, what="a dead letter counted")
        got = samples(scrape(server))
    finally:
        server.stop()

    for family in FAMILIES:
        assert any(name == family or name.startswith(family + "_") for name in got), f"{family} missing"
    version = got["pamgate_build_info"][0][0]
    assert re.fullmatch(r'\{version="\d+\.\d+\.\d+.*"\}', version), version
    senders = {labels for labels, _ in got["pamgate_last_message_timestamp_seconds"]}
    assert senders == {'{sender="GAM-A|HOSP-T"}', '{sender="GAM-B|HOSP-T"}'}, senders
    assert dict(got["pamgate_dead_letters"])['{destination="gone"}'] >= 1
    assert dict(got["pamgate_pending_deliveries"])['{destination="late"}'] >= 1
    assert dict(got["pamgate_oldest_pending_delivery_age_seconds"])['{destination="late"}'] > 0
    assert dict(got["pamgate_decision_latency_seconds_count"])[""] == 1
    assert got["pamgate_journal_rows"] == [("", 3.0)]
    assert got["pamgate_store_up"] == [("", 1.0)]
    assert [labels for labels, _ in got["pamgate_mllp_connections"]] == ['{listener="tcp:0:interface=127.0.0.1"}']

    # the shipped alert rules and dashboard: valid, and naming only what /metrics serves
    rules = yaml.safe_load((ROOT / "docs" / "alerts.yaml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert {r["alert"] for g in rules["groups"] for r in g["rules"]} >= {
        "PamgateSilentSender", "PamgateDeadLetters", "PamgateApplyProcessRestarting", "PamgateStoreFailing"}
    dashboard = json.loads((ROOT / "docs" / "grafana" / "pamgate.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        for name in names:
            assert name in got or name.removesuffix("_bucket") + "_count" in got, f"{name} (in {expr!r}) not served"
