"""The HTML report in French (the default: `replay.lang`) or English (`--lang en`) (issue 15)."""
from __future__ import annotations

from html import unescape
from pathlib import Path

from tests.cli.run import pamgate

CONF06 = Path(__file__).resolve().parents[2] / "conformance" / "scenarios" / "conf06"


def test_the_report_in_french_by_default_and_in_english_on_request(tmp_path):
    fr, en = tmp_path / "fr.html", tmp_path / "en.html"
    assert pamgate(tmp_path, "replay", CONF06, "--report", fr).returncode == 0
    assert pamgate(tmp_path, "replay", CONF06, "--report", en, "--lang", "en").returncode == 0
    french, english = unescape(fr.read_text()), unescape(en.read_text())
    assert '<html lang="fr">' in french and '<html lang="en">' in english
    for words in ("Comment lire ce rapport", "Étape par étape", "Consultation : REFUSÉE — refus du patient",
                  "Consentement à la consultation", "accepté et appliqué (AA)", "CONFORME"):
        assert words in french, words
    for words in ("How to read this report", "Step by step", "Consultation: DENIED — consent refused"):
        assert words in english and words not in french, words


def test_the_language_from_the_configuration(tmp_path):
    (tmp_path / "c.yaml").write_text(f"store:\n  url: sqlite:///{tmp_path}/x.db\nreplay:\n  lang: en\n")
    report = tmp_path / "r.html"
    assert pamgate(tmp_path, "replay", CONF06, "--report", report, "--config", "c.yaml").returncode == 0
    assert '<html lang="en">' in report.read_text()
    (tmp_path / "c.yaml").write_text("replay:\n  lang: de\n")
    p = pamgate(tmp_path, "replay", CONF06, "--config", "c.yaml")
    assert p.returncode == 2 and "c.yaml:2: replay.lang" in p.stderr
