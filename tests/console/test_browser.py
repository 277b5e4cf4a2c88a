"""The console in a real browser (Debian's chromium and chromium-driver, driven by Selenium) over a running
`pamgate serve`: the scenario of issue 14, with a screenshot of each page (the folder is printed)."""
from __future__ import annotations

import http.server
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.console.conftest import IDENTITY, PASSWORDS, conf06_messages, movement_message, users_config
from tests.serving import Server

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
except ImportError:   # pragma: no cover
    selenium = None
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER and selenium),
                                reason="chromium, chromium-driver or selenium absent: the browser tests are skipped")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=fr-FR"]
PATIENT = {"authority": "CH-DEMO", "id": "700601"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    os.environ.setdefault("SE_AVOID_STATS", "true")
    opts = Options()
    opts.binary_location = CHROMIUM
    for f in FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        opts.add_argument(f)
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


class Pages:
    def __init__(self, driver, base: str, shots: Path):
        self.d, self.base, self.shots, self.n = driver, base, shots, 0

    def go(self, path: str):
        self.d.get(self.base + path)

    def el(self, css: str):
        from selenium.webdriver.common.by import By
        return self.d.find_element(By.CSS_SELECTOR, css)

    def els(self, css: str):
        from selenium.webdriver.common.by import By
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str = "main") -> str:
        return self.el(css).text

    def shot(self, name: str):
        """A screenshot of the whole page (the window made as tall as the page)."""
        self.n += 1
        for _ in range(2):   # the viewport is the window less its frame: measure again once resized
            height = self.d.execute_script("return document.documentElement.scrollHeight")
            self.d.set_window_size(1280, max(600, min(height + 160, 6000)))
        path = self.shots / f"{self.n:02d}-{name}.png"
        self.d.save_screenshot(str(path))
        self.d.set_window_size(1280, 900)
        return path

    def click(self, target):
        """Clicks what submits a form or follows a link, and waits for the next page."""
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait
        old = self.el("html")
        (self.el(target) if isinstance(target, str) else target).click()

        def gone(_):
            try:
                old.is_enabled()
                return False
            except StaleElementReferenceException:
                return True
            except WebDriverException as e:
                # chromedriver may say it so, when asked about a node of the page just left
                if "does not belong to the document" in str(e):
                    return True
                raise
        WebDriverWait(self.d, 30).until(gone)

    def login(self, name: str):
        self.go("/console/login")
        self.el("#name").send_keys(name)
        self.el("#password").send_keys(PASSWORDS[name])
        self.click("#login")

    def logout(self):
        self.click("header button")

    def wait_for(self, predicate, timeout=20.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.3)
            self.d.refresh()
        raise AssertionError(f"timed out waiting for {what}")


