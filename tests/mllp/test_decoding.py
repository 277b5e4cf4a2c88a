"""Decoding after deframing: MSH-18, listener default and force, BOM, segment ends."""

from __future__ import annotations

import pytest

from mllp.decoding import (
    MissingHeader,
    UndecodableFrame,
    UnsupportedCharset,
    codec_for_charset,
    decode_frame,
    decode_leniently,
    normalise_segments,
    read_charset,
)
from tests.mllp.support import adt


@pytest.mark.parametrize(
    "charset, codec, family",
    [
        ("UNICODE UTF-8", "utf-8", "ÉLOÏSE-ÇÀÈ"),
        ("8859/1", "iso8859-1", "ÉLOÏSE-ÇÀÈ"),
        ("8859/15", "iso8859-15", "ŒUVRE-CÉLINE-€"),
    ],
)
def test_charset_from_msh18_keeps_accented_names(charset, codec, family):
    raw = adt(family=family, charset=charset).encode(codec)
    decoded = decode_frame(raw, default_encoding="ascii")
    assert decoded.encoding == codec
    assert f"PID|1||123456^^^CHU-X&1.2.3&ISO^PI||{family}^JEAN" in decoded.text
    assert not decoded.fallback


def test_latin1_bytes_are_not_read_as_8859_15():
    # 0xBC is "Œ" in 8859-15 and "¼" in 8859-1: the header decides.
    raw = adt(family="\u0152", charset="8859/15").encode("iso8859-15")
    assert "Œ" in decode_frame(raw).text
    assert "¼" in decode_frame(raw.replace(b"8859/15", b"8859/1")).text


def test_empty_msh18_is_ascii_and_falls_back_to_the_listener_default():
    assert decode_frame(adt(charset="").encode("ascii")).encoding == "ascii"
    raw = adt(charset="", family="GRÉGOIRE").encode("iso8859-1")
    decoded = decode_frame(raw, default_encoding="latin-1")
    assert (decoded.encoding, decoded.fallback) == ("iso8859-1", True)
    assert "GRÉGOIRE" in decoded.text


@pytest.mark.parametrize("charset", ["EBCDIC-ISH", "IDNA", "rot13", "punycode", "base64", "UTF-16",
                                     "UNICODE UTF-16", "cp1252", "UNI\x00CODE", "\x00\x00", "8859/1\x1c"])
def test_a_charset_hl7_does_not_name_is_refused_203(charset):
    # IDNA and friends are codecs to Python, not character sets to HL7: guessing stored mangled text
    # or raised from the codec; now a final AR 203 on MSH-18, never the listener's default.
    with pytest.raises(UnsupportedCharset) as refused:
        decode_frame(adt(charset=charset).encode("latin-1") + "É".encode(), default_encoding="utf-8")
    assert (refused.value.code, refused.value.location) == (203, ("MSH", 1, 18))
    assert codec_for_charset(charset) is None


@pytest.mark.parametrize("charset, codec", [("UTF-8", "utf-8"), ("ISO-8859-1", "iso8859-1"),
                                            ("latin1", "iso8859-1"), ("us-ascii", "ascii")])
def test_other_spellings_of_hl7_charsets_are_accepted(charset, codec):
    assert codec_for_charset(charset) == codec
    assert decode_frame(adt(charset=charset).encode()).encoding == codec


def test_force_overrides_a_wrong_header():
    raw = adt(charset="UNICODE UTF-8", family="HÉLÈNE").encode("iso8859-1")
    with pytest.raises(UndecodableFrame):
        decode_frame(raw)
    assert "HÉLÈNE" in decode_frame(raw, force_encoding="latin-1").text


def test_bom_is_stripped_and_means_utf8():
    raw = b"\xef\xbb\xbf" + adt(charset="", family="FRANÇOIS").encode("utf-8")
    decoded = decode_frame(raw)
    assert decoded.text.startswith("MSH|^~\\&|GAM")
    assert decoded.encoding == "utf-8" and "FRANÇOIS" in decoded.text


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_segment_ends_are_normalised_and_trailing_blanks_dropped(newline):
    raw = (adt(newline=newline) + newline + "  " + newline).encode()
    text = decode_frame(raw).text
    assert text.split("\r")[0].startswith("MSH|")
    assert [s[:3] for s in text.split("\r")] == ["MSH", "EVN", "PID", "PV1"]
    assert "\n" not in text and not text.endswith("\r")


def test_charset_is_read_from_the_bytes_with_the_message_separator():
    raw = adt(charset="8859/15").replace("|", "#").encode("latin-1")
    assert read_charset(raw) == "8859/15"
    assert read_charset(adt(charset="8859/1~UNICODE UTF-8").encode()) == "8859/1"


@pytest.mark.parametrize("raw", [b"", b"PID|1|", b"garbage\x00\xff", b"MSH", b"MSHA^~\\&|x"])
def test_frame_without_msh_is_refused(raw):
    with pytest.raises(MissingHeader):
        decode_frame(raw)


def test_codec_names():
    assert codec_for_charset("unicode  utf-8") == "utf-8"
    assert codec_for_charset("ISO-8859-1") == "iso8859-1"
    assert codec_for_charset("UNICODE UTF-16") is None
    assert codec_for_charset("nonsense") is None


def test_normalise_segments():
    assert normalise_segments("A\r\nB\nC\r\r \r") == "A\rB\rC"


@pytest.mark.parametrize(
    "raw, expected",
    [
        (adt(family="JOSÉ", charset="8859/1").encode("latin-1"), "JOSÉ"),
        (adt(family="JOSÉ", charset="").encode("utf-8"), "JOSÉ"),
        (adt(family="JOSÉ", charset="UNICODE UTF-8").encode("latin-1"), "JOSÉ"),
        (b"\xef\xbb\xbf" + adt(family="JOSÉ").encode(), "JOSÉ"),
        (b"\xff\x00garbage", "\xff\x00garbage"),
    ],
)
def test_lenient_decoding_never_fails(raw, expected):
    assert expected in decode_leniently(raw)


@pytest.mark.parametrize("codec, usable", [("latin-1", True), ("cp1252", True), ("utf-8", True),
                                           ("idna", False), ("rot13", False), ("base64", False),
                                           ("utf-16", False), ("punycode", False), ("nope", False)])
def test_a_listener_default_or_force_must_be_a_text_codec(codec, usable):
    from mllp.decoding import is_text_codec
    from mllp.listener import ListenerSettings

    assert is_text_codec(codec) is usable
    if not usable:
        with pytest.raises(ValueError, match="force_encoding"):
            ListenerSettings(force_encoding=codec)
