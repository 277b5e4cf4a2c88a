"""Senders on other PAM FR versions, through a real server."""
from datetime import datetime, timedelta

from tests.builders import adt
from tests.serving import Server, ack_code


def test_pre_211_blocks_and_211_2_consent(tmp_path):
    when = (datetime.now() - timedelta(hours=1)).strftime("%Y%m%d%H%M%S")
    server = Server(tmp_path).start()
    try:
        # PAM FR 2.10: ZFA-1..8 only; ZFA-6 = patient blocks break-glass, ZFA-7 = blocks centre 15
        legacy = adt("A01", ipp="V10", version="2.5^FRA^2.10", profile="", when=when,
                     zfa=f"ACTIF|{when}||N||Y|N|{when}")
        assert ack_code(server.send(legacy)) == "AA"
        p = {"id": "V10", "authority": "HOSP-T"}
        _, d = server.decide(p, "consult", mode="bris_de_glace", reason="urgence vitale")
        assert d["reasons"] == ["break_glass.blocked"]
        _, d = server.decide(p, "consult", mode="centre_15")
        assert (d["decision"], d["reasons"]) == ("permit", ["centre_15"])
        _, d = server.decide(p, "consult")
        assert d["reasons"] == ["consent.not_collected"]
        # PAM FR 2.11.2 named in MSH-12.3
        new = adt("A01", ipp="V112", version="2.5^FRA^2.11.2", profile="", when=when,
                  zfa=f"ACTIF|{when}|||||||INO|{when}|IC|{when}")
        assert ack_code(server.send(new)) == "AA"
        _, d = server.decide({"id": "V112", "authority": "HOSP-T"}, "consult")
        assert (d["decision"], d["reasons"]) == ("permit", [])
    finally:
        server.stop()
