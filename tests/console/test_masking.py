"""Identities are masked in every page's HTML source until revealed (issue 14: no identity in a masked page)."""
from __future__ import annotations

from tests.console.conftest import IDENTITY, Browser

PAGES = ["/console/", "/console/messages", "/console/messages?control_id=C06-0002", "/console/messages/1",
         "/console/messages/2", "/console/patients/CH-DEMO/700601",
         "/console/patients/CH-DEMO/700601?at=2025-03-03T09:15", "/console/capture/CH-DEMO/700601",
         "/console/refusals", "/console/outbox"]


def test_no_identity_in_the_source_of_a_masked_page(open_server):
    b = Browser(f"http://127.0.0.1:{open_server.http_port}")
    for path in PAGES:
        status, html = b.get(path)
        assert status == 200, path
        leaked = [w for w in IDENTITY if w in html]
        assert not leaked, f"{path} shows {leaked}"
        if path.startswith(("/console/patients", "/console/capture", "/console/messages/")):
            assert "•••" in html, path
    status, html = b.post("/console/messages/2/replay")
    assert status == 200 and "replay-code" in html
    assert not [w for w in IDENTITY if w in html]


def test_revealed_for_one_patient_they_show(open_server):
    b = Browser(f"http://127.0.0.1:{open_server.http_port}")
    b.get("/console/patients/CH-DEMO/700601")
    status, html = b.post("/console/patients/CH-DEMO/700601/reveal", {"reason": "vérification d'identité"})
    assert status == 200
    for w in ("LEFÈVRE", "Hélène", "15/04/1972", "V060001", "N060001"):
        assert w in html, w
    trace = b.get("/console/messages/2")[1]
    assert "LEFÈVRE" in trace and "V060001" in trace


def test_mask_message_keeps_the_ipp_and_masks_every_identity():
    from console.masking import MASK, mask_message
    text = ("MSH|^~\\&|GAM|CH|PAMGATE|CH|20250101||ADT^A40|X1|P|2.5\r"
            "PID|1||42^^^CH^PI~1720415123456^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||DUPONT^Jean||19720415|M"
            "|||1 rue X^^PARIS||0102030405|||||N1^^^CH^AN\r"
            "PV1|1|I|UF1||||||||||||||||VIS9^^^CH^VN\r"
            "NK1|1|DUPONT^Marie|MTH\r"
            "MRG|41^^^CH^PI~2720415123456^^^ASIP&1.2&ISO^INS||N0\r"
            "ZFA|ACTIF|20250101")
    masked = mask_message(text)
    for identity in ("DUPONT", "Jean", "19720415", "1720415123456", "2720415123456", "rue X", "0102030405", "N1^",
                     "VIS9", "Marie", "N0|"):
        assert identity not in masked, identity
    assert "42^^^CH^PI" in masked and "41^^^CH^PI" in masked and "|M|" in masked and "ZFA|ACTIF" in masked
    assert masked.count(MASK) >= 10
