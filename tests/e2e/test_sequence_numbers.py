"""The HL7 sequence number protocol (MSH-13, v2.5 2.10.1) through a real `pamgate serve`: MLLP in, ACK with
MSA-4 out, the last accepted number kept in the store across a restart."""
from __future__ import annotations

from datetime import datetime, timedelta

from tests.builders import adt, zfa_2111
from tests.serving import Server

APP, FAC = "GAM-E", "HOSP-T"
WHEN = (datetime.now() - timedelta(hours=1)).strftime("%Y%m%d%H%M%S")


def numbered(message: str, number, msh15: str = "") -> str:
    msh, rest = message.split("\r", 1)
    fields = msh.split("|")
    fields[12], fields[14] = str(number), msh15
    return "|".join(fields) + "\r" + rest


def msg(number, cid, app=APP, msh15="") -> str:
    return numbered(adt("A31", ipp=f"E-{cid}", app=app, facility=FAC, control_id=cid, when=WHEN,
                        zfa=zfa_2111("INO", "IC", WHEN)), number, msh15)


def control(number, cid) -> str:
    """Starting (0) or resynchronising (-1) the link: the MSH alone, message type and event not used."""
    return f"MSH|^~\\&|{APP}|{FAC}|DPI|{FAC}|{WHEN}||^|{cid}|P|2.5|{number}"


def segment(ack: str, name: str) -> list[str]:
    for seg in ack.split("\r"):
        if seg.startswith(name + "|"):
            return seg.split("|")
    return []


def answer(ack: str) -> tuple:
    """(MSA-1, MSA-4, ERR-2, ERR-3 code): MSA-4 None when the ACK has none."""
    msa, err = segment(ack, "MSA"), segment(ack, "ERR")
    return (msa[1], msa[4] if len(msa) > 4 else None,
            err[2] if err else None, err[3].split("^")[0] if err else None)


def known(server, cid) -> bool:
    _, d = server.decide({"id": f"E-{cid}", "authority": FAC}, "consult", at=datetime.now().isoformat())
    return d["reasons"] != ["patient.unknown"]


def test_sequence_numbers_end_to_end(tmp_path):
    config = {"sequence_number_protocol": {"senders": [{"application": APP, "facility": FAC}]}}
    server = Server(tmp_path, config).start()
    try:
        # first start of the link: nothing accepted yet, MSA-4 -1 (the first number accepted sets the link's)
        assert answer(server.send(control(0, "start-1"))) == ("AA", "-1", None, None)
        assert segment(server.send(control(0, "start-1b")), "MSA")[2] == "start-1b"
        for n in (1, 2, 3):
            assert answer(server.send(msg(n, f"m{n}"))) == ("AA", str(n + 1), None, None)
        assert known(server, "m3")
        # a gap: AR, ERR names MSH-13, MSA-4 the number expected; nothing applied
        ack = server.send(msg(5, "m5"))
        assert answer(ack) == ("AR", "4", "MSH^1^13", "204")
        assert "5, 4 was expected" in segment(ack, "ERR")[8]
        assert not known(server, "m5")
        # enhanced mode: the same refusal as CR
        assert answer(server.send(msg(6, "m6", msh15="AL"))) == ("CR", "4", "MSH^1^13", "204")
        # a resend of 3, applied before: AA, applied once; 3 for another message: AR 205
        assert answer(server.send(msg(3, "m3"))) == ("AA", "4", None, None)
        assert answer(server.send(msg(3, "m3-other"))) == ("AR", "4", "MSH^1^13", "205")
        assert not known(server, "m3-other")
        # a sender that does not use the protocol: MSH-13 ignored, no MSA-4
        assert answer(server.send(msg(42, "x1", app="OTHER"))) == ("AA", None, None, None)
        assert answer(server.send(msg(42, "x2", app="OTHER"))) == ("AA", None, None, None)
    finally:
        server.stop()

    # the last accepted number is in the store: a restarted serve expects 4
    server = Server(tmp_path, config).start()
    try:
        assert answer(server.send(control(0, "start-2"))) == ("AA", "4", None, None)
        assert answer(server.send(msg(4, "m4"))) == ("AA", "5", None, None)
        assert known(server, "m4")
        # -1 resynchronises: MSA-4 -1, then the next positive number is taken as it comes
        assert answer(server.send(control(-1, "resync"))) == ("AA", "-1", None, None)
        assert answer(server.send(msg(900, "m900"))) == ("AA", "901", None, None)
        assert answer(server.send(msg(902, "m902"))) == ("AR", "901", "MSH^1^13", "204")
    finally:
        server.stop()
