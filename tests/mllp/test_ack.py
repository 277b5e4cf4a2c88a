"""ACK building: modes, MSA-2, the swap, ERR, and AR from whatever could be read."""

from __future__ import annotations

import pytest

from mllp.ack import AckError, ack_summary, build_ack, escape, is_enhanced_mode, new_control_id
from tests.mllp.support import adt, fields, msa


def test_original_mode_echoes_control_id_and_swaps_parties():
    ack = build_ack(adt("CTRL42"), "AA")
    msh = fields(ack, "MSH")
    assert msh[1] == "^~\\&"
    assert msh[2:6] == ["DPI", "CHU-Y", "GAM", "CHU-X"]
    assert msh[8] == "ACK^A01^ACK"
    assert msh[9] != "CTRL42" and msh[9]
    assert msh[10:12] == ["P", "2.5^FRA^2.11"]
    assert msh[17] == "UNICODE UTF-8"
    assert msa(ack) == ("AA", "CTRL42")
    assert "ERR" not in ack


@pytest.mark.parametrize("code, enhanced", [("AA", "CA"), ("AE", "CE"), ("AR", "CR")])
@pytest.mark.parametrize("msh15", ["AL", "ER", "SU"])
def test_enhanced_mode_when_msh15_asks_for_an_accept_ack(code, enhanced, msh15):
    assert msa(build_ack(adt(msh15=msh15), code))[0] == enhanced


@pytest.mark.parametrize("msh15", ["", "NE"])
def test_original_codes_when_no_accept_ack_is_wanted(msh15):
    assert not is_enhanced_mode(adt(msh15=msh15))
    assert msa(build_ack(adt(msh15=msh15), "AE"))[0] == "AE"


def test_error_segments_follow_v25():
    ack = build_ack(adt("C1"), "AE", [
        AckError("ZBE", 1, 4, None, 101, "E", "ZBE-4 manquant"),
        AckError("PID", 1, 3, 4, 103, "W", "autorité inconnue: A|B^C~D\\E&F"),
    ])
    errs = [s.split("|") for s in ack.split("\r") if s.startswith("ERR|")]
    assert errs[0][1:9] == ["", "ZBE^1^4", "101^Required field missing^HL70357", "E", "", "", "",
                            "ZBE-4 manquant"]
    assert errs[1][2] == "PID^1^3^^4"
    assert errs[1][4] == "W"
    assert errs[1][8] == "autorité inconnue: A\\F\\B\\S\\C\\R\\D\\E\\E\\T\\F"
    assert msa(ack) == ("AE", "C1")
    assert fields(ack, "MSA")[3] == "ZBE-4 manquant"


def test_error_without_location():
    ack = build_ack(adt(), "AE", [AckError("", 0, 0, None, 207, "E", "store unavailable")])
    assert fields(ack, "ERR")[2:5] == ["", "207^Application internal error^HL70357", "E"]


@pytest.mark.parametrize("garbage", [None, "", "\x00\x01 not hl7 at all", "MSH", "PID|1||x"])
def test_reject_of_garbage_still_builds_a_valid_ack(garbage):
    ack = build_ack(garbage, "AR", [AckError("MSH", 1, 0, None, 100, "E", "no MSH")])
    msh = fields(ack, "MSH")
    assert msh[:2] == ["MSH", "^~\\&"] and msh[8] == "ACK" and msh[11] == "2.5"
    assert msa(ack) == ("AR", "")
    assert fields(ack, "ERR")[2] == "MSH^1"


def test_reject_reads_msh_of_a_partly_broken_message():
    text = "\x00junk\rMSH|^~\\&|APP|FAC|ME|HOSP|2024||ADT^A08|X9|T|2.5"
    ack = build_ack(text, "AR")
    assert fields(ack, "MSH")[2:6] == ["ME", "HOSP", "APP", "FAC"]
    assert fields(ack, "MSH")[10] == "T"
    assert msa(ack) == ("AR", "X9")


def test_message_separators_are_reused():
    text = adt("Z1").replace("|", "#")
    ack = build_ack(text, "AE", [AckError("PID", 1, 5, 1, 102, "E", "a#b")])
    assert ack.startswith("MSH#^~\\&#DPI#CHU-Y#GAM#CHU-X#")
    assert "MSA#AE#Z1" in ack and "PID^1^5^^1" in ack and "a\\F\\b" in ack


def test_control_id_override_and_uniqueness():
    assert fields(build_ack(adt(), "AA", control_id="FIXED"), "MSH")[9] == "FIXED"
    ids = {new_control_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and max(map(len, ids)) <= 20


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError):
        build_ack(adt(), "CA")
    with pytest.raises(ValueError):
        AckError("PID", 1, 3, None, 101, "X", "bad severity")


def test_escape_line_breaks():
    assert escape("a\rb\nc") == "a\\X0D\\b\\X0A\\c"


def test_read_ack_reads_back_what_build_ack_wrote():
    """The reader beside the builder: code, MSA-2, MSA-4 and each ERR, escapes undone, in any separators."""
    from mllp.ack import read_ack
    message = adt("R1").replace("|^~\\&|", "#$%\\*#").replace("|", "#")   # the message's own separators
    err = AckError("ZBE", 1, 4, 2, 101, "E", "ZBE-4 manquant: a|b^c~d&e#f$g%h*i \\ fin")
    read = read_ack(build_ack(message, "AE", [err], expected_sequence=7))
    assert (read.code, read.control_id, read.expected_sequence) == ("AE", "R1", "7")
    (e,) = read.errors
    assert (e.location, e.code, e.text) == ("ZBE-4-2", "101", err.text)
    assert read.problem("R1") == f"ACK AE: {err.text}" and read.problem("R2").startswith("MSA-2 'R1'")
    assert read_ack(build_ack(adt("R3"), "AA")).problem("R3") is None


@pytest.mark.parametrize("code", ["AA", "AE", "AR"])
@pytest.mark.parametrize("msh15", ["", "AL"])
@pytest.mark.parametrize("separator", ["|", "#"])
def test_ack_summary_gives_the_event_and_the_original_code(code, msh15, separator):
    """What the metrics count of every ACK, read without parsing it whole: MSH-9.2, and MSA-1 in original mode
    whatever mode it was sent in; an ACK without MSH is read the long way."""
    text = adt(msh15=msh15).replace("|", separator)
    ack = build_ack(text, code, [AckError("PID", 1, 5, 1, 102, "E", "bad")] if code != "AA" else [])
    assert ack_summary(ack) == ("A01", code)
    assert ack_summary(ack.split("\r", 1)[1]) == ("", code)
