"""Choosing and reading the replayed files: name order, line endings, BOM, batches, and bad paths."""
from zoneinfo import ZoneInfo

import pytest

from conformance.messages import collect
from engine.errors import CommandError

MSG = ("MSH|^~\\&|GAM|CH-T|PAMGATE|CH-T|20250106090000||ADT^A01^ADT_A01|{cid}|P|2.5^FRA^2.11|||||FRA|{cs}\r"
       "EVN||20250106090000||||20250106084500\r"
       "PID|1||123^^^CH-T&1.2.3&ISO^PI~2790351215189^^^ASIP&1.2.250.1.213.1.4.10&ISO^INS||DUPRÉ^Zoé^^^^^L")


def write(path, text, ending="\r", bom=False, encoding="utf-8"):
    raw = text.replace("\r", ending).encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + raw + ending.encode())
    return path


def test_folders_are_read_in_name_order_and_only_message_files(tmp_path):
    for name in ("b.hl7", "a.er7", "10.txt", "2.txt", "sub/0.hl7"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write(tmp_path / name, MSG.format(cid=name, cs="UNICODE UTF-8"))
    (tmp_path / "expect.yaml").write_text("steps: []\n")
    (tmp_path / "notes.md").write_text("MSH|not a message file\n")
    replay = collect([tmp_path])
    assert [m.name for m in replay.messages] == ["10.txt", "2.txt", "a.er7", "b.hl7", "sub/0.hl7"]
    assert [m.control_id for m in replay.messages] == ["10.txt", "2.txt", "a.er7", "b.hl7", "sub/0.hl7"]
    assert [m.position for m in replay.messages] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("ending,bom", [("\r", False), ("\n", False), ("\r\n", False), ("\r\n", True)])
def test_any_line_ending_and_a_bom_read_the_same(tmp_path, ending, bom):
    text = MSG.format(cid="C1", cs="UNICODE UTF-8")
    replay = collect([write(tmp_path / "m.hl7", text, ending, bom)])
    assert [m.text for m in replay.messages] == [text]
    assert replay.messages[0].patient() == {"id": "123", "authority": "CH-T"}


def test_a_batch_file_gives_its_messages_and_skips_the_envelope(tmp_path):
    body = "\r".join(["FHS|^~\\&|GAM", "BHS|^~\\&|GAM", MSG.format(cid="C1", cs=""), MSG.format(cid="C2", cs=""),
                      "BTS|2", "FTS|1"])
    replay = collect([write(tmp_path / "batch.hl7", body, "\r\n")])
    assert [(m.label, m.control_id, m.index, m.count_in_file) for m in replay.messages] == [
        ("batch.hl7#1", "C1", 1, 2), ("batch.hl7#2", "C2", 2, 2)]
    assert not any(seg[:3] in ("FHS", "BHS", "BTS", "FTS") for m in replay.messages for seg in m.text.split("\r"))


def test_header_reading_time_and_wire_encoding(tmp_path):
    m = collect([write(tmp_path / "l1.hl7", MSG.format(cid="C9", cs="8859/1"), encoding="latin-1")]).messages[0]
    assert "DUPRÉ" in m.text
    assert (m.control_id, m.event, m.message_type) == ("C9", "A01", "ADT^A01^ADT_A01")
    # the latest of MSH-7, EVN-2, EVN-6, in the site's time zone: 09:00 Paris is 08:00 UTC in January
    assert m.time(ZoneInfo("Europe/Paris")).isoformat() == "2025-01-06T08:00:00+00:00"
    raw, codec = m.wire_bytes()
    assert codec == "iso8859-1" and "DUPRÉ".encode("latin-1") in raw and raw.endswith(b"\r")


@pytest.mark.parametrize("make,expected", [
    (lambda p: p / "absent.hl7", "absent.hl7: no such file or folder"),
    (lambda p: p, "no message file (.hl7, .er7, .txt) in this folder"),
    (lambda p: write(p / "empty.hl7", "just text, no header"), "no HL7 message (no MSH segment)"),
])
def test_bad_paths_are_one_clear_error(tmp_path, make, expected):
    with pytest.raises(CommandError, match=r".*") as e:
        collect([make(tmp_path)])
    assert expected in str(e.value) and "\n" not in str(e.value)
