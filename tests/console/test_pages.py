"""The console's pages over a running `pamgate serve` (HTTP, no browser): what each shows and does."""
from __future__ import annotations

import sqlite3
import time

from tests.console.conftest import Browser, conf06_messages, start

PATIENT = {"authority": "CH-DEMO", "id": "700601"}


def _rows(server, table: str) -> int:
    with sqlite3.connect(server.tmp / "store.db") as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_a_quiet_sender_is_flagged_silent_after_the_configured_period(tmp_path):
    server = start(tmp_path, {"console": {"silent_after": "PT2S"}})
    try:
        b = Browser(f"http://127.0.0.1:{server.http_port}")
        board = b.get("/console/")[1]
        assert "GAM" in board and "silencieux" not in board
        time.sleep(2.5)
        assert "silencieux depuis plus de PT2S" in b.get("/console/")[1]
    finally:
        server.stop()


def test_download_gives_the_bytes_received_and_is_audited(open_server):
    b = Browser(f"http://127.0.0.1:{open_server.http_port}")
    status, body = b.get("/console/messages/2.hl7")
    assert status == 200 and b.headers["content-disposition"] == 'attachment; filename="message-2.hl7"'
    assert body.replace("\r", "\n").strip() == conf06_messages()[1].replace("\r", "\n").strip()
    audit = open_server.http("GET", "/v1/audit?authority=CH-DEMO&id=700601")[1]["entries"]
    assert [e["payload"]["by"] for e in audit if e["kind"] == "console.download"] == ["local"]


def test_safe_replay_decides_without_touching_the_store(open_server):
    b = Browser(f"http://127.0.0.1:{open_server.http_port}")
    b.get("/console/messages/3")
    counts = {t: _rows(open_server, t) for t in ("journal", "audit", "outbox", "patient")}
    status, html = b.post("/console/messages/3/replay")
    assert status == 200 and 'id="replay-code">AA' in html
    assert "refus du patient" in html     # the refusal (C06-0003) alone, in an empty store: consult denied
    assert {t: _rows(open_server, t) for t in counts} == counts


def test_refusals_grouped_and_marked_handled(open_server):
    bad = conf06_messages()[0].replace("C06-0001", "C06-BAD{}").replace(
        "700601^^^CH-DEMO&1.2.250.1.999.1.1&ISO^PI", "")
    for i in range(3):
        assert "MSA|AE" in open_server.send(bad.format(i))
    b = Browser(f"http://127.0.0.1:{open_server.http_port}")
    status, html = b.get("/console/refusals")
    assert status == 200 and html.count('class="handled"') == 1 and '<td class="num">3</td>' in html
    assert all(f"C06-BAD{i}" in html for i in range(3))
    import html as entities
    import re
    group = entities.unescape(re.search(r'name="group" value="([^"]+)"', html).group(1))
    through = re.search(r'name="through" value="(\d+)"', html).group(1)
    assert group == "AE PID-3[5=PI]-1 (patient.ipp) is required and is empty"
    status, html = b.post("/console/refusals/handled", {"group": group, "through": through})
    assert status == 200 and 'id="none"' in html
    # a new refusal of that kind shows again
    assert "MSA|AE" in open_server.send(bad.format(9))
    html = b.get("/console/refusals")[1]
    assert "C06-BAD9" in html and "C06-BAD0" not in html


def test_mappings_page_checks_and_explains(open_server):
    b = Browser(f"http://127.0.0.1:{open_server.http_port}")
    status, html = b.get("/console/mappings")
    assert status == 200 and 'id="check-ok"' in html and "pamfr-2.11.1" in html
    status, html = b.post("/console/mappings/explain", {"message": conf06_messages()[2].replace("\r", "\n")})
    assert status == 200 and "consult.code" in html and "ZFA-11" in html
    status, html = b.post("/console/mappings/explain", {"message": "not hl7"})
    assert status == 200 and "illisible" in html


def test_capture_option1_without_an_answer_allows_feeding_and_denies_consultation(tmp_path):
    from tests.serving import Server
    server = Server(tmp_path).start()
    try:
        assert "MSA|AA" in server.send(conf06_messages()[0])    # the admission: nothing collected yet
        b = Browser(f"http://127.0.0.1:{server.http_port}")
        b.get("/console/capture/CH-DEMO/700601")
        status, html = b.post("/console/capture/CH-DEMO/700601/consent", {"option": "1"})
        assert status == 200 and "Choix enregistré" in html
        consult = server.decide(PATIENT, "consult")[1]
        assert consult["decision"] == "deny" and consult["reasons"] == ["consent.not_collected"]
        assert server.decide(PATIENT, "feed")[1]["decision"] == "permit"
        # the audit entry is the API's own, with who collected it
        audit = server.http("GET", "/v1/audit?authority=CH-DEMO&id=700601")[1]["entries"]
        consent = [e["payload"] for e in audit if e["kind"] == "consent"][-1]
        assert consent["collected_by"] == {"id": "local", "via": "console"}
        assert consent["values"]["consult.code"] == "NA" and consent["values"]["feed.code"] == "NA"
    finally:
        server.stop()


def test_bad_input_gets_a_french_answer_never_a_traceback(open_server):
    b = Browser(f"http://127.0.0.1:{open_server.http_port}")
    for path, status, words in [("/console/patients/CH-DEMO/nobody", 404, "Patient inconnu"),
                                ("/console/capture/CH-DEMO/nobody", 404, "Patient inconnu"),
                                ("/console/messages/999999", 404, "Message inconnu"),
                                ("/console/nowhere", 404, "Page inconnue"),
                                ("/console/patients/CH-DEMO/700601?at=hier", 400, "Date invalide"),
                                ("/console/messages?since=demain", 400, "Date invalide")]:
        got, html = b.get(path)
        assert got == status and words in html and "Traceback" not in html, path
    got, html = b.post("/console/capture/CH-DEMO/700601/consent", {"option": "3"})
    assert got == 400 and "Option de recueil inconnue" in html