def test_the_console_scenario_in_a_browser(tmp_path, driver):
    shots = Path(os.environ.get("PAMGATE_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {shots}")
    port = _free_port()
    destination = {"destinations": [{"name": "dpi", "type": "http", "url": f"http://127.0.0.1:{port}/events",
                                     "events": ["consent.changed"], "max_attempts": 1, "timeout": 2,
                                     "poll_interval": 0.2}]}
    server = Server(tmp_path, config={**users_config(option=1), **destination}).start()
    receiver = None
    try:
        # the CONF.06 scenario over MLLP, and one message refused (no IPP)
        acks = [server.send(text) for text in conf06_messages()]
        assert all("MSA|AA" in a for a in acks)
        bad = conf06_messages()[0].replace("C06-0001", "C06-BAD1").replace(
            "700601^^^CH-DEMO&1.2.250.1.999.1.1&ISO^PI", "")
        refused_ack = server.send(bad)
        assert "MSA|AE" in refused_ack
        # a transfer and a pending transfer of the same stay, for the patient's movements
        for m in (movement_message("A02", "C06-M2", "MVT-0602", "20250303120000", "3001"),
                  movement_message("A15", "C06-M3", "MVT-0603", "20250304090000", "4001")):
            assert "MSA|AA" in server.send(m)
        p = Pages(driver, f"http://127.0.0.1:{server.http_port}", shots)

        # --- log in (operator) -------------------------------------------------------------------------
        p.go("/console/")
        assert p.els("#login"), "the console asks to log in"
        p.shot("login")
        p.login("alice")
        assert "alice (opérateur)" in p.text("header")
        assert "GAM" in p.text("#senders") and "tcp:0:interface=127.0.0.1" in p.text("#listeners")
        # the audit chain: never verified, then verified from the board
        assert p.text("#chain-result") == "jamais vérifiée" and p.els("#chain-stale")
        p.shot("board-chain-never-verified")
        p.click("#verify-audit")
        p.wait_for(lambda: p.text("#chain-result") == "chaîne intègre", what="the audit chain's verification")
        assert "par alice (console)" in p.text("#audit-chain") and not p.els("#chain-stale")
        assert int(p.text("#chain-entries")) >= 4
        p.shot("board")

        # --- find a message by MSH-10, see its trace -----------------------------------------------------
        p.go("/console/messages")
        p.el("#control_id").send_keys("C06-0002")
        p.click("#search-button")
        rows = p.els("#messages a.msh10")
        assert [r.text for r in rows] == ["C06-0002"]
        p.shot("messages")
        p.click(rows[0])
        assert p.text("#msh10") == "C06-0002" and p.text("#mapping") == "pamfr-2.11.1"
        assert "ZFA-11" in p.text("#segments") and "consent.changed" in p.text("#deliveries")
        before, after = p.els("#around tr")[1:]
        assert "refusée" in before.text and "consentement non recueilli" in before.text
        assert after.text.split()[4:6] == ["autorisée", "autorisée"], after.text
        assert not [w for w in IDENTITY if w in driver.page_source]
        # the ACK exactly as it was sent, one segment a line
        assert p.text("#ack") == acks[1].rstrip("\r").replace("\r", "\n")
        p.shot("trace")
        p.click("#replay")
        assert p.text("#replay-code") == "AA" and "autorisée" in p.text("#replay-decisions")
        assert not [w for w in IDENTITY if w in driver.page_source]
        p.shot("replay")

        # the refused message's trace: its ACK with its ERR segment, as sent
        p.go("/console/messages?control_id=C06-BAD1")
        p.click(p.els("#messages a.msh10")[0])
        assert p.text("#ack") == refused_ack.rstrip("\r").replace("\r", "\n")
        assert [line[:3] for line in p.text("#ack").splitlines()] == ["MSH", "MSA", "ERR"]
        p.shot("trace-refused")

        # --- the patient: consultation permitted at the consent, refused after the refusal -----------------
        p.go("/console/patients/CH-DEMO/700601?at=2025-03-03T09:15")
        assert p.text("#gate-consult") == "autorisée"
        moves = [r.text for r in p.els("#movements tr.movement")]
        assert len(moves) == 3 and "séjour 1 — n° de venue •••" in p.text("#movements")
        assert all(w in moves[0] for w in ("MVT-0601", "A01 admission", "03/03/2025 08:55", "2001", "effectué"))
        assert "A02 mutation" in moves[1] and "3001" in moves[1] and moves[2].endswith("prévu")
        assert not [w for w in IDENTITY if w in driver.page_source], "a masked page shows an identity"
        p.shot("patient-at-consent")
        driver.execute_script("document.getElementById('at').value = '2025-03-03T09:25:00'")
        p.click("#at-button")
        assert "at=2025-03-03T09%3A25" in driver.current_url or "at=2025-03-03T09:25" in driver.current_url
        assert p.text("#gate-consult") == "refusée" and "refus du patient" in p.text("#gate")
        p.shot("patient-after-refusal")

        # --- capture, Option 1: OUI, then NON with the feeding box unticked ----------------------------------
        assert server.decide(PATIENT, "consult")[1]["decision"] == "deny"
        p.go("/console/capture/CH-DEMO/700601")
        assert "Le patient est informé et consent à l'utilisation de Mon espace santé / DMP" in p.text()
        assert p.el("#oppose-feed").is_selected() and p.el("#oppose-consult").is_selected()
        p.shot("capture-option1")
        p.el("#answer-oui").click()
        p.click("#save-consent")
        assert "Consultation autorisée jusqu'au" in p.text("#results")
        assert server.decide(PATIENT, "consult")[1]["decision"] == "permit"
        assert server.decide(PATIENT, "feed")[1]["decision"] == "permit"
        p.shot("capture-option1-oui")
        p.el("#answer-non").click()
        p.el("#oppose-feed").click()     # the user may untick the opposition to feeding
        p.click("#save-consent")
        assert "Consultation refusée : refus du patient" in p.text("#results")
        consult = server.decide(PATIENT, "consult")[1]
        assert consult["decision"] == "deny" and consult["reasons"] == ["consent.refused"]
        assert server.decide(PATIENT, "feed")[1]["decision"] == "permit"
        assert "alice" in p.text("#capture-history")

        # --- break-glass: without, then with a justification -----------------------------------------------
        p.click("#break-glass-button")
        assert "motif justificatif du bris de glace non renseigné" in p.text("#outcome")
        assert p.els("#reminder"), "the traceability reminder, due at the user's first decision"
        assert "Ces interactions sont tracées avec l'identifiant national de l'utilisateur" in p.text("#reminder")
        p.shot("break-glass-refused")
        p.click("#reminder-button")
        assert "Rappel de traçabilité accepté" in p.text("#outcome")
        p.el("#bg-reason").send_keys("arrêt cardiaque, patient inconscient")
        p.click("#break-glass-button")
        assert p.text("#decision") == "accès autorisé"
        assert "le patient sera notifié" in p.text("#break-glass-banner")
        p.shot("break-glass-permitted")

        # --- the outbox: dead letters (the destination was down), retried once it is up ---------------------
        p.go("/console/outbox")
        p.wait_for(lambda: p.els("#dead .retry"), what="dead letters")
        dead_before = len(p.els("#dead .retry"))
        p.shot("outbox-dead")
        receiver = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        p.click(p.els("#dead .retry")[0])
        p.wait_for(lambda: len(p.els("#dead .retry")) == dead_before - 1, what="the retried delivery to leave "
                                                                               "the dead letters")
        p.wait_for(lambda: p.text("#destinations td.done") == "1", what="the retried delivery to be done")
        p.shot("outbox-after-retry")

        # --- refusals and mappings -------------------------------------------------------------------------
        p.go("/console/refusals")
        assert "PID-N" in p.text("#refusals") or "PID" in p.text("#refusals")
        p.shot("refusals")
        p.click("#refusals .handled")
        assert p.els("#none")
        p.go("/console/mappings")
        assert p.els("#check-ok")
        p.el("#message").send_keys(conf06_messages()[1].replace("\r", "\n"))
        p.click("#explain")
        assert "pamfr-2.11.1" in p.text("#explained")
        p.shot("mappings")

        # --- reveal identities with a reason, find the reason in the audit -------------------------------------
        p.go("/console/patients/CH-DEMO/700601")
        p.el("#reveal-reason").send_keys("appel du bureau des entrées")
        p.click("#reveal-button")
        assert p.text("#family") == "LEFÈVRE" and p.text("#birth") == "15/04/1972"
        assert "appel du bureau des entrées" in [e.text for e in p.els("#audit .audit-reason")]
        audit = server.http("GET", "/v1/audit?authority=CH-DEMO&id=700601")[1]["entries"]
        assert {"by": "alice", "role": "operator", "via": "console", "reason": "appel du bureau des entrées"} in [
            e["payload"] for e in audit if e["kind"] == "console.reveal"]
        p.shot("patient-revealed")
        p.logout()

        # --- a viewer reads, and is refused an action ----------------------------------------------------
        p.login("victor")
        assert "victor (lecteur)" in p.text("header")
        p.go("/console/capture/CH-DEMO/700601")
        assert not p.els("#save-consent") and not p.el("#break-glass-button").is_enabled()
        p.go("/console/outbox")
        p.click("#retry-all")
        assert "Action réservée aux opérateurs" in p.text("#error")
        p.shot("viewer-refused")
        p.go("/console/")
        p.logout()

        # --- Option 2, by configuration ----------------------------------------------------------------
        server.stop()
        server = Server(tmp_path, config={**users_config(option=2), **destination}).start()
        p.base = f"http://127.0.0.1:{server.http_port}"
        p.login("alice")
        p.go("/console/capture/CH-DEMO/700601")
        assert "Le patient ne s'oppose pas à l'alimentation de Mon espace santé / DMP" in p.text()
        assert p.el("#feed-ok").is_selected() and not p.el("#consult-ok").is_selected()
        p.shot("capture-option2")
        p.el("#consult-ok").click()
        p.el("#feed-ok").click()
        p.click("#save-consent")
        assert "Alimentation refusée : opposition du patient" in p.text("#results")
        assert server.decide(PATIENT, "consult")[1]["decision"] == "permit"
        feed = server.decide(PATIENT, "feed")[1]
        assert feed["decision"] == "deny" and feed["reasons"] == ["feed.opposed"]
        p.shot("capture-option2-saved")
    finally:
        server.stop()
        if receiver:
            receiver.shutdown()
