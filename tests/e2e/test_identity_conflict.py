"""A47 to an IPP that already belongs to another patient is refused, not a silent takeover."""
from tests.builders import adt, zfa_2111
from tests.serving import ack_code


def test_a47_onto_an_existing_ipp_is_refused(server):
    assert ack_code(server.send(adt("A01", ipp="A1", visit="VA1", zfa=zfa_2111("NA", "IC")))) == "AA"
    assert ack_code(server.send(adt("A01", ipp="B2", visit="VB2", zfa=zfa_2111("NA", "INC")))) == "AA"
    ack = server.send(adt("A47", ipp="B2", prior_ipp="A1"))
    assert ack_code(ack) == "AE" and "PID^1^3" in ack and "205" in ack
    # both records are as they were
    _, a = server.http("GET", "/v1/patients/HOSP-T/A1/consent")
    _, b = server.http("GET", "/v1/patients/HOSP-T/B2/consent")
    assert a["consent"]["code"] == "IC" and b["consent"]["code"] == "INC"
    # an A47 onto a free IPP still works
    assert ack_code(server.send(adt("A47", ipp="C3", prior_ipp="A1"))) == "AA"
    _, c = server.http("GET", "/v1/patients/HOSP-T/C3/consent")
    assert c["consent"]["code"] == "IC"
