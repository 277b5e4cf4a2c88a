"""The console's French: reason codes and results in plain words, as the capture screens show them."""
from __future__ import annotations

from engine.reason_words import REASONS  # noqa: F401 — the console's words for the reason codes

# the console's own audit entries
ACTION_FR = {
    "console.reveal": "identités affichées",
    "console.download": "message téléchargé",
    "console.retry": "livraison relancée",
    "console.refusal_handled": "refus marqués traités",
    "console.reminder_acknowledged": "rappel de traçabilité accepté",
}

# the other kinds of audit entries, as the patient's page names them
KIND_FR = {"message": "message", "decision": "décision", "consent": "recueil", "dmp.result": "résultat DMP",
           "merge": "fusion", **ACTION_FR}
DECISION_FR = {"permit": "autorisée", "deny": "refusée"}
VALUE_FR = {"consent": "consentement", "refused": "refus", "opposed": "opposition", "no_opposition": "non-opposition",
            "True": "oui", "False": "non"}

CODES = {"IC": "consent à la consultation", "INC": "refuse la consultation", "NA": "non recueilli",
         "INO": "ne s'oppose pas à l'alimentation", "IO": "s'oppose à l'alimentation"}


def reason_fr(code: str) -> str:
    return REASONS.get(code, code)


def _date(dt) -> str:
    if not dt:
        return ""
    from datetime import datetime
    if isinstance(dt, str):
        dt = datetime.fromisoformat(dt)
    return dt.strftime("%d/%m/%Y")


def results_fr(view: dict) -> list[str]:
    """The gate in plain French: « Consultation autorisée jusqu'au … », « Alimentation refusée : … »."""
    g = view["gate"]
    reasons = [reason_fr(r) for r in g.get("reasons") or []]
    consult_reasons = [reason_fr(r) for r in g.get("reasons") or [] if not r.startswith("feed.")]
    feed_reasons = [reason_fr(r) for r in g.get("reasons") or [] if r.startswith("feed.") or r.startswith("dmp.")]
    out = []
    if g.get("consult") == "permit":
        until = _date(g.get("valid_until"))
        out.append(f"Consultation autorisée jusqu'au {until}" if until else "Consultation autorisée")
    else:
        out.append("Consultation refusée : " + (", ".join(consult_reasons) or ", ".join(reasons) or "sans motif"))
    if g.get("feed") == "permit":
        out.append("Alimentation autorisée")
    else:
        out.append("Alimentation refusée : " + (", ".join(feed_reasons) or "opposition du patient"))
    return out


ITEMS = {"consult": "consultation", "feed": "alimentation", "dmp_status": "statut du DMP",
         "block.break_glass": "blocage du bris de glace", "block.centre_15": "blocage du centre 15"}


def choice_fr(values: dict) -> str:
    """A recorded choice in words: « consultation : refuse la consultation (INC) ; alimentation : … »."""
    out = []
    for item in ("consult", "feed"):
        code = values.get(f"{item}.code") or (values.get(item) if values.get(item) in CODES else None)
        if code:
            out.append(f"{ITEMS[item]} : {CODES[code]} ({code})")
    for item, value in values.items():
        if item not in ("consult", "feed") and "." not in item.replace("block.", "") and value is not None:
            out.append(f"{ITEMS.get(item, item)} : {value}")
    return " ; ".join(out)
