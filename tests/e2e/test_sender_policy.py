"""A sender rule in config.yaml: a 2.11 INO counts as consent for that sender only, flagged as such."""
from datetime import datetime, timedelta

from tests.builders import adt
from tests.serving import Server, ack_code


def test_ino_counts_as_consent_only_where_the_sender_rule_says_so(tmp_path):
    when = (datetime.now() - timedelta(hours=1)).strftime("%Y%m%d%H%M%S")
    zfa = f"ACTIF|{when}|||||||INO||INO|"    # PAM FR 2.11: ZFA-11 INO = informed, does not object
    rule = {"application": "OLD-GAM", "facility": "HOSP-T", "mapping": "pamfr-2.11",
            "policy": {"ino_consult": "legacy_consent"}}
    server = Server(tmp_path, {"mappings": {"senders": [rule]}}).start()
    try:
        old = adt("A01", app="OLD-GAM", ipp="L1", zfa=zfa, profile="", when=when)
        other = adt("A01", app="OTHER-GAM", ipp="L2", zfa=zfa, profile="", when=when)
        assert ack_code(server.send(old)) == "AA" and ack_code(server.send(other)) == "AA"
        _, d = server.decide({"id": "L1", "authority": "HOSP-T"}, "consult")
        assert (d["decision"], d["reasons"]) == ("permit", ["consent.legacy_non_opposition"])
        _, d = server.decide({"id": "L2", "authority": "HOSP-T"}, "consult")
        assert (d["decision"], d["reasons"]) == ("deny", ["consent.not_collected"])
    finally:
        server.stop()
