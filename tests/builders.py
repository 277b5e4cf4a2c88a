"""PAM FR messages written for the tests (never copies of the shared samples)."""
from __future__ import annotations

import itertools

_ids = itertools.count(1)


def adt(event="A01", *, ipp="100001", authority="HOSP-T", visit="V0001", when="20250106090000",
        zfa=None, zbe_action="INSERT", movement="M1", original=None, version="2.5^FRA^2.11",
        profile="2.11^IHE_FRANCE-2.11-PAM", control_id=None, app="GAM-T", facility="HOSP-T",
        name="DUPONT^ÉLODIE", structure=None, prior_ipp=None, charset="UNICODE UTF-8",
        patient_class="I", uf="URG1", historic="N", ins=None, pv1=True, zbe=True, prior_ins=()) -> str:
    """One ADT message; `zfa` is the raw ZFA field list after the segment name, e.g. "ACTIF|...|INO|...|IC|...".
    `ins` is an INS under the test OID, or a list of (INS, OID) repetitions; `prior_ins` likewise in MRG-1."""
    cid = control_id or f"T{next(_ids):08d}"
    structure = structure or {"A01": "ADT_A01", "A04": "ADT_A01", "A05": "ADT_A05", "A28": "ADT_A05",
                              "A31": "ADT_A05", "A40": "ADT_A39", "A47": "ADT_A30", "A03": "ADT_A03",
                              "A11": "ADT_A09", "Z99": "ADT_A01"}.get(event, "ADT_A01")
    pid3 = f"{ipp}^^^{authority}&1.2.250.1.71.1.2.2&ISO^PI"
    if isinstance(ins, str):
        ins = [(ins, "1.2.250.1.213.1.4.10")]
    for value, oid in ins or ():
        pid3 += f"~{value}^^^{_ins_authority(oid)}&{oid}&ISO^INS"
    segs = [
        f"MSH|^~\\&|{app}|{facility}|DPI|{facility}|{when}||ADT^{event}^{structure}|{cid}|P|{version}|||||FRA|{charset}|||{profile}",
        f"EVN||{when}||||{when}",
        f"PID|1||{pid3}||{name}^^^^L||19800101|F||||||||||NDA{visit}^^^{authority}^AN||||||||||||||VALI",   # PID-18, PID-32
    ]
    if prior_ipp:
        segs.append(f"MRG|{prior_ipp}^^^{authority}&1.2.250.1.71.1.2.2&ISO^PI"
                    + "".join(f"~{value}^^^{_ins_authority(oid)}&{oid}&ISO^INS" for value, oid in prior_ins))
    if pv1 and event not in ("A28", "A31", "A40", "A47"):
        segs.append(f"PV1|1|{patient_class}|||||801234567897^MARTIN^Paul^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS"
                    f"||||||||||||{visit}^^^{authority}^VN|||||||||||||||||||||||||{when}")
        if zbe:
            six = original or ""
            segs.append(f"ZBE|{movement}^{facility}|{when}||{zbe_action}|{historic}|{six}|^^^^^{facility}^UF^^^{uf}||HMS")
    if zfa is not None:
        segs.append(f"ZFA|{zfa}")
    return "\r".join(segs)


def _ins_authority(oid: str) -> str:
    return "ASIP-SANTE-INS-NIA" if oid == "1.2.250.1.213.1.4.9" else "ASIP-SANTE-INS-NIR"


def zfa_2111(feed="NA", consult="NA", when="20250106090000", status="ACTIF") -> str:
    """A ZFA in the PAM FR 2.11.1 layout: ZFA-1, 2, 9, 10, 11, 12."""
    fdate = when if feed != "NA" else ""
    cdate = when if consult != "NA" else ""
    return f"{status}|{when}|||||||{feed}|{fdate}|{consult}|{cdate}"
