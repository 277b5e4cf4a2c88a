"""Identities hidden by default: names, birth dates, INS, NDA and visit numbers are shown as `•••` until an
operator reveals them for one patient, with a reason (audited). The IPP stays: it is how a patient is named
in the console's paths, as in the API's."""
from __future__ import annotations

import re

MASK = "•••"

# segment -> the fields kept as they are (every other non-empty field is masked); PID-3 and MRG-1 keep their
# PI repetitions only (the IPP), an INS in them is masked
_KEEP = {"PID": {1, 3, 8}, "MRG": {1}}
# segments of which only these fields are masked
_ONLY = {"PV1": {19, 50}}
# segments that are nothing but identity (next of kin, insurance, guarantor): all masked
_WHOLE = {"NK1", "IN1", "IN2", "GT1", "PD1"}
_ID_LISTS = {("PID", 3), ("MRG", 1)}

# fact names that carry an identity (mapping files name them so): masked in a trace
_IDENTITY_FACT = re.compile(r"(name|birth|ins\b|ins\.|\.ins|nda|visit\.number|address|phone|mother|prior\.visit)",
                            re.IGNORECASE)


def shown(value, revealed: bool):
    """`value`, or the mask when identities are not revealed (an empty value stays empty)."""
    if value is None:
        return ""
    if revealed or value == "":
        return value
    return MASK


def identity_fact(name: str) -> bool:
    return bool(_IDENTITY_FACT.search(name or ""))


def mask_message(text: str) -> str:
    """The message with its identities masked, segment by segment (the separators read from MSH)."""
    if not text.startswith("MSH") or len(text) < 8:
        return text
    fs, cs, rs = text[3], text[4], text[5]
    out = []
    for seg in re.split(r"\r\n|\r|\n", text):
        name = seg[:3]
        if name not in _KEEP and name not in _ONLY and name not in _WHOLE:
            out.append(seg)
            continue
        fields = seg.split(fs)
        for i in range(1, len(fields)):
            if not fields[i]:
                continue
            if (name, i) in _ID_LISTS:
                fields[i] = rs.join(r if _id_type(r, cs) == "PI" else MASK for r in fields[i].split(rs))
            elif name in _WHOLE:
                fields[i] = MASK if i > 1 else fields[i]
            elif name in _ONLY:
                if i in _ONLY[name]:
                    fields[i] = MASK
            elif i not in _KEEP[name]:
                fields[i] = MASK
        out.append(fs.join(fields))
    return "\r".join(out)


def _id_type(rep: str, cs: str) -> str:
    parts = rep.split(cs)
    return parts[4] if len(parts) > 4 else ""
