"""What PAM FR 2.11.1 says a receiver must make of real senders' messages, over a real socket and real HTTP:
the INS-NIR chosen over the INS-NIA (§4.4.1), the pending movements accepted (§5.3), and a validity counted
in the establishment's time zone across a daylight-saving change."""
from tests.builders import adt, zfa_2111
from tests.serving import ack_code

NIR, NIA, TEST_NIR = "1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10"
AT = "2025-01-07T00:00:00Z"      # the day after the builders' messages: their consent is still valid


def test_the_ins_is_the_nir_when_pid3_carries_the_nia_first(server):
    both = [("780019912345678", NIA), ("279035121518989", NIR)]
    assert ack_code(server.send(adt("A01", ipp="N1", visit="VN1", ins=both, zfa=zfa_2111("NA", "IC")))) == "AA"
    _, d = server.decide({"ins": "279035121518989", "oid": NIR}, "consult", at=AT)
    assert (d["decision"], d["reasons"]) == ("permit", [])
    _, view = server.http("GET", "/v1/patients/HOSP-T/N1/consent")
    assert [(i["authority"], i["value"]) for i in view["identities"] if i["kind"] == "INS"] == \
        [(NIR, "279035121518989")]
    # the test NIR is a NIR too: preferred over the NIA, whatever the order
    test = [("780019912345679", NIA), ("279035121518990", TEST_NIR)]
    assert ack_code(server.send(adt("A01", ipp="N2", visit="VN2", ins=test, zfa=zfa_2111("NA", "IC")))) == "AA"
    _, d = server.decide({"ins": "279035121518990", "oid": TEST_NIR}, "consult", at=AT)
    assert d["decision"] == "permit"


def test_mrg1_nir_is_chosen_over_the_nia(server):
    # the patient is known by its NIR; an A47 from an IPP this receiver never saw names it in MRG-1
    assert ack_code(server.send(adt("A01", ipp="OLD-X", visit="VM1", ins=[("279035121518989", NIR)],
                                    zfa=zfa_2111("NA", "IC")))) == "AA"
    a47 = adt("A47", ipp="NEW-Y", prior_ipp="UNSEEN-Z",
              prior_ins=[("780019912345678", NIA), ("279035121518989", NIR)])
    assert ack_code(server.send(a47)) == "AA"
    _, d = server.decide({"id": "NEW-Y", "authority": "HOSP-T"}, "consult", at=AT)
    assert (d["decision"], d["reasons"]) == ("permit", [])


def test_pending_transfer_and_discharge_and_their_cancellations_are_applied(server):
    when = "20250106090000"
    assert ack_code(server.send(adt("A01", ipp="P1", visit="VP1", when=when, movement="M1", uf="URG1",
                                    zfa=zfa_2111("NA", "NA", when=when)))) == "AA"
    # A15 carries a consent: applied; the pending transfer neither moves nor ends the visit
    a15 = adt("A15", ipp="P1", visit="VP1", when="20250106100000", movement="M2", uf="CARD",
              structure="ADT_A15", zfa=zfa_2111("NA", "IC", when="20250106100000"))
    assert ack_code(server.send(a15)) == "AA"
    a26 = adt("A26", ipp="P1", visit="VP1", when="20250106110000", movement="M2", uf="CARD",
              structure="ADT_A21", zbe_action="CANCEL", original="A15")
    assert ack_code(server.send(a26)) == "AA"
    _, view = server.http("GET", "/v1/patients/HOSP-T/P1/consent?at=2025-01-06T11:30:00Z")
    assert [(e["uf"], e["discharged_at"]) for e in view["episodes"]] == [("URG1", None)]
    a16 = adt("A16", ipp="P1", visit="VP1", when="20250106120000", movement="M3", uf="URG1", structure="ADT_A16")
    assert ack_code(server.send(a16)) == "AA"
    a25 = adt("A25", ipp="P1", visit="VP1", when="20250106130000", movement="M3", uf="URG1",
              structure="ADT_A21", zbe_action="CANCEL", original="A16")
    assert ack_code(server.send(a25)) == "AA"
    _, view = server.http("GET", "/v1/patients/HOSP-T/P1/consent?at=2025-01-06T14:00:00Z")
    assert view["consent"]["code"] == "IC"
    (episode,) = view["episodes"]
    assert (episode["visit"], episode["uf"], episode["discharged_at"], episode["cancelled"]) == \
        ("VP1", "URG1", None, False)
    _, d = server.decide({"id": "P1", "authority": "HOSP-T"}, "consult", at="2025-01-06T14:00:00Z")
    assert d["decision"] == "permit" and d["episode"]["visit"] == "VP1"


