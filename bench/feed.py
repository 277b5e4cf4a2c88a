"""A realistic PAM FR feed: the event mix of a hospital's ADT feed over a population with a long tail.

    from bench.feed import Feed
    feed = Feed(seed=7, patients=100_000)
    texts = [feed.next() for _ in range(10_000)]

The mix follows the shared CPage feed (A28 46 %, Z99 17 %, A31 10 %, A03 10 %, A04 8 %, A05 3 %, then A01,
A02, A11). Who each message is about is drawn with weights 1/rank^1.1 (Zipf): most patients get a few
messages, the first ranks thousands, as dialysis or long psychiatric stays do. Each patient's messages make
sense in order: an admission (A01/A04/A05) opens a new visit with a ZFA (consent IC / INC / NA, feed opposition
INO / IO / NA); Z99 corrects that visit's movement; A02 moves it; A03 ends it; A11 cancels it.
"""
from __future__ import annotations

import bisect
import itertools
import random
from datetime import datetime, timedelta

MIX = (("A28", 46), ("Z99", 17), ("A31", 10), ("A03", 10), ("A04", 8), ("A05", 3), ("A01", 3), ("A02", 2),
       ("A11", 1))
STRUCTURE = {"A01": "ADT_A01", "A04": "ADT_A01", "A05": "ADT_A05", "A28": "ADT_A05", "A31": "ADT_A05",
             "A02": "ADT_A02", "A03": "ADT_A03", "A11": "ADT_A09", "Z99": "ADT_A01"}
AUTHORITY, FACILITY, APP = "CHU-FEED", "CHU-FEED", "GAM-FEED"
UFS = ("URG", "CARDIO", "DIAL", "PSY1", "ONCO", "MED2")
T0 = datetime(2024, 1, 1, 8, 0)


class Feed:
    def __init__(self, seed: int = 0, patients: int = 100_000, skew: float = 1.1):
        self.rng = random.Random(seed)
        self.seed = seed
        self.cum = list(itertools.accumulate(1 / (r + 1) ** skew for r in range(patients)))
        self.events, weights = zip(*MIX)
        self.event_cum = list(itertools.accumulate(weights))
        self.state: dict[int, dict] = {}   # patient -> its open visit, movements, messages so far
        self.count = 0

    def patient(self) -> int:
        return bisect.bisect(self.cum, self.rng.random() * self.cum[-1])

    def next(self) -> str:
        rng = self.rng
        p = self.patient()
        event = self.events[bisect.bisect(self.event_cum, rng.random() * self.event_cum[-1])]
        s = self.state.setdefault(p, {"visit": None, "n": 0, "moves": 0})
        if event in ("Z99", "A02", "A03", "A11") and s["visit"] is None:
            event = "A04"          # nothing to move or end yet: the visit begins
        self.count += 1
        s["n"] += 1
        when = T0 + timedelta(minutes=self.count)
        ts = when.strftime("%Y%m%d%H%M%S")
        cid = f"F{self.seed}-{self.count}"
        ipp = f"{9_000_000 + p}"
        segs = [f"MSH|^~\\&|{APP}|{FACILITY}|DPI|{FACILITY}|{ts}||ADT^{event}^{STRUCTURE[event]}|{cid}|P|"
                f"2.5^FRA^2.11|||||FRA|UNICODE UTF-8|||2.11^IHE_FRANCE-2.11-PAM",
                f"EVN||{ts}||||{ts}",
                f"PID|1||{ipp}^^^{AUTHORITY}&1.2.250.1.71.1.2.2&ISO^PI||NOM{p}^PRENOM^^^^^L||19{40 + p % 60:02d}0101|"
                f"{'MF'[p % 2]}|||||||||||||||||||||||||VALI"]
        if event in ("A28", "A31"):
            return "\r".join(segs)
        trigger, action, original = event, "INSERT", ""
        if event in ("A01", "A04", "A05"):
            s["visit"], s["moves"] = f"V{p}-{s['n']}", 0
        elif event == "Z99":
            trigger, action, original = "Z99", "UPDATE", "A01"
        elif event == "A11":
            action, original = "CANCEL", "A01"
        s["moves"] += 1
        visit = s["visit"]
        movement = f"{visit}-M{s['moves'] if action == 'INSERT' else 1}"
        uf = UFS[(p + s["moves"]) % len(UFS)]
        segs.append(f"PV1|1|{'O' if event == 'A04' else 'I'}|||||801234567897^MARTIN^Paul^^^^^^ASIP-SANTE-PS&"
                    f"1.2.250.1.71.4.2.1&ISO^D^^^RPPS||||||||||||{visit}^^^{AUTHORITY}^VN|||||||||||||||||||||||||{ts}")
        segs.append(f"ZBE|{movement}^{FACILITY}|{ts}||{action}|N|{original}|^^^^^{FACILITY}^UF^^^{uf}||HMS")
        if event in ("A01", "A04", "A05", "Z99"):
            consult = rng.choice(("IC", "IC", "INC", "NA"))
            feed = rng.choice(("INO", "INO", "IO", "NA"))
            segs.append(f"ZFA|ACTIF|{ts}|||||||{feed}|{ts if feed != 'NA' else ''}|{consult}|"
                        f"{ts if consult != 'NA' else ''}")
        if event in ("A03", "A11"):
            s["visit"] = None
        return "\r".join(segs)


def history_lengths(count: int, seed: int = 0, patients: int = 100_000) -> list[int]:
    """How many messages each patient got in the first `count`: the tail the feed draws (for the record)."""
    feed = Feed(seed, patients)
    n: dict[int, int] = {}
    for _ in range(count):
        p = feed.patient()
        n[p] = n.get(p, 0) + 1
    return sorted(n.values(), reverse=True)
