"""The HTML report of CONF.06, rendered by a real browser (headless Chromium), read by its DOM."""
import html as htmllib
import re
import shutil
import subprocess

import pytest

from tests.conformance.conftest import execute, scenario_args

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# what an auditor must see for each of the 15 steps of DMP/CONF.06 (the DMP conformance test)
CONF06 = {
    1: "Consultation: DENIED — consent not collected",
    2: "Consultation: DENIED — consent not collected",
    3: "Feeding the DMP: PERMITTED",
    4: "Consultation: PERMITTED",
    5: "Consultation: PERMITTED",
    6: "Feeding the DMP: PERMITTED",
    7: "Consultation: DENIED — consent refused",
    8: "Consultation: DENIED — consent refused",
    9: "Feeding the DMP: PERMITTED",
    10: "Consultation: DENIED — consent refused",
    11: "Feeding the DMP: DENIED — the patient opposes feeding",
    12: "Feeding the DMP: DENIED — the patient opposes feeding",
    13: "Consultation in break-glass mode: DENIED — break-glass asked for without a reason",
    14: "Consultation in break-glass mode: PERMITTED",
    15: "1 found",
}


def render_dom(path, tmp_path) -> str:
    profile = tmp_path / "chromium-profile"
    r = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def text_of(fragment: str) -> str:
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


@pytest.fixture(scope="module")
def conf06_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "conf06.html"
    run = execute(scenario_args("conf06", "--report", str(out), "--lang", "en"))
    assert run.ok
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`): "
                                               "the report is not rendered in a browser")
def test_the_conf06_report_shows_the_15_steps_and_their_outcomes_in_a_browser(conf06_report, tmp_path):
    dom = render_dom(conf06_report, tmp_path)
    assert "PASS — every acknowledgement and every expectation held" in text_of(dom)
    for step, outcome in CONF06.items():
        row = re.search(rf'<tr class="(\w+)" id="step-{step}">(.*?)</tr>', dom, re.S)
        assert row, f"step {step} is not in the rendered page"
        words = text_of(row.group(2))
        assert row.group(1) == "held" and f"Step {step}" in words and "✔ held" in words, words
        assert outcome in words, (step, words)
    # the step-by-step part shows each message, pamgate's answer and the state after it, in plain words
    steps = text_of(dom[dom.index('id="steps"'):dom.index('id="timeline"')])
    assert steps.count("pamgate's answer: accepted and applied (AA)") == 4
    assert "Consent to consultation: given (IC)" in steps and "Consent to consultation: refused (INC)" in steps
    assert "Opposition to feeding: objects (IO)" in steps
    timeline = text_of(dom[dom.index('id="timeline"'):])
    assert "Patient 1" in timeline and timeline.count("Update a movement (Z99)") == 3


def test_the_report_is_self_contained_and_masks_identities(conf06_report, tmp_path):
    page = conf06_report.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page and "@import" not in page
    for secret in ("LEFÈVRE", "Hélène", "19720415", "700601", "rue des Lilas"):
        assert secret not in page, secret
    shown = tmp_path / "shown.html"
    execute(scenario_args("conf06", "--report", str(shown), "--show-identities", "--lang", "en"))
    page = shown.read_text(encoding="utf-8")
    assert all(s in page for s in ("LEFÈVRE", "19720415", "700601 (CH-DEMO)"))


def test_the_report_says_a_cancelled_admission_took_its_consent_with_it(tmp_path):
    out = tmp_path / "movements.html"
    assert execute(scenario_args("movements", "--report", str(out), "--lang", "en")).ok
    page = text_of(out.read_text(encoding="utf-8"))
    assert ("Consent to consultation: none in force — the consent (IC) collected 2025-04-15 09:00 was cancelled "
            "with its episode") in page
    assert "Consultation: DENIED — the episode of care was cancelled" in page
    assert "Patient 3" in page and "Patient 4" not in page
