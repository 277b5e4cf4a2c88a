"""`--report FILE.html`: one self-contained page (jinja2, inline CSS, no script, no external asset).

It is written for an auditor who has never seen HL7: every step in plain words, the answer pamgate gave,
the decisions asked and their outcome, and a timeline of each patient's consent state. The messages are
shown with the patient's identity masked, unless --show-identities.
"""
from __future__ import annotations

from datetime import datetime, timezone

import jinja2

from conformance import checks as C
from conformance import french, wording
from conformance.identities import MASK, Pseudonyms, mask

SEGMENTS = {
    "MSH": "Message header: sender, receiver, type, version",
    "EVN": "Event: what happened, and when it was recorded",
    "PID": "Patient identification",
    "PD1": "Additional patient data",
    "MRG": "The patient's previous identity (merge, identifier change)",
    "ROL": "A professional and their role",
    "NK1": "Next of kin",
    "PV1": "Visit: the stay, its number, the professionals in charge",
    "PV2": "Visit, more details",
    "ZBE": "Movement (PAM FR): admission, transfer, discharge…, and whether it is inserted, updated or cancelled",
    "ZFA": "DMP status, consent to consultation and opposition to feeding (PAM FR)",
    "ZFP": "Patient's occupation (PAM FR)",
    "ZFV": "Visit, more details (PAM FR)",
    "ZFM": "Hospital statistics movement (PAM FR)",
    "ZFD": "Additional demographics (PAM FR)",
    "ZFS": "Mental-health care (PAM FR)",
    "IN1": "Insurance", "IN2": "Insurance, more", "IN3": "Insurance certification", "GT1": "Guarantor",
    "OBX": "Observation", "AL1": "Allergy", "DG1": "Diagnosis", "ACC": "Accident",
}
PROFESSIONS = {"10": "physician", "21": "pharmacist", "40": "dentist", "50": "midwife", "60": "nurse"}


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("pamgate")
    except Exception:  # noqa: BLE001
        return "unknown"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("conformance", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env


def view(run) -> dict:
    """Everything the page shows, as plain values: the template only lays it out."""
    tz = run.tz
    names = Pseudonyms(run.show_identities)
    n = len(run.messages)
    steps, numbered, failures, timeline = [], [], [], {}
    for m in run.messages:
        msg = m.message
        anchor = f"m{msg.position}"
        patient = names(m.patient) if m.patient else "no patient identified"
        checks = []
        for c in m.checks:
            row = {"status": c.status, "kind": c.kind, "name": c.name, "step": c.step, "title": c.title,
                   "expected": c.expected, "actual": c.actual, "anchor": anchor, "question": None}
            if c.kind == "decision" and c.detail.get("action"):
                row["question"] = _question(c.detail, names, tz, run.show_identities)
            if c.kind == "event" and c.detail.get("patient"):
                row["question"] = f"In the outbox, for {names(c.detail['patient'])}"
            checks.append(row)
            if c.step:
                numbered.append(row)
            if c.status == C.FAILED:
                failures.append({**row, "where": f"message {msg.position} ({msg.label})"})
        state = _state(m.state, tz, run.show_identities)
        if state and m.patient:
            timeline.setdefault(patient, []).append({"anchor": anchor, "position": msg.position,
                                                     "when": wording.when(m.time, tz),
                                                     "event": wording.event_text(msg.event), **state})
        text = msg.text if run.show_identities else mask(msg.text)
        steps.append({
            "anchor": anchor, "position": msg.position, "of": n, "label": msg.label,
            "event": wording.event_text(msg.event), "type": msg.message_type or "unreadable",
            "control_id": msg.control_id, "when": wording.when(m.time, tz), "patient": patient,
            "titles": m.titles, "ack": {"code": m.ack.code, "sent": m.ack.sent_code,
                                        "words": wording.ack_text(m.ack.code), "errors": list(m.ack.errors),
                                        "note": m.ack.note,
                                        "text": m.ack.text.replace("\r", "\n")},
            "ack_check": next((c for c in checks if c["kind"] == "ack"), None),
            "checks": [c for c in checks if c["kind"] != "ack"],
            "failed": any(c["status"] == C.FAILED for c in checks),
            "state": state,
            "segments": [{"name": s[:3], "about": SEGMENTS.get(s[:3], "Z segment" if s.startswith("Z") else ""),
                          "text": s} for s in text.split("\r") if s],
            "validation": None if m.validation is None else {
                "errors": m.validation.errors, "warnings": m.validation.warnings},
        })
    held, failed, skipped = run.count(C.HELD), run.count(C.FAILED), run.count(C.SKIPPED)
    return {
        "title": run.title, "description": run.description, "ok": run.ok,
        "held": held, "failed": failed, "skipped": skipped, "total": held + failed + skipped,
        "messages": n, "acks": run.ack_codes(), "where": run.where, "paths": run.paths,
        "expectations": run.expectations_file, "config": run.config or "the default configuration",
        "strict": run.strict, "isolation": run.isolation,
        "invalid": sum(1 for m in run.messages if m.validation is not None and not m.validation.ok),
        "started": wording.when(run.started_at, tz), "tz": str(tz), "seconds": f"{run.seconds:.1f}",
        "version": _version(), "identities": "shown" if run.show_identities else "masked",
        "steps": steps, "numbered": numbered, "failures": failures, "timeline": timeline,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scenarios": [{"name": name, "title": title, "ok": ok} for name, title, ok in run.names],
    }


def _visit(number, show: bool):
    """A visit number (or NDA) leads to a stay, hence to a patient: masked like the other identities."""
    return number if show or not number else MASK


def _question(d: dict, names, tz, show: bool = False) -> str:
    user = d.get("user") or {}
    who = user.get("id", "?")
    prof = user.get("profession")
    if prof:
        who += f" ({PROFESSIONS.get(prof, 'profession')} {prof})"
    what = {"consult": "consult the DMP of", "feed": "feed the DMP of"}.get(d["action"], d["action"])
    mode = {"bris_de_glace": " in break-glass mode", "centre_15": " in centre 15 mode"}.get(d.get("mode"), "")
    out = f"{who} asks to {what} {names(d.get('patient'))}{mode}"
    if d.get("reason"):
        out += f", giving the reason “{d['reason']}”"
    elif d.get("mode") == "bris_de_glace":
        out += ", giving no reason"
    if d.get("visit"):
        out += f", for visit {_visit(d['visit'], show)}"
    return out + f", at {wording.when(d.get('at'), tz)}"


def _state(s: dict | None, tz, show: bool = False) -> dict | None:
    if not s:
        return None
    gate = s.get("gate") or {}
    consult, feed = wording.gate_text(gate)
    consent, opposition = s.get("consent"), s.get("feed_opposition")
    consent_line = "Consent to consultation: " + wording.consent_text(consent) + (
        f", collected {wording.when(consent.get('collected_at'), tz)}" if consent else "")
    fallen = [h for h in s.get("history") or [] if h.get("item") == "consult" and h.get("cancelled")]
    if not consent and fallen:
        # "not collected" would mislead: a consent was collected, and fell with its cancelled episode
        last = fallen[-1]
        what = {"consent": "the consent", "refused": "the refusal"}.get(last.get("value"), "the value")
        code = f" ({last['code']})" if last.get("code") else ""
        consent_line = (f"Consent to consultation: none in force — {what}{code} collected "
                        f"{wording.when(last.get('collected_at'), tz)} was cancelled with its episode")
    feed_line = "Opposition to feeding: " + wording.feed_text(opposition) + (
        f", collected {wording.when(opposition.get('collected_at'), tz)}" if opposition else "")
    out = {
        "consent": consent_line,
        # the timeline's cells: the same, without the label its column heads
        "consent_value": consent_line.removeprefix("Consent to consultation: "),
        "feed_value": feed_line.removeprefix("Opposition to feeding: "),
        "consult_verdict": consult.removeprefix(wording.ACTIONS["consult"] + ": "),
        "feed_verdict": feed.removeprefix(wording.ACTIONS["feed"] + ": "),
        "feed": feed_line,
        "consult_gate": consult, "feed_gate": feed,
        "consult_ok": gate.get("consult") == "permit", "feed_ok": gate.get("feed") == "permit",
        "valid_until": wording.when(gate.get("valid_until"), tz) if gate.get("valid_until") else None,
        "break_glass": [f"{b.get('user')} at {wording.when(b.get('at'), tz)}: “{b.get('reason')}”"
                        for b in s.get("break_glass_requests") or []],
        "episode": _masked_episode(s.get("current_episode"), show),
        "episodes": [{"visit": _visit(e.get("visit"), show), "cancelled": e.get("cancelled"),
                      "admitted": wording.when(e.get("admitted_at"), tz) if e.get("admitted_at") else None,
                      "discharged": wording.when(e.get("discharged_at"), tz) if e.get("discharged_at") else None}
                     for e in s.get("episodes") or []],
    }
    status = s.get("dmp_status")
    out["dmp"] = f"DMP status: {status.get('value')}" if status else None
    return out


def render(run, lang: str = "en") -> str:
    """The page in English, or in French (`lang="fr"`): the template's sentences and the generated ones."""
    v = view(run)
    if lang == "fr":
        v = in_french(v)
    return _env().get_template("report.html.j2").render(**v, lang=lang, _=french.text if lang == "fr" else str)


def in_french(v: dict) -> dict:
    """The generated sentences of a view (wording.py's labels put together) in French."""
    tr = french.phrases
    fields = ("expected", "actual", "question", "event", "words", "consent", "feed", "consult_gate", "feed_gate",
              "dmp", "consent_value", "feed_value", "consult_verdict", "feed_verdict", "patient", "where")

    def each(node):
        if isinstance(node, dict):
            return {k: (tr(x) if k in fields and isinstance(x, str) else each(x)) for k, x in node.items()}
        if isinstance(node, list):
            return [each(x) for x in node]
        return node
    out = {**v, **{k: each(v[k]) for k in ("steps", "numbered", "failures")}}
    out["timeline"] = {tr(patient): each(rows) for patient, rows in v["timeline"].items()}
    out["where"], out["config"] = tr(v["where"]), tr(v["config"])
    return out


def _masked_episode(episode, show: bool):
    if show or not isinstance(episode, dict):
        return episode
    return {k: _visit(v, False) if k in ("visit", "nda", "number") else v for k, v in episode.items()}


def write(run, path: str, lang: str = "en") -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(run, lang))
