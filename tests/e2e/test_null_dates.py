"""An explicit null ("") in a date field reads as an empty date: the message is applied, never answered 207
(which would make the sender resend it forever). Found by the fuzz suite (tests/fuzz)."""
from tests.builders import adt
from tests.serving import ack_code

ZFA = "ACTIF|{a}|||||||INO|{b}|IC|{c}"
WHEN = "20250106090000"
CASES = {
    "ZFA-2": (ZFA.format(a='""', b=WHEN, c=WHEN), None),
    "ZFA-10": (ZFA.format(a=WHEN, b='""', c=WHEN), None),
    "ZFA-12": (ZFA.format(a=WHEN, b=WHEN, c='""'), None),
    "EVN-2": (ZFA.format(a=WHEN, b=WHEN, c=WHEN), f'EVN||""||||{WHEN}'),
    "EVN-6": (ZFA.format(a=WHEN, b=WHEN, c=WHEN), f'EVN||{WHEN}||||""'),
}


def test_an_explicit_null_date_is_read_as_empty(server):
    for n, (field, (zfa, evn)) in enumerate(CASES.items()):
        ipp = f"30000{n}"
        message = adt("A01", ipp=ipp, visit="VN1", zfa=zfa)
        if evn:
            message = message.replace(f"EVN||{WHEN}||||{WHEN}", evn)
        ack = server.send(message)
        assert ack_code(ack) == "AA", (field, ack)
        status, body = server.http("POST", "/v1/decisions", {
            "patient": {"id": ipp, "authority": "HOSP-T"}, "action": "consult",
            "user": {"id": "doc1", "profession": "10"}, "at": "2025-01-06T10:00:00+01:00"})
        assert status == 200 and body["decision"] == "permit", (field, body)
