"""Logs carry no patient identity above DEBUG, and do at DEBUG (so the test can fail)."""
from tests.builders import adt, zfa_2111
from tests.serving import Server, ack_code

IPP, NAME = "987650321", "ZORGLUB^ÉMILIENNE"


def _run(tmp_path, level):
    server = Server(tmp_path, {"log": {"level": level}}).start()
    try:
        assert ack_code(server.send(adt("A01", ipp=IPP, name=NAME, visit="VLOG1", zfa=zfa_2111("INO", "IC")))) == "AA"
        # a refused one too: its errors are logged
        assert ack_code(server.send(adt("A01", ipp=IPP, name=NAME, visit="VLOG2", zbe_action="BOGUS"))) == "AE"
        server.decide({"id": IPP, "authority": "HOSP-T"}, "consult")
        server.http("GET", f"/v1/patients/HOSP-T/{IPP}/consent")
    finally:
        server.stop()
    return server.stderr()


def test_no_identity_at_info(tmp_path):
    log = _run(tmp_path, "info")
    assert "ack=AE" in log and "message.answered" in log   # the refusal was logged...
    for secret in (IPP, "ZORGLUB", "ÉMILIENNE", "VLOG1", "VLOG2", "NDAVLOG"):
        assert secret not in log              # ...without who it was about


def test_identity_reaches_debug_only(tmp_path):
    log = _run(tmp_path, "debug")
    assert IPP in log and "message.answered" in log
