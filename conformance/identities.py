"""Patient identities in reports: masked unless --show-identities, and patients named by pseudonyms.

Masked: the patient's ids (PID-3, MRG-1: the id itself; its authority and type stay, they say which
kind of id it is), names (PID-5, PID-6, PID-9, MRG-7, NK1-2), birth date (PID-7), address (PID-11,
NK1-4), phone numbers (PID-13, PID-14, NK1-5, NK1-6), the SSN field (PID-19), and the numbers that lead to a
stay: the NDA (PID-18, MRG-3) and the visit number (PV1-19, PV1-50, MRG-5), each id itself.
"""
from __future__ import annotations

MASK = "•••"
# segment → {field: which components to mask (None: all of them)}
FIELDS = {
    "PID": {3: {1}, 5: None, 6: None, 7: None, 9: None, 11: None, 13: None, 14: None, 18: {1}, 19: None},
    "PV1": {19: {1}, 50: {1}},
    "MRG": {1: {1}, 3: {1}, 5: {1}, 7: None},
    "NK1": {2: None, 4: None, 5: None, 6: None},
}


def mask(text: str) -> str:
    """The message with the patient's identity masked, segment by segment, its structure intact."""
    segments = text.split("\r")
    if not segments or len(segments[0]) < 8 or not segments[0].startswith("MSH"):
        return text
    fs, cs, rs = segments[0][3], segments[0][4], segments[0][5]
    out = []
    for seg in segments:
        rules = FIELDS.get(seg[:3])
        if not rules:
            out.append(seg)
            continue
        fields = seg.split(fs)
        for n, components in rules.items():
            if n < len(fields) and fields[n]:
                fields[n] = rs.join(_mask_repetition(r, cs, components) for r in fields[n].split(rs))
        out.append(fs.join(fields))
    return "\r".join(out)


def _mask_repetition(rep: str, cs: str, components) -> str:
    if not rep:
        return rep
    if rep == '""':    # HL7's explicit null says "delete": no identity in it, and it matters to the reader
        return rep
    parts = rep.split(cs)
    return cs.join(MASK if p and (components is None or i in components) else p for i, p in enumerate(parts, 1))


class Pseudonyms:
    """`Patient 1`, `Patient 2`… in order of appearance; the real ids only with --show-identities."""

    def __init__(self, show: bool):
        self.show = show
        self.names: dict = {}

    def __call__(self, patient: dict | None) -> str:
        if not patient:
            return "no patient"
        if patient.get("ins"):
            key = ("INS", patient.get("oid"), patient["ins"])
            real = f"INS {patient['ins']}"
        else:
            key = ("PI", patient.get("authority"), patient.get("id"))
            real = f"{patient.get('id')} ({patient.get('authority') or 'no authority'})"
        if key not in self.names:
            self.names[key] = f"Patient {len(self.names) + 1}"
        return f"{self.names[key]}: {real}" if self.show else self.names[key]
