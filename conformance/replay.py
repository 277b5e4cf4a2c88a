"""`pamgate replay PATH...`: replay message files, check every ACK and expectation, report, exit 0 only when all hold.

The shell: read the files and the expectations, talk to a gate (in-process or a running server), hand
what came back to the pure checks, then print, and write the JUnit and HTML reports.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
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
    scenario: str | None = None     # the scenario folder's name, when the run is one
    parts: list = field(default_factory=list)   # several scenarios: each one's own run

    @property
    def names(self) -> list:
        """Each scenario's (name, title, verdict), for the summaries."""
        return [(r.scenario or "files", r.title, r.ok) for r in self.parts]

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


@dataclass
class Part:
    """What one replay takes: message paths and the expectations they are checked against. A scenario
    (a folder holding expect.yaml) is a part of its own, replayed into its own fresh store."""
    paths: list
    expect: str | None
    scenario: str | None = None     # the folder's name, for a scenario


def parts(paths, expect: str | None) -> list[Part]:
    """The scenarios among PATHs (a folder holding expect.yaml, or each such folder inside a folder given),
    each on its own, then every other path together with --expect (which may also replace the expectations
    of a single scenario named alone)."""
    scenarios, loose = [], []
    for p in map(Path, paths):
        if p.is_dir() and (p / "expect.yaml").is_file():
            scenarios.append(p)
        elif p.is_dir() and any((c / "expect.yaml").is_file() for c in p.iterdir() if c.is_dir()):
            for c in sorted(p.iterdir()):
                (scenarios if c.is_dir() and (c / "expect.yaml").is_file() else loose).append(c)
        else:
            loose.append(p)
    loose = [p for p in loose if not (p.is_file() and p.suffix.lower() in (".yaml", ".yml", ".md"))
             or p in map(Path, paths)]
    if expect is not None and scenarios and not loose:
        if len(scenarios) > 1:
            raise CommandError(f"--expect {expect}: {len(scenarios)} scenario folders are named, each with its own "
                               f"expect.yaml; --expect replaces the expectations of one only")
        return [Part(scenarios, expect, scenarios[0].name)]   # one scenario, its expectations replaced
    out = [Part([s], str(s / "expect.yaml"), s.name) for s in scenarios]
    if loose:
        out.append(Part(loose, expect))
    return out


def execute(args) -> Run:
    cfg = configuration.load(args.config)
    # the replay reports every ACK itself; the engine's info lines would only interleave with it
    logs.configure("warning" if cfg.log.level in ("debug", "info") else cfg.log.level, cfg.log.format)
    tz = ZoneInfo(cfg.timezone)
    for option, path in (("--junit", args.junit), ("--report", args.report)):
        if path:
            _writable(option, path)
    to = getattr(args, "to", None)
    api = getattr(args, "api", None)
    if api and not to:
        raise CommandError("--api goes with --to (in-process, decisions are asked in-process)")
    timeout = getattr(args, "timeout", None) or 30.0
    if timeout <= 0:
        raise CommandError(f"--timeout {timeout:g}: give a number of seconds above 0")
    todo = []
    for part in parts(args.paths, args.expect):
        replay = collect(part.paths)
        expectations, source = X.load(part.expect)
        todo.append((part, replay, expectations, source, X.plan(expectations, replay.messages, source)))
    runs = []
    for part, replay, expectations, source, planned in todo:
        if len(todo) > 1:
            print(f"scenario {part.scenario or 'files'}: {expectations.name or ', '.join(map(str, part.paths))}",
                  flush=True)
        runs.append(_replay(args, cfg, tz, to, api, timeout, part, replay, expectations, source, planned))
    run = runs[0] if len(runs) == 1 else combined(runs, args, tz)
    if len(runs) > 1:
        Output(0).scenarios(run)
    lang = getattr(args, "lang", None) or cfg.replay.lang
    if args.junit:
        _write(args.junit, "--junit", lambda p: write_junit(run, p))
    if args.report:
        _write(args.report, "--report", lambda p: write_report(run, p, lang))
    return run


