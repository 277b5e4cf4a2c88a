"""The HTML report in French (`--lang fr`): the auditors of a Ségur homologation read French.

The checks and the terminal speak English (conformance/wording.py); the report translates at its edge: the
template's own sentences through `text`, and the sentences built from wording.py's labels through `phrases`,
each English label beside its French one. The reason codes are worded as the web console words them
(engine/reason_words.py), so an auditor reads the same words in both.
"""
from __future__ import annotations

import re

from conformance import wording
from engine.reason_words import REASONS

ACTIONS = {"consult": "Consultation", "feed": "Alimentation du DMP"}
MODES = {"normal": "", "bris_de_glace": " en mode bris de glace", "centre_15": " par le centre 15"}
ACKS = {"AA": "accepté et appliqué (AA)", "AE": "refusé : une erreur dans le message (AE)",
        "AR": "rejeté en entier (AR)"}
EVENTS = {
    "A01": "Admission", "A02": "Mutation", "A03": "Sortie", "A04": "Consultation externe",
    "A05": "Pré-admission", "A06": "Passage d'externe à hospitalisé", "A07": "Passage d'hospitalisé à externe",
    "A11": "Annulation d'admission", "A12": "Annulation de mutation", "A13": "Annulation de sortie",
    "A14": "Admission prévue", "A15": "Mutation prévue", "A16": "Sortie prévue",
    "A21": "Absence provisoire", "A22": "Retour d'absence provisoire", "A25": "Annulation de sortie prévue",
    "A26": "Annulation de mutation prévue", "A27": "Annulation d'admission prévue", "A28": "Création du patient",
    "A31": "Mise à jour du patient", "A38": "Annulation de pré-admission", "A40": "Fusion de deux patients",
    "A44": "Déplacement d'un dossier", "A47": "Changement d'identifiant du patient",
    "A52": "Annulation d'absence provisoire", "A53": "Annulation de retour",
    "A54": "Changement de médecin responsable", "A55": "Annulation du changement de médecin responsable",
    "Z99": "Mise à jour d'un mouvement",
}
OUTBOX = {
    "consent.changed": "Changement de l'état du consentement",
    "decision.made": "Décision enregistrée",
    "dmp.access.verify": "Vérification du droit d'accès au DMP du professionnel (TD0.2)",
    "dmp.access.authorize": "Autorisation d'accès au DMP du professionnel (TD0.3)",
    "break_glass.used": "Accès en mode bris de glace",
}
CONSULT_VALUES = {"consent": "donné", "refused": "refusé", "legacy_consent": "non-opposition comptée comme consentement"}
FEED_VALUES = {"no_opposition": "ne s'oppose pas", "opposed": "s'oppose"}

# sentences of report.py and checks.py, English → French (longest first when applied)
SENTENCES = {
    "Consent to consultation: ": "Consentement à la consultation : ",
    "Opposition to feeding: ": "Opposition à l'alimentation : ",
    "none recorded (feeding allowed by default)": "aucune enregistrée (alimentation permise par défaut)",
    "not collected": "non recueilli",
    "none in force": "aucun en vigueur",
    "the consent": "le consentement", "the refusal": "le refus", "the value": "la valeur",
    "was cancelled with its episode": "a été annulé avec son séjour",
    "collected": "recueilli",
    "DMP status: ": "Statut du DMP : ",
    ": PERMITTED": " : AUTORISÉE", ": DENIED": " : REFUSÉE", "PERMITTED": "AUTORISÉE", "DENIED": "REFUSÉE",
    "; triggers: ": " ; déclenche : ",
    "none": "aucun",
    "the error names": "l'erreur mentionne",
    "sent as": "envoyé en",
    "exactly": "exactement", "at least one": "au moins un", " with ": " avec ",
    " found": " trouvé(s)", " of that type in all": " de ce type en tout",
    "In the outbox, for": "Dans la boîte d'envoi, pour",
    " asks to ": " demande à ", "consult the DMP of": "consulter le DMP de", "feed the DMP of": "alimenter le DMP de",
    " in break-glass mode": " en mode bris de glace", " in centre 15 mode": " par le centre 15",
    ", giving the reason": ", motif", ", giving no reason": ", sans motif", ", for visit": ", pour le séjour",
    ", at ": ", le ", " at ": " le ",
    "physician": "médecin", "pharmacist": "pharmacien", "dentist": "chirurgien-dentiste", "midwife": "sage-femme",
    "nurse": "infirmier", "profession": "profession",
    "no patient identified": "aucun patient identifié",
    "in-process, into a fresh temporary store": "dans ce processus, dans une base temporaire neuve",
    ", each scenario in its own fresh store": ", chaque scénario dans sa propre base neuve",
    "over MLLP to": "par MLLP vers", ", decisions through": ", décisions par",
    "the default configuration": "la configuration par défaut",
    "Patient ": "Patient ",
}

