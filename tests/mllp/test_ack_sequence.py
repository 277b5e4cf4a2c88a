"""MSA-4, the expected sequence number of the HL7 sequence number protocol (v2.5 2.10.1)."""

from __future__ import annotations

import pytest

from mllp.ack import AckError, build_ack
from tests.mllp.support import adt, fields


@pytest.mark.parametrize("expected", [1, 42, -1])
def test_msa4_carries_the_expected_sequence_number(expected):
    msa = fields(build_ack(adt("S1"), "AA", expected_sequence=expected), "MSA")
    assert msa == ["MSA", "AA", "S1", "", str(expected)]     # MSA-3 empty: no error


def test_msa4_follows_the_first_error_text_and_the_enhanced_code():
    err = AckError("MSH", 1, 13, None, 204, "E", "MSH-13 is 5, 4 was expected")
    ack = build_ack(adt("S2", msh15="AL"), "AR", [err], expected_sequence=4)
    assert fields(ack, "MSA") == ["MSA", "CR", "S2", "MSH-13 is 5, 4 was expected", "4"]
    assert fields(ack, "ERR")[2:4] == ["MSH^1^13", "204^Unknown key identifier^HL70357"]


def test_no_msa4_without_a_sequence_number():
    assert fields(build_ack(adt("S3"), "AA"), "MSA") == ["MSA", "AA", "S3"]
    assert len(fields(build_ack(adt("S4"), "AE", [AckError("", 0, 0, None, 207, "E", "x")]), "MSA")) == 4


def test_msa4_on_a_message_of_the_header_alone():
    """A link start (MSH-13 = 0) may carry nothing but its MSH; the ACK still answers MSA-4."""
    start = "MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20240306111154||^|X3657|P|2.5|0"
    ack = build_ack(start, "AA", expected_sequence=1)
    assert fields(ack, "MSH")[8] == "ACK"
    assert fields(ack, "MSA") == ["MSA", "AA", "X3657", "", "1"]
