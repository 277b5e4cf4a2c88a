"""What every fuzz run ends with: the server lives, its log holds no unhandled error, and a normal message
is still applied and decided correctly."""
from __future__ import annotations

import re

from tests.builders import adt, zfa_2111
from tests.fuzz.hostile_requests import TOKEN, USERS
from tests.fuzz.wire import Findings
from tests.serving import ack_code

# Twisted's "Unhandled Error", a Python traceback, and our own error/critical lines (structlog console or json).
LOG_FAILURE = re.compile(r"Traceback \(most recent call last\)|Unhandled [Ee]rror|\[(error|critical)\s*\]"
                         r"|\"level\": \"(error|critical)\"|\berror\s*\]|critical\s*\]")


def check_log(server, findings: Findings) -> None:
    """Each error line and each traceback (named by its last line) is a finding."""
    lines = server.stderr().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j] and not lines[j].startswith(" ")), i)
            findings.add(f"server log: traceback {lines[end][:80]}", "\n".join(lines[max(0, i - 2):end + 1])[-1500:])
        elif LOG_FAILURE.search(line) and not line.startswith(" "):
            m = re.search(r"\[(\w+)\s*\]\s+(\S+)(?:.*?\b(error=\S+))?", line)
            name = " ".join(g for g in m.groups() if g) if m else line[:80]
            findings.add(f"server log: {name}", line[:500])


def check_alive_and_correct(server, findings: Findings, ipp: str = "791234") -> None:
    """The process still runs, and an ADT with ZFA IC then a decision for each fuzzed user is a permit."""
    if server.proc.poll() is not None:
        findings.add("server process ended", server.proc.returncode)
        return
    ack = server.send(adt("A01", ipp=ipp, visit="VAFTER", zfa=zfa_2111("INO", "IC")))
    if ack_code(ack) != "AA":
        findings.add("clean ADT after the fuzz run not AA", ack)
    for user in USERS + ["fresh-user"]:
        status, body = server.http("POST", "/v1/decisions", {
            "patient": {"id": ipp, "authority": "HOSP-T"}, "action": "consult",
            "user": {"id": user, "profession": "10"}, "at": "2025-01-06T10:00:00+01:00"}, token=TOKEN)
        if status != 200 or not isinstance(body, dict) or body.get("decision") != "permit":
            findings.add("decision after the fuzz run not a permit", {"user": user, "status": status, "body": body})
    status, body = server.http("GET", "/healthz")
    if status != 200:
        findings.add("healthz after the fuzz run not 200", {"status": status, "body": body})
