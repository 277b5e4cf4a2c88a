"""Values a receiver cannot read without guessing, over a real socket: a second value in a ZFA field that does not
repeat (ZFA-11 `IC~INC`: a later value may be the patient's refusal), and an MSH-15/MSH-16 outside HL7 table 0155
(the acknowledgment asked for is unknown). Both are refused and nothing is applied."""
import pytest

from mllp.ack import read_ack
from tests.builders import adt, zfa_2111
from tests.serving import ack_code


def _msh(message: str, n: int, value: str) -> str:
    """The message with MSH-n set to `value` (MSH-1 is the separator, so MSH-n is the n-th field after MSH)."""
    msh, rest = message.split("\r", 1)
    fields = msh.split("|")
    fields[n - 1] = value
    return "|".join(fields) + "\r" + rest


def _unknown(server, ipp) -> bool:
    return server.http("GET", f"/v1/patients/HOSP-T/{ipp}/consent")[0] == 404


@pytest.mark.parametrize("field, zfa", [
    (11, zfa_2111("NA", "IC~INC")),                                   # consent, then refusal
    (11, zfa_2111("NA", "~IC")),                                      # the value is not in the first repetition
    (1, zfa_2111("NA", "IC", status="ACTIF~FERME")),                  # DMP status
    (2, zfa_2111("NA", "IC").replace("ACTIF|20250106090000", "ACTIF|20250106090000~20250105090000")),
    (9, zfa_2111("IO~INO", "IC")),                                    # feeding
    (12, zfa_2111("NA", "IC") + "~20250105090000"),                   # the consent's collection date
])
def test_a_second_value_in_a_zfa_field_is_refused_and_nothing_is_applied(server, field, zfa):
    ipp = f"R{field}{len(zfa)}"
    ack = server.send(adt("A01", ipp=ipp, visit=f"V{ipp}", zfa=zfa))
    read = read_ack(ack)
    assert read.code == "AE"
    assert [(e.location, e.code) for e in read.errors] == [(f"ZFA-{field}", "102")]
    assert f"ZFA^1^{field}|" in ack
    assert _unknown(server, ipp)


def test_a_pre_211_opposition_field_is_single_valued_too(server):
    legacy = adt("A01", ipp="R210", visit="VR210", version="2.5^FRA^2.10", profile="", zfa="ACTIF|||Y~N")
    read = read_ack(server.send(legacy))
    assert (read.code, [(e.location, e.code) for e in read.errors]) == ("AE", [("ZFA-4", "102")])
    assert _unknown(server, "R210")


def test_an_empty_trailing_repetition_and_the_fields_that_repeat_are_read(server):
    # `IC~` holds one value; PID-3 (identifiers), PID-5 (names) and PV1-7 (attending doctors) do repeat
    message = adt("A01", ipp="R1", visit="VR1", ins="279035121518989", name="DUPONT^ÉLODIE^^^^^L~MARTIN^ÉLODIE",
                  zfa=zfa_2111("NA", "IC~"))
    message = message.replace("^RPPS|", "^RPPS~10000000002^DURAND^Anne^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO"
                                        "^D^^^RPPS|", 1)
    assert "~10000000002^DURAND" in message
    assert ack_code(server.send(message)) == "AA"
    _, view = server.http("GET", "/v1/patients/HOSP-T/R1/consent?at=2025-01-07T00:00:00Z")
    assert view["consent"]["code"] == "IC"
    assert [i["value"] for i in view["identities"] if i["kind"] == "INS"] == ["279035121518989"]


@pytest.mark.parametrize("n, accept, application", [(15, "XX", ""), (16, "", "XX"), (16, "AL", "YES"),
                                                    (15, "ALWAYS", "AL")])
def test_an_acknowledgment_type_outside_table_0155_is_rejected_in_original_mode(server, n, accept, application):
    ipp = f"K{n}{accept}{application}"
    message = _msh(_msh(adt("A01", ipp=ipp, visit=f"V{ipp}", zfa=zfa_2111("NA", "IC")), 15, accept), 16, application)
    ack = server.send(message)
    read = read_ack(ack)
    assert read.code == "AR"        # not CR: the mode asked for is unknown
    assert [(e.location, e.code) for e in read.errors] == [(f"MSH-{n}", "203")]
    assert f"ERR||MSH^1^{n}|203^" in ack
    assert _unknown(server, ipp)


@pytest.mark.parametrize("accept, application, code", [("AL", "NE", "CA"), ("ER", "AL", "CA"), ("SU", "", "CA"),
                                                       ("NE", "AL", "AA"), ("", "ER", "AA"), ("al", "", "CA")])
def test_the_acknowledgment_types_of_table_0155_are_answered_as_before(server, accept, application, code):
    ipp = f"G{accept}{application}"
    message = _msh(_msh(adt("A01", ipp=ipp, visit=f"V{ipp}", zfa=zfa_2111("NA", "IC")), 15, accept), 16, application)
    assert ack_code(server.send(message)) == code
    assert not _unknown(server, ipp)