# the template's own sentences
TEXT = {
    "pamgate replay report": "rapport de rejeu pamgate",
    "pamgate conformance replay report": "Rapport de rejeu de conformité pamgate",
    "PASS": "CONFORME", "FAIL": "NON CONFORME",
    "every acknowledgement and every expectation held": "chaque acquittement et chaque attendu ont été vérifiés",
    "of": "sur", "not checked": "non vérifié(s)",
    "expectations did not hold.": "attendus non vérifiés.",
    "Scenarios": "Scénarios", "each in its own fresh store": "chacun dans une base neuve",
    "Messages replayed": "Messages rejoués",
    "(each file alone, into its own empty store)": "(chaque fichier seul, dans une base vide)",
    "Answers (ACK)": "Réponses (ACK)", "none": "aucune",
    "Expectations": "Attendus", "held": "vérifiés", "failed": "en échec",
    "HL7 v2.5 structure": "Structure HL7 v2.5", "valid": "valide(s)", "with problems": "avec problèmes",
    "(checked with hl7apy)": "(vérifiée avec hl7apy)",
    "Expectations file": "Fichier des attendus",
    "none: every message must be accepted (AA)": "aucun : chaque message doit être accepté (AA)",
    "Files": "Fichiers", "Configuration": "Configuration", "Run": "Exécution",
    "Patient identities": "Identités des patients", "masked": "masquées", "shown": "affichées",
    "(names, birth date, identifiers, NDA, visit numbers and address replaced by •••; patients are called Patient 1, Patient 2…)":
        "(noms, date de naissance, identifiants, NDA, numéros de séjour et adresse remplacés par ••• ; les patients "
        "sont appelés Patient 1, Patient 2…)",
    "What did not hold": "Ce qui n'a pas été vérifié",
    "Step": "Étape", "Where": "Où", "Expected": "Attendu", "Got": "Obtenu", "Result": "Résultat",
    "The steps at a glance": "Les étapes en un coup d'œil", "What is checked": "Ce qui est vérifié",
    "✔ held": "✔ vérifié", "✘ FAILED": "✘ ÉCHEC", "– not checked": "– non vérifié",
    "How to read this report": "Comment lire ce rapport",
    "The DMP": "Le DMP",
    "The patient's shared medical record (Mon espace santé). Hospital software <em>consults</em> it (reads) and <em>feeds</em> it (sends documents).":
        "Le dossier médical partagé du patient (Mon espace santé). Le logiciel de l'établissement le "
        "<em>consulte</em> (lecture) et l'<em>alimente</em> (envoi de documents).",
    "Consultation needs consent": "La consultation requiert le consentement",
    "Until the patient's consent is recorded, consultation is denied. Codes: IC = informed and consents, INC = informed and refuses, NA = not collected.":
        "Tant que le consentement du patient n'est pas enregistré, la consultation est refusée. Codes : IC = "
        "informé et consent, INC = informé et refuse, NA = non recueilli.",
    "Feeding needs no opposition": "L'alimentation requiert l'absence d'opposition",
    "Feeding is allowed unless the patient objects. Codes: INO = informed and does not object, IO = informed and objects.":
        "L'alimentation est permise sauf opposition du patient. Codes : INO = informé et ne s'oppose pas, "
        "IO = informé et s'oppose.",
    "Break-glass": "Bris de glace",
    "An emergency consultation without consent, which needs a written justification and is traced.":
        "Une consultation en urgence sans consentement, qui exige un motif écrit et est tracée.",
    "Message": "Message",
    "What the admission system (GAM) sent: each one is shown below with its plain meaning, then the answer pamgate gave (the acknowledgement: AA = accepted and applied, AE = refused because of an error, AR = rejected whole), then what the patient's consent state was once it was applied, then the questions asked and whether each answer was the one expected.":
        "Ce que le système de gestion administrative (GAM) a envoyé : chacun est montré ci-dessous avec son sens, "
        "puis la réponse de pamgate (l'acquittement : AA = accepté et appliqué, AE = refusé pour une erreur, "
        "AR = rejeté en entier), puis l'état du consentement du patient une fois le message appliqué, puis les "
        "questions posées et si chaque réponse était celle attendue.",
    "Step by step": "Étape par étape",
    "File": "Fichier", "message id": "identifiant du message", "at": "le",
    "pamgate's answer": "Réponse de pamgate", "enhanced mode": "mode étendu", "Errors": "Erreurs",
    "After this message": "Après ce message", "until": "jusqu'au",
    "Break-glass request recorded": "Demande de bris de glace enregistrée",
    "Episode (visit": "Séjour (numéro", "admitted": "admis le", "discharged": "sorti le", "cancelled": "annulé",
    "Question or check": "Question ou vérification",
    "problem(s)": "problème(s)", "warning(s)": "avertissement(s)",
    "The message as received": "Le message tel que reçu", "patient identity masked": "identité du patient masquée",
    "pamgate's acknowledgement, as sent": "L'acquittement de pamgate, tel qu'envoyé",
    "Consent state over time": "L'état du consentement au fil du temps",
    "For each patient, the state after each of their messages, at the message's time.":
        "Pour chaque patient, l'état après chacun de ses messages, à l'heure du message.",
    "When": "Quand", "Consent to consultation": "Consentement à la consultation",
    "Opposition to feeding": "Opposition à l'alimentation", "Consultation": "Consultation",
    "Feeding": "Alimentation",
    "Generated by pamgate": "Produit par pamgate", "on": "le",
    "This page is self-contained: it loads nothing from the network.":
        "Cette page est autonome : elle ne charge rien depuis le réseau.",
    "and": "et",
}


