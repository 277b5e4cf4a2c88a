"""The console's pages over a running `pamgate serve` (HTTP, no browser): what each shows and does."""
from __future__ import annotations

import re
import sqlite3
import time

from tests.console.conftest import IDENTITY, Browser, conf06_messages, movement_message, start

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


def test_the_board_shows_the_audit_chain_last_verification(open_server):
    """None yet, one too old (console.audit_verify_every, P7D by default), one by `pamgate audit verify`, one
    run from the board, and one that finds an entry altered by hand: each on the board as it was recorded."""
    import subprocess
    import sys
    from datetime import datetime, timedelta, timezone

    from consent_store.store import Store
    b = Browser(f"http://127.0.0.1:{open_server.http_port}")
    html = b.get("/console/")[1]
    assert 'id="chain-result">jamais vérifiée' in html and 'id="chain-stale"' in html
    store = Store(f"sqlite:///{open_server.tmp / 'store.db'}")
    try:
        with store.transaction() as uow:
            uow.record_audit_verification({"entries": 3, "through": 3, "ok": True, "broken_at": None, "why": None},
                                          datetime.now(timezone.utc) - timedelta(days=10), by="ops", via="cli")
    finally:
        store.dispose()
    html = b.get("/console/")[1]
    assert "(il y a 10 j 0 h)" in html and "par ops (ligne de commande)" in html
    assert "plus ancienne que P7D" in html

    entries = _rows(open_server, "audit")
    p = subprocess.run([sys.executable, "-m", "pamgate.cli", "audit", "verify", "--config", open_server.config_path],
                       capture_output=True, text=True, timeout=120, cwd=open_server.tmp)
    assert p.returncode == 0 and f"intact: {entries} entries" in p.stdout, p.stderr
    assert _rows(open_server, "audit") == entries + 1       # the verification, recorded
    html = b.get("/console/")[1]
    assert f'id="chain-entries">{entries}</span>' in html and 'id="chain-result">chaîne intègre' in html
    assert 'id="chain-stale"' not in html and "(ligne de commande)" in html

    status, html = b.post("/console/audit/verify")
    assert status == 200 and "par local (console)" in html and 'id="chain-result">chaîne intègre' in html
    assert f'id="chain-entries">{entries + 1}</span>' in html
    assert "vérification de la chaîne d&#39;audit" in html      # among the last actions

    with sqlite3.connect(open_server.tmp / "store.db") as c:
        seq = c.execute("SELECT min(seq) FROM audit WHERE payload LIKE '%C06-0002%'").fetchone()[0]
        assert c.execute("UPDATE audit SET payload = replace(payload, 'C06-0002', 'C06-9999') WHERE seq = ?",
                         (seq,)).rowcount == 1
    status, html = b.post("/console/audit/verify")
    assert status == 200 and f"chaîne rompue à l'entrée {seq}</span>" in html
    assert "son contenu a été modifié après son écriture" in html and "alarm-box" in html


def test_the_patient_page_shows_each_visits_movements_masked_and_paged(open_server):
    for m in (movement_message("A02", "C06-M2", "MVT-0602", "20250303120000", "3001"),
              movement_message("A15", "C06-M3", "MVT-0603", "20250304090000", "4001"),
              movement_message("A01", "C06-M4", "MVT-0701", "20250410080000", "5001", visit="V070002")):
        assert "MSA|AA" in open_server.send(m)
    b = Browser(f"http://127.0.0.1:{open_server.http_port}")
    status, html = b.get("/console/patients/CH-DEMO/700601")
    assert status == 200
    table = html[html.index('<table id="movements">'):html.index("</table>", html.index('<table id="movements">'))]
    rows = re.findall(r'<tr class="(stay|movement)[^"]*">(.*?)</tr>', table, re.S)
    cells = [re.sub(r"<[^>]+>", " ", r[1]).split() for r in rows]
    # the latest visit first, each visit's movements in their order
    assert [r[0] for r in rows] == ["stay", "movement", "stay", "movement", "movement", "movement"]
    assert cells[0][:2] == ["séjour", "2"] and cells[1][:3] == ["1", "MVT-0701", "A01"]
    assert cells[2][:2] == ["séjour", "1"]
    assert [c[1:3] for c in cells[3:]] == [["MVT-0601", "A01"], ["MVT-0602", "A02"], ["MVT-0603", "A15"]]
    assert cells[1][4:6] == ["10/04/2025", "08:00"] and "3001" in cells[4] and cells[5][-1] == "prévu"
    assert cells[3][-1] == "effectué" and "mutation" in cells[4]
    # visit numbers masked until revealed
    for word in IDENTITY + ("V070002",):
        assert word not in html, word
    # one page after the first movement: a link back to the newest
    html = b.get("/console/patients/CH-DEMO/700601?moves_from=1")[1]
    assert "Mouvements 2 à 4" in html and 'id="movements-newer"' in html and "MVT-0701" not in html


def test_movements_are_read_a_page_at_a_time(open_server):
    from consent_store.store import Store, UnitOfWork
    from console import reads
    for i in range(2, 6):
        assert "MSA|AA" in open_server.send(movement_message("A02", f"C06-P{i}", f"MVT-060{i}",
                                                             f"2025030{i}120000", "3001"))
    store = Store(f"sqlite:///{open_server.tmp / 'store.db'}")
    try:
        with store.engine.connect() as conn:
            uow = UnitOfWork(conn, False)
            pid = uow.find_patient("PI", "CH-DEMO", "700601")
            pages = [reads.patient_movements(uow, pid, offset, limit=2) for offset in (0, 2, 4)]
    finally:
        store.dispose()
    assert [len(p) for p in pages] == [3, 3, 1]          # one row more than the page: there is a next one
    seen = [m["movement_id"] for p in pages for m in p[:2]]
    assert seen == [f"MVT-060{i}" for i in range(1, 6)]


def test_the_trace_shows_the_ack_as_sent_escaped_also_for_frames_the_listener_refused(open_server):
    import html as entities
    b = Browser(f"http://127.0.0.1:{open_server.http_port}")

    def shown_ack(journal_id) -> str:
        html = b.get(f"/console/messages/{journal_id}")[1]
        return entities.unescape(re.search(r'<pre id="ack">(.*?)</pre>', html, re.S).group(1)), html

    # an MSH-10 with markup in it: the ACK echoes it in MSA-2, the page shows it as text
    ack = open_server.send(conf06_messages()[1].replace("C06-0002", "C06-<b>X</b>"))
    with sqlite3.connect(open_server.tmp / "store.db") as c:
        jid = c.execute("SELECT id FROM journal WHERE control_id = 'C06-<b>X</b>'").fetchone()[0]
    shown, html = shown_ack(jid)
    assert shown == ack.rstrip("\r").replace("\r", "\n") and shown.count("\n") >= 1   # one segment a line
    assert "MSA|AA|C06-<b>X</b>" in shown and "<b>X</b>" not in html.split('<pre id="ack">')[1]

    # a frame without MSH, answered AR by the listener itself: journaled with the ACK it was sent
    ack = open_server.send("not an HL7 message")
    assert "MSA|AR" in ack
    deadline = time.monotonic() + 20
    while True:
        with sqlite3.connect(open_server.tmp / "store.db") as c:
            row = c.execute("SELECT id, ack FROM journal WHERE ack_code = 'AR' ORDER BY id DESC").fetchone()
        if row or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert row and row[1].rstrip("\r") == ack.rstrip("\r")
    assert shown_ack(row[0])[0] == ack.rstrip("\r").replace("\r", "\n")
