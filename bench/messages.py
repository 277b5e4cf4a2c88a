"""Made-up but realistic IHE PAM FR ADT^A01 messages (2.11.1 layout) for benchmarks and load tests.

Every message is 600–1600 bytes, with its own control id, IPP, visit and movement numbers, and
French names with accents. Deterministic for a given ``seed``, so runs compare.

    from bench.messages import adt_a01, messages
    texts = messages(1000, seed=1)          # segments joined by "\\r", no trailing "\\r"
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

FAMILY_NAMES = ["MARTIN", "LEFÈVRE", "GARÇON", "BŒUF", "DUPRÉ", "MÉNARD", "FAURÉ", "ROUSSEAU",
                "CŒURDEROY", "BÉRANGER", "LAMBERT", "FRANÇOIS", "NOËL", "ÉTIENNE", "CHÂTEAU"]
GIVEN_NAMES = ["Élodie", "Jérôme", "Françoise", "Anaïs", "Loïc", "Cécile", "Hélène", "Noël",
               "Agnès", "Gaëlle", "Zoé", "Benoît", "Maëlys", "Théo", "Clémence"]
CITIES = [("PARIS", "75007"), ("LYON", "69003"), ("MARSEILLE", "13005"), ("LILLE", "59000"),
          ("RENNES", "35000"), ("BORDEAUX", "33000"), ("NÎMES", "30000"), ("ORLÉANS", "45000")]
STREETS = ["rue de la Paix", "avenue Jean Jaurès", "boulevard Hélène Boucher", "place de l'Église",
           "chemin des Prés", "allée des Érables"]
UNITS = [("Chirurgie viscérale", "6268"), ("Cardiologie", "1402"), ("Médecine interne", "2210"),
         ("Gériatrie", "3105"), ("Pédiatrie", "4420")]
CONSULT = ["IC", "INC", "NA"]
FEED = ["INO", "IO", "NA"]

_EPOCH = datetime(2025, 1, 6, 8, 0, 0)


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


def _professional(rng: random.Random) -> str:
    rpps = "10" + "".join(rng.choice("0123456789") for _ in range(9))
    return (f"{rpps}^{rng.choice(FAMILY_NAMES)}^{rng.choice(GIVEN_NAMES)}^^^^^^"
            f"ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS")


def adt_a01(index: int, *, seed: int = 0, sender: str = "GAM", facility: str = "CHU-BENCH") -> str:
    """The ``index``-th message of the ``seed`` series; segments joined by ``\\r``."""
    rng = random.Random(seed * 1_000_003 + index)
    at = _EPOCH + timedelta(seconds=index * 7 + rng.randrange(5))
    admitted = at - timedelta(minutes=rng.randrange(5, 90))
    ipp = f"{seed % 100:02d}{index:08d}"
    control = f"B{seed % 1000:03d}{index:010d}"
    family, given = rng.choice(FAMILY_NAMES), rng.choice(GIVEN_NAMES)
    sex = rng.choice("MF")
    birth = datetime(1930, 1, 1) + timedelta(days=rng.randrange(30_000))
    city, postcode = rng.choice(CITIES)
    street = f"{rng.randrange(1, 180)} {rng.choice(STREETS)}"
    authority = f"{facility}&1.2.250.1.999.1&ISO"
    ins = ("1" if sex == "M" else "2") + birth.strftime("%y%m") + "".join(
        rng.choice("0123456789") for _ in range(10))
    identity_status = rng.choice(["VALI", "VALI", "PROV", "RECUP"])
    pid3 = f"{ipp}^^^{authority}^PI"
    if identity_status == "VALI":
        pid3 += f"~{ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS"
    unit, unit_code = rng.choice(UNITS)
    visit = f"{seed % 100:02d}{index:09d}"
    uf = f"{unit}^^^^^{authority}^UF^^^{unit_code}"
    attending = _professional(rng) if rng.random() < 0.6 else ""
    admitting = attending if attending and rng.random() < 0.5 else ""
    segments = [
        f"MSH|^~\\&|{sender}|{facility}|DPI|{facility}|{_ts(at)}||ADT^A01^ADT_A01|{control}|P|"
        f"2.5^FRA^2.11|||||FRA|UNICODE UTF-8|FR||2.11^IHE_FRANCE-2.11-PAM",
        f"EVN||{_ts(at)}||||{_ts(admitted)}",
        f"PID|1||{pid3}||{family}^{given}^{given}^^^^L||{birth:%Y%m%d}|{sex}|||"
        f"{street}^^{city}^^{postcode}^FRA^H|||||S||{visit}^^^{authority}^AN|||||||1|||||N||"
        f"{identity_status}|{_ts(admitted)}",
    ]
    if rng.random() < 0.5:
        segments.append("PD1||U||||||||||N")
    for _ in range(rng.randrange(0, 3)):  # 0–2 ROL segments: the size varies
        segments.append(f"ROL||UC|ODRP|{_professional(rng)}|||||||{rng.randrange(1, 99)} "
                        f"{rng.choice(STREETS)}^^{rng.choice(CITIES)[0]}^^{postcode}^FRA^O")
    segments += [
        f"PV1|1|{rng.choice('IOE')}|^^^{authority}^O^^|R|||{attending}|||||||||N|{admitting}||"
        f"{visit}^^^{authority}^VN|||N||||||||||||||4||||||||{_ts(admitted)}|||||||V",
    ]
    if rng.random() < 0.5:
        segments.append(
            f"PV2|||||||CS|{_ts(admitted)}|{_ts(admitted + timedelta(days=rng.randrange(1, 9)))}"
            f"|||Surveillance||||||AN||||N||||||||F||||||N")
    segments += [
        f"ZBE|{index}^{facility}^1.2.250.1.999.1^ISO|{_ts(admitted)}||INSERT|N||{uf}|{uf}|HMS",
        f"ZFA|ACTIF|{_ts(at)}|||||||{rng.choice(FEED)}|{_ts(at)}|{rng.choice(CONSULT)}|{_ts(at)}",
    ]
    if rng.random() < 0.5:
        segments += ["ZFM|8|||", f"ZFD|||Y|N|INSI|{_ts(admitted)[:8]}"]
    return "\r".join(segments)


def messages(count: int, *, seed: int = 0, **kwargs) -> list[str]:
    return [adt_a01(i, seed=seed, **kwargs) for i in range(count)]


if __name__ == "__main__":
    sizes = sorted(len(m.encode()) for m in messages(2000))
    print(f"2000 messages: {sizes[0]}–{sizes[-1]} bytes, median {sizes[1000]}")
