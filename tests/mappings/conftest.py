"""Shared helpers: the shipped mappings, and a builder of PAM FR messages written for these tests."""

from pathlib import Path

import pytest

import mappings
from tests.samples import SAMPLES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shipped():
    return mappings.load()


def adt(event="A01", *, version="2.5^FRA^2.11", profile="", app="GAM", facility="CHU-X", structure=None,
        pid3="000042^^^CHU-X&1.2.250.1.71.4.2.2&ISO^PI", pid32="VALI", pv1=True,
        zbe="M1^CHU-X|20250101080000||INSERT|N||^^^^^^UF^^^4001|^^^^^^UF^^^4002|HMS",
        zfa=None, mrg=None, extra=(), mtype="ADT", sep="\r"):
    """A PAM FR message with the segments that matter here; `None` leaves a segment out."""
    structure = structure or f"ADT_{event}"
    msh = (f"MSH|^~\\&|{app}|{facility}|DPI|CHU-X|20250101080500||{mtype}^{event}^{structure}|MSG{event}|P|{version}"
           f"|||||FRA|8859/1" + (f"|FR||{profile}" if profile else ""))
    pid = [""] * 33
    pid[0], pid[3], pid[5], pid[7], pid[8], pid[18], pid[32] = \
        "PID", pid3, "DUPONT^JEAN^^^M.^^L", "19700101", "M", "NDA77^^^CHU-X^AN", pid32
    pid = "|".join(pid)
    lines = [msh, "EVN||20250101080500||||20250101080000", pid]
    if mrg:
        lines.append("MRG|" + mrg)
    if pv1:
        lines.append("PV1||I|||||801234567897^MARTIN^Paul^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS"
                     "||||||||||||V123^^^CHU-X^VN|||||||||||||||||||||||||20250101080000")
    if zbe is not None and pv1:
        lines.append("ZBE|" + zbe)
    if zfa is not None:
        lines.append("ZFA" + zfa)     # zfa is written as in the samples: "|||||||||NA||NA"
    lines.extend(extra)
    return sep.join(lines)


def run(ms, text):
    """(selection, extraction) of one message text."""
    msg = mappings.Message.parse(text)
    sel = ms.select(msg)
    return sel, sel.mapping.extract(msg)
