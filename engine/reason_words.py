"""The reason codes of a decision in plain French: the one wording that the web console and the French replay
report both show, so an auditor reads the same words in both."""
from __future__ import annotations

REASONS = {
    "consent.not_collected": "consentement non recueilli",
    "consent.refused": "refus du patient",
    "consent.expired": "consentement expiré (fin de validité)",
    "feed.opposed": "opposition du patient",
    "break_glass.reason_missing": "motif justificatif du bris de glace non renseigné",
    "break_glass.blocked": "le patient a bloqué l'accès en mode bris de glace",
    "centre_15.blocked": "le patient a bloqué l'accès par le centre 15",
    "profession.not_authorized": "profession non habilitée pour ce document",
    "dmp.closed": "DMP fermé",
    "dmp.absent": "le patient n'a pas de DMP",
    "dmp.access_forbidden": "accès au DMP interdit (TD0.2)",
    "patient.unknown": "patient inconnu",
    "episode.cancelled": "séjour annulé",
    "break_glass": "accès en mode bris de glace",
    "centre_15": "accès par le centre 15",
    "consent.legacy_non_opposition": "non-opposition reçue dans l'ancien format",
    "habilitation.unknown_cell": "cas non prévu par la matrice d'habilitation",
}
