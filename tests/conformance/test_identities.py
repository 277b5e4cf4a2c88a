"""Patient identities are masked in what the reports show, unless asked for."""
from conformance.identities import Pseudonyms, mask

MSG = ("MSH|^~\\&|GAM|H|DPI|H|20250101||ADT^A40^ADT_A39|C1|P|2.5\r"
       "PID|1||123^^^H&1.2.3&ISO^PI~279035121518989^^^ASIP&1.2.250.1.213.1.4.10&ISO^INS||LEFÈVRE^Hélène^^^^^L~"
       "MARTIN^Hélène^^^^^D|DURAND|19720415|F|||12 rue des Lilas^^LYON^^69003^FRA^H||0612345678|||||N1^^^H^AN\r"
       "MRG|999^^^H&1.2.3&ISO^PI\r"
       "PV1|1|I")


def test_ids_names_birth_date_address_and_phone_are_masked_and_the_rest_kept():
    out = mask(MSG)
    for secret in ("123", "279035121518989", "LEFÈVRE", "Hélène", "MARTIN", "DURAND", "19720415", "Lilas",
                   "LYON", "0612345678", "999"):
        assert secret not in out, secret
    pid = out.split("\r")[1].split("|")
    assert pid[3] == "•••^^^H&1.2.3&ISO^PI~•••^^^ASIP&1.2.250.1.213.1.4.10&ISO^INS"   # kind of id stays
    # the NDA is masked too (issue 15), its authority and type kept
    assert pid[8] == "F" and pid[18] == "•••^^^H^AN"
    assert out.split("\r")[0] == MSG.split("\r")[0] and out.endswith("PV1|1|I")


def test_the_visit_number_is_masked():
    msg = "MSH|^~\\&|A|B|C|D|20250101||ADT^A01|1|P|2.5\rPV1|1|I|" + "|" * 16 + "V12345^^^H^VN"
    out = mask(msg)
    assert "V12345" not in out and out.split("\r")[1].split("|")[19] == "•••^^^H^VN"


def test_pseudonyms_follow_order_of_appearance():
    names = Pseudonyms(show=False)
    a, b = {"id": "1", "authority": "H"}, {"id": "2", "authority": "H"}
    assert [names(a), names(b), names(a)] == ["Patient 1", "Patient 2", "Patient 1"]
    assert Pseudonyms(show=True)(a) == "Patient 1: 1 (H)"
