"""The console's French: reason codes and results in plain words, as the capture screens show them."""
from __future__ import annotations

from datetime import datetime

from engine.domain import in_zone
from engine.reason_words import REASONS  # noqa: F401 — the console's words for the reason codes

# the console's own audit entries
ACTION_FR = {
    "console.reveal": "identités affichées",
    "console.download": "message téléchargé",
    "console.retry": "livraison relancée",
    "console.refusal_handled": "refus marqués traités",
    "console.reminder_acknowledged": "rappel de traçabilité accepté",
    "audit.verification": "vérification de la chaîne d'audit",
}

# why the audit chain is broken (consent_store UnitOfWork.verify_audit's words), in French
CHAIN_BREAKS = {
    "prev_hash does not match the previous entry's hash":
        "elle ne suit pas l'entrée précédente (entrée supprimée ou insérée avant elle)",
    "hash does not match the entry's content": "son contenu a été modifié après son écriture",
    "the chain's head does not match its last entry (entries removed at the end)":
        "la tête de la chaîne ne correspond plus à sa dernière entrée (entrées supprimées à la fin)",
}


def chain_break_fr(why: str | None) -> str | None:
    return None if why is None else CHAIN_BREAKS.get(why, why)

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


def _date(dt, zone=None) -> str:
    dt = in_zone(dt, zone)
    return dt.strftime("%d/%m/%Y") if isinstance(dt, datetime) else dt or ""


def results_fr(view: dict, zone=None) -> list[str]:
    """The gate in plain French: « Consultation autorisée jusqu'au … », « Alimentation refusée : … »."""
    g = view["gate"]
    reasons = [reason_fr(r) for r in g.get("reasons") or []]
    consult_reasons = [reason_fr(r) for r in g.get("reasons") or [] if not r.startswith("feed.")]
    feed_reasons = [reason_fr(r) for r in g.get("reasons") or [] if r.startswith("feed.") or r.startswith("dmp.")]
    out = []
    if g.get("consult") == "permit":
        until = _date(g.get("valid_until"), zone)
        out.append(f"Consultation autorisée jusqu'au {until}" if until else "Consultation autorisée")
    else:
        out.append("Consultation refusée : " + (", ".join(consult_reasons) or ", ".join(reasons) or "sans motif"))
    if g.get("feed") == "permit":
        out.append("Alimentation autorisée")
    else:
        out.append("Alimentation refusée : " + (", ".join(feed_reasons) or "opposition du patient"))
    return out


# the ITI-31 movements (IHE PAM FR), as the patient's page names them
EVENT_FR = {
    "A01": "admission", "A02": "mutation", "A03": "sortie", "A04": "venue externe", "A05": "pré-admission",
    "A06": "externe → hospitalisé", "A07": "hospitalisé → externe", "A11": "annulation de l'admission",
    "A12": "annulation de la mutation", "A13": "annulation de la sortie", "A14": "admission prévue",
    "A15": "mutation prévue", "A16": "sortie prévue", "A21": "absence provisoire", "A22": "retour d'absence",
    "A25": "annulation de la sortie prévue", "A26": "annulation de la mutation prévue",
    "A27": "annulation de l'admission prévue", "A38": "annulation de la pré-admission",
    "A52": "annulation de l'absence", "A53": "annulation du retour d'absence",
    "A54": "changement de médecin responsable", "A55": "annulation du changement de médecin",
    "Z99": "mise à jour d'un mouvement",
}
# announced, not done yet: the pending admission, transfer and discharge, and the pre-admission
PLANNED_EVENTS = frozenset({"A05", "A14", "A15", "A16"})
ACTION_WORDS = {"INSERT": "création", "UPDATE": "modification", "CANCEL": "annulation"}


def movement_state(m: dict) -> str:
    """A movement's state on the patient's page: annulé, prévu (announced, not done) or effectué."""
    if m.get("cancelled"):
        return "annulé"
    return "prévu" if m.get("event") in PLANNED_EVENTS else "effectué"


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