def _replay(args, cfg, tz, to, api, timeout, part, replay, expectations, source, planned) -> Run:
    gate = _open_gate(cfg, to, api, bool(args.config), timeout)
    try:
        if to and expectations.isolation == "file":
            gate.fresh()     # says why it cannot
        if to and not gate.api and any(s.decisions for p in planned.values() for s in p.steps):
            raise CommandError("the expectations ask decisions: give --api http://HOST:PORT, the running "
                               "server's HTTP API (or --config with its fixed listeners.http port)")
        run = Run(title=expectations.name or ", ".join(map(str, part.paths)), description=expectations.description,
                  paths=list(map(str, part.paths)), expectations_file=source, where=gate.where, mode=gate.mode,
                  config=args.config, strict=args.strict, show_identities=args.show_identities, tz=tz,
                  started_at=datetime.now(timezone.utc), isolation=expectations.isolation)
        run.scenario = part.scenario
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
    return run


def combined(runs: list, args, tz) -> Run:
    """Several scenarios as one run for the reports: the title names every scenario, each message keeps
    its scenario's name in its label, and `parts` keeps each scenario's own run (its own verdict)."""
    title = f"{len(runs)} scenarios: " + "; ".join(r.title for r in runs)
    run = Run(title=title, description=None, paths=list(map(str, args.paths)), expectations_file=None,
              where=runs[0].where + ", each scenario in its own fresh store" if runs[0].mode != "mllp"
              else runs[0].where, mode=runs[0].mode, config=args.config, strict=args.strict,
              show_identities=args.show_identities, tz=tz, started_at=runs[0].started_at,
              seconds=sum(r.seconds for r in runs), isolation="scenario")
    for r in runs:
        for m in r.messages:
            msg = m.message
            m.message = replace(msg, position=len(run.messages) + 1,
                                name=f"{r.scenario}/{msg.name}" if r.scenario else msg.name)
            run.messages.append(m)
    run.parts = runs
    return run


def _writable(option: str, path: str) -> None:
    """An output path is checked before the replay starts: its folder exists and can be written to."""
    p = Path(path)
    folder = p.resolve().parent
    if p.is_dir():
        raise CommandError(f"{option} {path}: is a folder; give a file name")
    if not folder.is_dir():
        raise CommandError(f"{option} {path}: no such folder {p.parent} (mkdir -p {p.parent})")
    if not os.access(folder, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise CommandError(f"{option} {path}: cannot write there (permission denied)")


def _write(path, option, writer):
    try:
        writer(path)
    except OSError as e:
        raise CommandError(f"{option} {path}: {e.strerror}") from None


def _open_gate(cfg, to, api, has_config, timeout=30.0):
    if to:
        return RemoteGate(to, api, cfg, store_readable=has_config, timeout=timeout)
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
        skipped = sum(1 for c in m.checks if c.status == C.SKIPPED)
        # "ok" only when every check held: a line whose checks were skipped says so
        verdict = "FAILED" if failed else f"NOT CHECKED ({skipped} skipped)" if skipped else "ok"
        ack = m.ack.code + (f" {m.ack.note}" if m.ack.note else "")
        line = (f"[{m.message.position:>{width}}/{self.total}] {m.message.label}  {m.message.message_type or '?'}  "
                f"{ack}  {verdict} ({held}/{len(m.checks)} held)")
        print(line, flush=True)
        for c in failed:
            print(f"    FAILED {c.name}: expected {c.expected}; got {c.actual}", flush=True)

    def scenarios(self, run: Run) -> None:
        """After several scenarios: each by name, with its verdict, then the whole."""
        lines = [f"pamgate replay: {len(run.parts)} scenarios, each in its own store"]
        lines += [f"  {'PASS' if ok else 'FAIL'}  {name}: {title}" for name, title, ok in run.names]
        failed = sum(1 for _, _, ok in run.names if not ok)
        lines.append("  result: " + ("PASS: every scenario held" if not failed else f"FAIL: {failed} scenario(s) failed"))
        print("\n".join(lines), flush=True)

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
