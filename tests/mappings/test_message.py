
import pytest

from mappings.message import Message, PathError, compile_path, unescape
from tests.mappings.conftest import adt

MSG = Message.parse(
    "MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20250101||ADT^A01^ADT_A01|1|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8|FR||2.11^IHE_FRANCE-2.11-PAM\r"
    "PID|||111^^^CHU-X&1.2&ISO^PI~222^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^NH~333^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"
    "||NOM\\S\\COMPOSE^Zoé\\T\\x\\E\\y\\F\\z\r"
    "ROL||UC|AT|R1^A\r"
    "ROL||UC|ODRP|R2^B~R3^C\r"
)


def test_msh_fields_are_numbered_as_hl7_numbers_them():
    assert MSG.get("MSH-1") == "|"
    assert MSG.get("MSH-2") == "^~\\&"
    assert MSG.get("MSH-3") == "GAM"
    assert MSG.get("MSH-9-2") == "A01"
    assert MSG.get("MSH-12-3") == "2.11"
    assert MSG.get("MSH-21-2") == "IHE_FRANCE-2.11-PAM"


def test_terser_defaults_to_the_first_component_and_subcomponent():
    assert MSG.get("PID-3") == "111"
    assert MSG.get("PID-3-4") == "CHU-X"
    assert MSG.get("PID-3-4-2") == "1.2"


def test_repetitions_count_from_zero_as_in_hapi_terser():
    assert MSG.get("PID-3(1)-5") == "NH"
    assert MSG.values("PID-3(*)-1") == ["111", "222", "333"]
    assert MSG.get("PID-3(7)-1") is None


def test_a_filter_selects_the_repetition_and_its_components_come_from_it():
    assert MSG.get("PID-3[5=INS]-1") == "333"
    assert MSG.get("PID-3[5=INS,4-2=1.2.250.1.213.1.4.8]-1") == "333"
    assert MSG.get("PID-3[5=NH|INS]-1") == "222"
    assert MSG.get("PID-3[5=XX]-1") is None


def test_segment_repetition_and_segment_filter():
    assert MSG.values("ROL(*)-4(*)-1") == ["R1", "R2", "R3"]
    assert MSG.get("ROL(1)-4") == "R2"
    assert MSG.get("ROL[3=ODRP]-4(1)-2") == "C"


def test_escapes_are_undone_only_on_values_returned():
    assert MSG.get("PID-5-1") == "NOM^COMPOSE"
    assert MSG.get("PID-5-2") == "Zoé&x\\y|z"
    assert unescape("a\\X41\\b") == "aAb"
    assert unescape("\\XC3A9\\") == "é"
    assert unescape("\\R\\") == "~"
    assert unescape("\\Q\\") == "\\Q\\"       # unknown: kept as sent


def test_absent_and_empty_are_none():
    assert MSG.get("ZFA-11") is None
    assert MSG.get("PID-99") is None
    assert MSG.get("PID-3-9") is None


def test_newline_terminators_and_bom_are_tolerated():
    for sep in ("\n", "\r\n"):
        m = Message.parse("\ufeff" + adt(sep=sep))
        assert m.get("PID-3") == "000042"
        assert m.get("PV1-19") == "V123"


def test_separators_are_read_from_msh():
    m = Message.parse("MSH#$%@!#A#B\rPID###1$x$y%2$z!w")
    assert m.get("MSH-3") == "A"
    assert m.get("PID-3-2") == "x"
    assert m.get("PID-3(1)-2-1") == "z"
    assert m.get("PID-3(1)-2-2") == "w"


@pytest.mark.parametrize("text", ["", "PID|1", "MSH", "MSHA^~\\&"])
def test_not_a_message(text):
    with pytest.raises(ValueError):
        Message.parse(text)


@pytest.mark.parametrize("path", ["PID", "pid-3", "PID-0", "PID-3-0", "PID-3[x]-1", "PID-3(1)[5=PI]-1", "MSH-2-1",
                                  "PID-3[5=@nolist]-1"])
def test_bad_paths_are_refused_with_a_reason(path):
    with pytest.raises(PathError):
        compile_path(path)
