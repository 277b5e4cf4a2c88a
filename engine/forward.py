"""Version translation: the inbound ADT, forwarded with its ZFA in the PAM FR 2.11.1 layout.

Pure functions. `zfa_values` reads the stored state (after the message was applied) into the six values
of a 2.11.1 ZFA; `rewrite` puts them into the message with python-hl7, so that a downstream DPI that reads
only the new layout gets the consent whatever layout the sender speaks (≤ 2.10 has no consent field).

The 2.11.1 ZFA: ZFA-1 DMP status, ZFA-2 its date, ZFA-3 the closing date; ZFA-4..8 empty (forbidden
since 2.11); ZFA-9 feed (`INO`/`IO`/`NA`) and ZFA-10 its date; ZFA-11 consent (`IC`/`INC`/`NA`) and ZFA-12
its date. MSH-12 becomes `2.5^FRA^2.11` and MSH-21 `2.11^IHE_FRANCE-2.11-PAM`. MSH-10 is kept, so a
receiver deduplicates a delivery made twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import hl7

from engine import rules
from engine.domain import CONSULT, DMP_STATUS, FEED, PatientState, Policy
from mappings.codes import codes

VERSION = ("2.5", "FRA", "2.11")
PROFILE = ("2.11", "IHE_FRANCE-2.11-PAM")
# PAM FR allows ZFA on these events only; on the others a ZFA is rewritten if present, never added
ZFA_EVENTS = frozenset({"A01", "A04", "A05", "A14", "A28", "A31", "Z99"})


@dataclass(frozen=True)
class ZfaValues:
    dmp_status: str = ""
    dmp_collected_at: datetime | None = None
    dmp_closed_at: datetime | None = None
    feed: str = "NA"
    feed_collected_at: datetime | None = None
    consult: str = "NA"
    consult_collected_at: datetime | None = None


def zfa_values(state: PatientState, policy: Policy, visit: str | None,
               dmp_closed_at: datetime | None = None) -> ZfaValues:
    """The latest value of each ZFA item in the state, as the 2.11.1 layout codes it.

    Consent is per episode: with the `visit` scope only the values of this visit (or of none) count. A
    consent cancelled with its admission is sent as `NA`, never as the value it had.
    """
    by_visit = policy.episode.scope == "visit"

    def latest(item, scoped):
        facts = [f for f in state.facts if f.item == item
                 and (not scoped or f.visit is None or f.visit == visit)]
        return rules.latest(facts)

    dmp = latest(DMP_STATUS, False)
    feed = latest(FEED, by_visit and policy.episode.feed_opposition_ends_with_episode)
    consult = latest(CONSULT, by_visit)
    # the 2.11.1 codes, from its mapping file; legacy_consent (a 2.11 INO) has none: it is not consent, NA
    feed_code = codes("feed").get(feed.value, "NA") if feed and not feed.cancelled else "NA"
    consult_code = codes("consult").get(consult.value, "NA") if consult and not consult.cancelled else "NA"
    return ZfaValues(
        dmp_status=str(dmp.value) if dmp else "",
        dmp_collected_at=dmp.collected_at if dmp else None,
        dmp_closed_at=dmp_closed_at if dmp and dmp.value == "FERME" else None,
        feed=feed_code, feed_collected_at=feed.collected_at if feed_code != "NA" else None,
        consult=consult_code, consult_collected_at=consult.collected_at if consult_code != "NA" else None,
    )


def hl7_ts(dt: datetime | None, tz: ZoneInfo) -> str:
    """An HL7 TS in the establishment's local time, as PAM FR senders write it."""
    if dt is None:
        return ""
    aware = dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return aware.astimezone(tz).strftime("%Y%m%d%H%M%S")


def zfa_fields(v: ZfaValues, tz: ZoneInfo) -> list[str]:
    """ZFA-1..12; trailing empty fields dropped."""
    fields = [v.dmp_status, hl7_ts(v.dmp_collected_at, tz), hl7_ts(v.dmp_closed_at, tz), "", "", "", "", "",
              v.feed, hl7_ts(v.feed_collected_at, tz), v.consult, hl7_ts(v.consult_collected_at, tz)]
    while fields and not fields[-1]:
        fields.pop()
    return fields


def rewrite(text: str, values: ZfaValues, tz: ZoneInfo, event: str) -> str:
    """The message with MSH-12/MSH-21 of PAM FR 2.11.1 and its ZFA rebuilt from `values`.

    An existing ZFA is replaced in place. Where there is none and the event allows one, it is added
    after ZBE (after PV2/PV1 when there is no ZBE, as on A28/A31), else at the end.
    """
    msg = hl7.parse(text.replace("\r\n", "\r").replace("\n", "\r"))
    msh = msg.segment("MSH")
    while len(msh) <= 21:
        msh.append(msg.create_field([]))
    msh[12] = msg.create_field([msg.create_repetition(list(VERSION))])
    msh[21] = msg.create_field([msg.create_repetition(list(PROFILE))])
    zfa = msg.create_segment([msg.create_field(["ZFA"])] +
                             [msg.create_field([f]) for f in zfa_fields(values, tz)])
    names = [str(seg[0]) for seg in msg]
    if "ZFA" in names:
        msg[names.index("ZFA")] = zfa
    elif event in ZFA_EVENTS:
        after = _last_of(names, ("ZBE",))
        after = _last_of(names, ("PV2", "PV1")) if after is None else after
        msg.insert(after + 1 if after is not None else len(msg), zfa)
    return str(msg).rstrip("\r")


def _last_of(names: list[str], wanted: tuple) -> int | None:
    hits = [i for i, n in enumerate(names) if n in wanted]
    return hits[-1] if hits else None


def forwarded_message(text: str, state: PatientState, facts: dict, policy: Policy, tz: ZoneInfo) -> str:
    """The inbound message as an `mllp` destination with `forward_adt` receives it."""
    values = zfa_values(state, policy, facts.get("visit.number") or None, facts.get("dmp.closed_at"))
    return rewrite(text, values, tz, facts.get("message.event") or "")
