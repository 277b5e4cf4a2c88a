"""The real samples in ../shared/samples, through a real server: MLLP in, decisions out over HTTP."""
import re

import pytest

from tests.samples import read_sample, sample_dir
from tests.serving import Server, ack_code

PATIENT = {"id": "000003", "authority": "CHU-X"}
ANS = {  # file: (consult, consult reasons, feed, feed reasons), from the samples' README
    "ConsentementConsultation_NonOppositionAlimentation": ("permit", [], "permit", []),
    "NonConsentementConsultation_NonOppositionAlimentation": ("deny", ["consent.refused"], "permit", []),
    "NonConsentementConsultation_OppositionAlimentation": ("deny", ["consent.refused"], "deny", ["feed.opposed"]),
    "NonRecueillieConsentementConsultation_NonOppositionAlimentation": ("deny", ["consent.not_collected"], "permit", []),
    "NonRecueillieConsentementConsultation_NonRecueillieOppositionAlimentation": ("deny", ["consent.not_collected"], "permit", []),
}


def evn2(text: str) -> str:
    """EVN-2 as ISO 8601 in the senders' zone (the server's default timezone is Europe/Paris)."""
    v = re.search(r"(?:^|\r)EVN\|[^|]*\|(\d{14})", text).group(1)
    return f"{v[:4]}-{v[4:6]}-{v[6:8]}T{v[8:10]}:{v[10:12]}:{v[12:14]}+01:00"


@pytest.mark.parametrize("name", sorted(ANS))
def test_ans_consent_example_alone(tmp_path, name):
    text = read_sample(sample_dir("ans-consent") / f"{name}.er7")
    server = Server(tmp_path).start()
    try:
        assert ack_code(server.send(text)) == "AA"
        consult, creasons, feed, freasons = ANS[name]
        at = evn2(text)
        _, d = server.decide(PATIENT, "consult", at=at)
        assert (d["decision"], d["reasons"]) == (consult, creasons)
        _, d = server.decide(PATIENT, "feed", at=at)
        assert (d["decision"], d["reasons"]) == (feed, freasons)
        if consult == "permit":  # evaluated today, the IC of March 2024 has expired
            _, d = server.decide(PATIENT, "consult")
            assert d["reasons"] == ["consent.expired"]
    finally:
        server.stop()


def test_ans_consent_examples_in_file_order_are_one_patient(tmp_path):
    files = sorted(sample_dir("ans-consent").glob("*.er7"))
    order = ["ConsentementConsultation_NonOppositionAlimentation",
             "NonConsentementConsultation_NonOppositionAlimentation",
             "NonConsentementConsultation_OppositionAlimentation",
             "NonRecueillieConsentementConsultation_NonOppositionAlimentation",
             "NonRecueillieConsentementConsultation_NonRecueillieOppositionAlimentation"]
    assert [f.stem for f in files] == sorted(order)
    server = Server(tmp_path).start()
    try:
        texts = [read_sample(sample_dir("ans-consent") / f"{n}.er7") for n in order]
        for t in texts:
            assert ack_code(server.send(t)) == "AA"
        at = evn2(texts[-1])
        _, d = server.decide(PATIENT, "consult", at=at)
        assert (d["decision"], d["reasons"]) == ("deny", ["consent.refused"])
        _, d = server.decide(PATIENT, "feed", at=at)
        assert (d["decision"], d["reasons"]) == ("permit", [])
        status, view = server.http("GET", "/v1/patients/CHU-X/000003/consent?at=" + at.replace("+", "%2B"))
        assert view["consent"]["code"] == "INC" and view["feed_opposition"]["code"] == "INO"
    finally:
        server.stop()


def test_ans_malformed_zbe_gets_ae_naming_zbe(tmp_path):
    d = sample_dir("ans-sgl")
    server = Server(tmp_path).start()
    try:
        assert ack_code(server.send(read_sample(d / "admission.er7"))) == "AA"
        ack = server.send(read_sample(d / "sortie.er7"))
        assert ack_code(ack) == "AE"
        err = [s for s in ack.split("\r") if s.startswith("ERR|")]
        assert err and all("ZBE" in e for e in err), ack
    finally:
        server.stop()


def test_cpage_feed_of_200_messages_all_acknowledged_aa(tmp_path):
    d = sample_dir("cpage-gam-2025")
    files = sorted(d.glob("*.hl7"))
    assert len(files) == 200
    server = Server(tmp_path).start()
    try:
        from mllp.client import BlockingMLLPClient
        refused = []
        with BlockingMLLPClient("127.0.0.1", server.mllp_port, timeout=30) as c:
            for f in files:
                ack = c.send_bytes(f.read_bytes()).decode("latin-1")
                if ack_code(ack) != "AA":
                    refused.append((f.name, ack))
        assert refused == []
        status, metrics = server.http("GET", "/metrics")
        assert b'pamgate_messages_total{ack="AA",event="A40"} 1.0' in metrics
    finally:
        server.stop()