def _pairs() -> dict:
    """English label → French label, from wording.py's dictionaries beside their French ones here."""
    out = {}
    for en, fr in ((wording.REASONS, REASONS), (wording.ACKS, ACKS), (wording.OUTBOX, OUTBOX),
                   (wording.CONSULT_VALUES, CONSULT_VALUES), (wording.FEED_VALUES, FEED_VALUES),
                   (wording.EVENTS, EVENTS), (wording.ACTIONS, ACTIONS)):
        for key, english in en.items():
            if key in fr and english:
                out[english] = fr[key]
    for key, english in wording.MODES.items():
        if english and MODES.get(key):
            out[english] = MODES[key]
    out.update(SENTENCES)
    return out


PHRASES = _pairs()
# a label that is a word (`none`, `collected`) is replaced only as a whole word
_PATTERN = re.compile("|".join(rf"\b{re.escape(k)}\b" if k[0].isalnum() and k[-1].isalnum() else re.escape(k)
                               for k in sorted(PHRASES, key=len, reverse=True)))


def phrases(value: str | None) -> str | None:
    """A sentence built from wording.py's labels, in French (each label, longest first)."""
    if not isinstance(value, str) or not value:
        return value
    return _PATTERN.sub(lambda m: PHRASES[m.group(0)], value)


def text(english: str) -> str:
    """One of the template's own sentences, in French."""
    return TEXT.get(english, english)