def test_an_event_the_profile_does_not_list_is_rejected_201(server):
    # PAM FR's receiver rule: an unsupported trigger event is answered with an application reject
    ack = server.send(adt("A60", ipp="P2", visit="VP2", structure="ADT_A60"))
    assert ack_code(ack) == "AR" and "201" in ack and "A60" in ack


def test_six_months_of_validity_are_counted_in_paris_time_across_the_summer_change(server):
    # collected 3 March 2025 at 09:10 in Paris (UTC+1); valid until 3 September at 09:10 in Paris (UTC+2)
    collected = "20250303091000"
    assert ack_code(server.send(adt("A01", ipp="D1", visit="VD1", when=collected,
                                    zfa=zfa_2111("NA", "IC", when=collected)))) == "AA"
    _, view = server.http("GET", "/v1/patients/HOSP-T/D1/consent?at=2025-03-04T00:00:00Z")
    assert view["gate"]["valid_until"] == "2025-09-03T07:10:00+00:00"
    _, d = server.decide({"id": "D1", "authority": "HOSP-T"}, "consult", at="2025-09-03T07:30:00Z")
    assert d["reasons"] == ["consent.expired"]
    _, d = server.decide({"id": "D1", "authority": "HOSP-T"}, "consult", at="2025-09-03T07:00:00Z")
    assert d["decision"] == "permit"


def test_a_repeated_zfa_or_zbe_is_refused_naming_the_second_not_half_read(server):
    """ZFA is [0..1] and ZBE [1..1]: a second one (here the patient's later refusal) was dropped and the first
    applied, `AA`. Which one counts is a guess, so the message is refused whole, `AE` 100 at the second."""
    later = "ZFA|ACTIF|20250106090000|||||||INO|20250106090000|INC|20250106100000"
    ack = server.send(adt("A01", ipp="Z2", visit="VZ2", zfa=zfa_2111("INO", "IC")) + "\r" + later)
    assert ack_code(ack) == "AE"
    assert "ERR||ZFA^2|100^" in ack and "segment ZFA appears 2 times; it may appear once" in ack
    status, _ = server.http("GET", "/v1/patients/HOSP-T/Z2/consent")
    assert status == 404                                    # nothing of it applied
    a01 = adt("A01", ipp="Z3", visit="VZ3", zfa=zfa_2111("INO", "IC"))
    zbe = next(s for s in a01.split("\r") if s.startswith("ZBE"))
    ack = server.send(a01.replace(zbe, zbe + "\r" + zbe.replace("|INSERT|", "|CANCEL|")))
    assert ack_code(ack) == "AE" and "ERR||ZBE^2|100^" in ack
    # two messages in one frame: the first was applied, the second (here a refusal) dropped, AA
    two = adt("A31", ipp="Z5", zfa=zfa_2111("INO", "IC")) + "\r" + adt("A31", ipp="Z5", zfa=zfa_2111("INO", "INC"))
    ack = server.send(two)
    assert ack_code(ack) == "AE" and "ERR||MSH^2|100^" in ack and "segment MSH appears 2 times" in ack
    status, _ = server.http("GET", "/v1/patients/HOSP-T/Z5/consent")
    assert status == 404
    assert ack_code(server.send(adt("A01", ipp="Z4", visit="VZ4", zfa=zfa_2111("INO", "IC")))) == "AA"


def test_a_collection_date_in_the_future_is_refused_naming_the_field(server):
    """A ZFA-12 years ahead (a sender's clock, or a typo) was AA and stored: invisible until then, it would then
    outrank every consent or refusal collected before it. Refused as the API refuses `collected_at` (more than
    5 minutes ahead), AE 102 naming ZFA-12; a few minutes of skew pass."""
    ahead = "20990106090000"
    ack = server.send(adt("A01", ipp="F1", visit="VF1", zfa=zfa_2111("INO", "IC").replace(
        "|IC|20250106090000", f"|IC|{ahead}")))
    assert ack_code(ack) == "AE"
    assert "ERR||ZFA^1^12|102^" in ack and "the collection date is in the future" in ack
    status, _ = server.http("GET", "/v1/patients/HOSP-T/F1/consent")
    assert status == 404
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo
    soon = (datetime.now(ZoneInfo("Europe/Paris")) + timedelta(minutes=2)).strftime("%Y%m%d%H%M%S")
    ack = server.send(adt("A01", ipp="F2", visit="VF2", zfa=zfa_2111("INO", "IC", when=soon)))
    assert ack_code(ack) == "AA"
