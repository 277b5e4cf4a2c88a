"""--strict: hl7apy's HL7 v2.5 checks, with PAM FR Z segments expected."""
from conformance.strict import validate

HEAD = "MSH|^~\\&|GAM|H|DPI|H|20250101120000||ADT^A01^ADT_A01|C1|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8"
EVN = "EVN||20250101120000"
PID = "PID|1||123^^^H&1.2.3&ISO^PI||DOE^JOHN^^^^^L||19800101|M"
PV1 = "PV1|1|I|||||||||||||||||V1^^^H^VN"
ZBE = "ZBE|M1^H|20250101120000||INSERT|N||Unit^^^^^H^UF^^^2001||HMS"
ZFA = "ZFA|ACTIF|20250101120000|||||||INO|20250101120000|IC|20250101120000"


def test_a_well_formed_pam_fr_message_is_valid_with_its_z_segments():
    v = validate("\r".join([HEAD, EVN, PID, PV1, ZBE, ZFA]))
    assert v.ok, v.errors
    assert v.structure == "ADT_A01"
    assert not any("ZBE" in w or "ZFA" in w for w in v.warnings)


def test_groups_are_allowed_although_the_segments_are_read_flat():
    # ROL after PV1 and PR1+ROL (the PROCEDURE group) are in ADT_A01; find_groups=False reads them flat
    rol = "ROL||AD|ODRP|801^MARTIN^Paul"
    v = validate("\r".join([HEAD, EVN, PID, PV1, rol, "PR1|1||X^Y||20250101120000", rol, ZBE]))
    assert v.ok, v.errors


def test_a_missing_required_segment_is_reported():
    v = validate("\r".join([HEAD, EVN, PID, ZBE]))
    assert not v.ok and any("required segment PV1 missing" in e for e in v.errors)


def test_a_segment_out_of_order_is_reported_where_it_is():
    v = validate("\r".join([HEAD, PID, EVN, PV1]))
    assert not v.ok and v.errors[0].startswith("PID: not expected after MSH in ADT_A01")


def test_a_segment_foreign_to_the_structure_is_reported():
    v = validate("\r".join([HEAD, EVN, PID, PV1, "ORC|NW"]))
    assert any(e.startswith("ORC: not a segment of ADT_A01") for e in v.errors)


def test_bad_data_types_and_missing_required_fields_are_reported():
    v = validate("\r".join([HEAD, "EVN||not-a-date", "PID|1", PV1]))
    assert any(e.startswith("EVN:") and "not-a-date" in e for e in v.errors), v.errors
    assert any("PID.PID_3" in e for e in v.errors), v.errors


def test_an_unknown_z_segment_is_a_warning_only():
    v = validate("\r".join([HEAD, EVN, PID, PV1, "ZXY|1"]))
    assert v.ok and any(w.startswith("ZXY: a Z segment that PAM FR does not define") for w in v.warnings)


def test_another_version_is_validated_as_2_5_and_says_so():
    v = validate("\r".join([HEAD.replace("2.5^FRA^2.11", "2.3.1"), EVN, PID, PV1]))
    assert v.ok and any("validated as HL7 v2.5" in w for w in v.warnings)
