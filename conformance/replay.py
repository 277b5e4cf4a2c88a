"""`pamgate replay PATH...`: replay message files, check every ACK and expectation, report, exit 0 only when all hold.

The shell: read the files and the expectations, talk to a gate (in-process or a running server), hand
what came back to the pure checks, then print, and write the JUnit and HTML reports.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from conformance import checks as C
from conformance import expectations as X
from conformance.gates import InProcessGate, RemoteGate, key_of
from conformance.junit import write as write_junit
from conformance.messages import ReplayMessage, collect
from conformance.report import write as write_report
from conformance.strict import validate
from engine import config as configuration
from engine import habilitation, logs
from engine.assembly import document_reference
from engine.domain import DecisionRequest
from engine.errors import CommandError


@dataclass
class MessageRun:
    message: ReplayMessage
    ack: C.Ack
    checks: list
    time: datetime | None
    patient: dict | None
    titles: list = field(default_factory=list)
    state: dict | None = None
    validation: object = None
    decisions: list = field(default_factory=list)     # (DecisionCheck, patient, at, result)


@dataclass
class Run:
    title: str
    description: str | None
    paths: list
    expectations_file: str | None
    where: str
    mode: str
    config: str | None
    strict: bool
    show_identities: bool
    tz: ZoneInfo
    started_at: datetime
    seconds: float = 0.0
    messages: list = field(default_factory=list)
    isolation: str = "none"

    def all_checks(self):
        for m in self.messages:
            yield from m.checks

    def count(self, status: str) -> int:
        return sum(1 for c in self.all_checks() if c.status == status)

    def ack_codes(self) -> dict:
        out = {}
        for m in self.messages:
            out[m.ack.code] = out.get(m.ack.code, 0) + 1
        return dict(sorted(out.items()))

    @property
    def ok(self) -> bool:
        return self.count(C.FAILED) == 0

    def outcomes(self) -> list:
        """What the run found, free of what legitimately differs between gates (ids, clocks)."""
        return [(m.message.position, c.kind, c.name, c.status, c.actual) for m in self.messages for c in m.checks]


def main(args) -> int:
    """The command: 0 when every ACK and expectation held, 1 otherwise (bad input raises CommandError)."""
    return 0 if execute(args).ok else 1


def execute(args) -> Run:
    cfg = configuration.load(args.config)
    # the replay reports every ACK itself; the engine's info lines would only interleave with it
    logs.configure("warning" if cfg.log.level in ("debug", "info") else cfg.log.level, cfg.log.format)
    tz = ZoneInfo(cfg.timezone)
    for option, path in (("--junit", args.junit), ("--report", args.report)):
        if path and not Path(path).resolve().parent.is_dir():
            raise CommandError(f"{option} {path}: no such folder {Path(path).parent}")
    replay = collect(args.paths)
    expectations, source = X.load(args.expect)
    planned = X.plan(expectations, replay.messages, source)
    to = getattr(args, "to", None)
    api = getattr(args, "api", None)
    if api and not to:
        raise CommandError("--api goes with --to (in-process, decisions are asked in-process)")
    gate = _open_gate(cfg, to, api, bool(args.config))
    try:
        if to and expectations.isolation == "file":
            gate.fresh()     # says why it cannot
        if to and not gate.api and any(s.decisions for p in planned.values() for s in p.steps):
            raise CommandError("the expectations ask decisions: give --api http://HOST:PORT, the running "
                               "server's HTTP API (or --config with its fixed listeners.http port)")
        run = Run(title=expectations.name or ", ".join(map(str, args.paths)), description=expectations.description,
                  paths=list(map(str, args.paths)), expectations_file=source, where=gate.where, mode=gate.mode,
                  config=args.config, strict=args.strict, show_identities=args.show_identities, tz=tz,
                  started_at=datetime.now(timezone.utc), isolation=expectations.isolation)
        out = Output(len(replay.messages))
        started = time.perf_counter()
        with out:
            last_file = None
            for message in replay.messages:
                if expectations.isolation == "file" and last_file is not None and message.path != last_file:
                    gate.fresh()
                last_file = message.path
                m = replay_one(gate, message, planned[message.position], expectations, tz,
                               args.strict, want_state=bool(args.report))
                run.messages.append(m)
                out.message(m)
        run.seconds = time.perf_counter() - started
    finally:
        gate.close()
    out.summary(run)
    if args.junit:
        _write(args.junit, "--junit", lambda p: write_junit(run, p))
    if args.report:
        _write(args.report, "--report", lambda p: write_report(run, p))
    return run


def _write(path, option, writer):
    try:
        writer(path)
    except OSError as e:
        raise CommandError(f"{option} {path}: {e.strerror}") from None


def _open_gate(cfg, to, api, has_config):
    if to:
        return RemoteGate(to, api, cfg, store_readable=has_config)
    return InProcessGate(cfg)


def replay_one(gate, message: ReplayMessage, plan: X.Planned, expectations: X.Expectations, tz: ZoneInfo,
               strict: bool, want_state: bool) -> MessageRun:
    """Send one message, then ask and check what its steps say, in this order: ACK, decisions, events."""
    where = f"message {message.position} ({message.label})"
    patient = message.patient()
    mtime = message.time(tz)
    validation = None
    if strict:
        validation = validate(message.text)

    # the outbox as it stands before the message, for the patients whose new events are checked
    event_patients = {}
    for step in plan.steps:
        for e in step.events:
            p = e.patient.api() if e.patient else patient
            if p:
                event_patients[key_of(p)] = p
    before = {}
    for key in event_patients:
        evs = gate.events(key)
        before[key] = None if evs is None else {e["id"] for e in evs}

    ack = C.read_ack(gate.send(message))
    run = MessageRun(message, ack, [C.check_ack(plan.ack, ack, f"{where}: ACK")], mtime, patient,
                     titles=[s.title for s in plan.steps if s.title], validation=validation)
    if validation is not None:
        run.checks.append(C.Check(
            "structure", f"{where}: HL7 v2.5 structure", C.HELD if validation.ok else C.FAILED,
            "valid HL7 v2.5 (hl7apy; PAM FR Z segments allowed)",
            "valid" + (f" ({len(validation.warnings)} warning(s))" if validation.warnings else "")
            if validation.ok else "; ".join(validation.errors),
            detail={"warnings": validation.warnings, "errors": validation.errors}))
    now = datetime.now(timezone.utc)
    for step in plan.steps:
        for fragment in step.err_contains:
            run.checks.append(C.check_err(fragment, ack, f"{where}: error text"))
        for i, d in enumerate(step.decisions, 1):
            name = (f"step {d.step}: " if d.step else f"{where}: decision {i}: ") + d.action + (
                f" ({d.mode})" if d.mode != "normal" else "")
            p = d.patient.api() if d.patient else patient
            user = d.user or expectations.user
            at = X.resolve_moment(d.at or expectations.at, mtime, now, tz)
            if p is None:
                run.checks.append(C.Check("decision", name, C.FAILED, "a decision",
                                          "no patient to ask about: the message has no PID-3 of type PI; "
                                          "give patient: in the expectations", d.step, d.title))
                continue
            try:
                doc_type, category = habilitation.document(
                    document_reference(), d.document.type, d.document.category) if d.document else (None, None)
            except habilitation.UnknownDocument as e:
                run.checks.append(C.Check("decision", name, C.FAILED, "a decision", e.detail, d.step, d.title))
                continue
            request = DecisionRequest(action=d.action, user=user.id, profession=user.profession,
                                      specialty=user.specialty, mode=d.mode, reason=d.reason, visit=d.visit,
                                      at=at, category=category, role=user.role, document_type=doc_type)
            result = gate.decide(p, request)
            check = C.check_decision(d, result, name)
            check.detail.update({"patient": p, "at": at, "user": user.model_dump(exclude_none=True),
                                 "mode": d.mode, "reason": d.reason, "visit": d.visit, "action": d.action})
            run.checks.append(check)
        for i, e in enumerate(step.events, 1):
            name = (f"step {e.step}: " if e.step else f"{where}: event {i}: ") + e.type
            p = e.patient.api() if e.patient else patient
            if p is None:
                run.checks.append(C.Check("event", name, C.FAILED, e.type, "no patient: the message has no PID-3 "
                                          "of type PI; give patient: in the expectations", e.step, e.title))
                continue
            key = key_of(p)
            evs = gate.events(key)
            new = None if evs is None or before.get(key) is None else [x for x in evs if x["id"] not in before[key]]
            check = C.check_events(e, new, name)
            check.detail["patient"] = p
            run.checks.append(check)
    if want_state and patient:
        run.state = gate.state(patient, mtime or now)
    return run


# --- the terminal ------------------------------------------------------------------------------

class Output:
    """A progress bar on a terminal (rich), plain lines otherwise; failures as they happen, then a summary."""

    def __init__(self, total: int):
        from rich.console import Console
        self.console = Console(highlight=False)
        self.total = total
        self.progress = None

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.progress = Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.description}"), TimeElapsedColumn(),
                                     console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("", total=self.total)
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def message(self, m: MessageRun) -> None:
        failed = [c for c in m.checks if c.status == C.FAILED]
        width = len(str(self.total))
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=m.message.label)
            from rich.markup import escape
            for c in failed:
                self.console.print(f"[red]FAILED[/red] {escape(f'{c.name}: expected {c.expected}; got {c.actual}')}",
                                   soft_wrap=True)
            return
        held = sum(1 for c in m.checks if c.status == C.HELD)
        line = (f"[{m.message.position:>{width}}/{self.total}] {m.message.label}  {m.message.message_type or '?'}  "
                f"{m.ack.code}  {'FAILED' if failed else 'ok'} ({held}/{len(m.checks)} held)")
        print(line, flush=True)
        for c in failed:
            print(f"    FAILED {c.name}: expected {c.expected}; got {c.actual}", flush=True)

    def summary(self, run: Run) -> None:
        held, failed, skipped = run.count(C.HELD), run.count(C.FAILED), run.count(C.SKIPPED)
        acks = ", ".join(f"{k} {v}" for k, v in run.ack_codes().items()) or "none"
        lines = [
            f"pamgate replay: {run.title}",
            f"  messages: {len(run.messages)}, replayed {run.where} in {run.seconds:.1f} s",
            f"  ACK codes: {acks}",
            f"  expectations: {held} held, {failed} failed, {skipped} skipped",
        ]
        if run.strict:
            bad = sum(1 for m in run.messages if m.validation is not None and not m.validation.ok)
            lines.append(f"  HL7 v2.5 structure (--strict): {len(run.messages) - bad} valid, {bad} with problems")
        if skipped:
            lines.append("  skipped: the outbox cannot be read over --to without --config (see docs/conformance.md)")
        verdict = "PASS: every ACK and every expectation held" if run.ok else \
            f"FAIL: {failed} expectation(s) failed"
        if self.console.is_terminal:
            for line in lines:
                self.console.print(line, markup=False)
            self.console.print(f"  result: [{'green' if run.ok else 'red'}]{verdict}[/]")
        else:
            print("\n".join(lines + [f"  result: {verdict}"]), flush=True)
