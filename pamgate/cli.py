"""The `pamgate` command. A bad argument or file gives one line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import sys
from importlib import metadata

from engine.config import ConfigError
from engine.errors import CommandError
from engine.assembly import StartError


class Once(argparse.Action):
    """An option that may be given once: a second one is an error, not silently the last one kept."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice ({getattr(namespace, self.dest)} and {values}): give it once")
        setattr(namespace, self.dest, values)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        # this (sub)command's own help: `pamgate mappings check --help`
        self.exit(2, f"pamgate: {message} (see {self.prog} --help)\n")


CONFIG_HELP = "the configuration file (default: $PAMGATE_CONFIG, else ./config.yaml if present, else the defaults)"


def _version() -> str:
    try:
        return metadata.version("pamgate")
    except metadata.PackageNotFoundError:
        return "unknown"


def command(parent, name: str, **kw) -> argparse.ArgumentParser:
    """A command; every one reads the configuration, so every one takes --config."""
    c = parent.add_parser(name, **kw)
    c.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    return c


def _commands(p, title: str):
    """The subcommands of `p`, shown as COMMAND (never argparse's internal dest name)."""
    return p.add_subparsers(dest=title, metavar="COMMAND", required=True, parser_class=OneLineParser,
                            help="one of these (COMMAND --help says more):")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="pamgate", description="IHE PAM FR gate for consent to consult the DMP")
    p.add_argument("--version", action="version", version=f"pamgate {_version()}",
                   help="print the version of pamgate and exit")
    sub = _commands(p, "command")

    command(sub, "serve", help="run the MLLP listeners, the HTTP API and the dispatcher",
            description="Run the MLLP listeners, the HTTP API and the dispatcher until stopped.")

    c = sub.add_parser("config", help="check the configuration without starting anything",
                       description="Check the configuration as serve would load it.")
    csub = _commands(c, "config_command")
    command(csub, "check", help="load and check the whole configuration; exit 2 on any problem",
            description="Load the configuration as serve would (senders, mappings, policies, "
                        "habilitation, destinations, listener endpoints, files and certificates), "
                        "start nothing, print what was checked and `config ok`, or each problem "
                        "on one line and exit 2.")

    r = command(sub, "replay", help="replay message files and check ACKs and expectations",
                description="Replay message files (or scenario folders holding an expect.yaml) "
                            "in-process, or to a running server with --to; check every ACK and "
                            "expectation; exit 0 only when all hold.")
    r.add_argument("paths", nargs="+", metavar="PATH",
                   help="a message file (.hl7, one or more messages, MLLP framing accepted), a folder of them, "
                        "or a scenario folder (one holding expect.yaml)")
    r.add_argument("--expect", metavar="FILE", action=Once,
                   help="the expectations (YAML) for the message files named (a scenario folder has its own); once")
    r.add_argument("--to", metavar="mllp://HOST:PORT", action=Once,
                   help="send to this running server instead of in-process")
    r.add_argument("--timeout", metavar="SECONDS", type=float, default=30.0,
                   help="with --to: how long to wait for each ACK (default 30)")
    r.add_argument("--api", metavar="http://HOST:PORT", help="with --to: the running server's HTTP API")
    r.add_argument("--junit", metavar="FILE", action=Once, help="write a JUnit XML report")
    r.add_argument("--report", metavar="FILE.html", action=Once, help="write an HTML report")
    r.add_argument("--lang", choices=["fr", "en"],
                   help="the HTML report's language (default: replay.lang of the configuration, else fr)")
    r.add_argument("--strict", action="store_true", help="also validate each message against the PAM FR profile")
    r.add_argument("--show-identities", action="store_true",
                   help="show names, IPP, INS, NDA and visit numbers in the reports (masked by default)")

    m = sub.add_parser("mappings", help="check or explain the mappings",
                       description="Check the mapping files, or explain what the server makes of a message.")
    msub = _commands(m, "mappings_command")
    mc = command(msub, "check", help="check mapping, senders and habilitation files; exit 2 on any problem",
                 description="Check the files named, or (none named) those of the configuration and "
                             "the sender rules as serve loads them.")
    mc.add_argument("files", nargs="*", metavar="FILE",
                    help="mapping, senders or habilitation files or folders (default: the configuration's)")
    me = command(msub, "explain", help="explain a message field by field, and the decision it leads to",
                 description="Explain each message of a file: the mapping chosen, what it reads, and "
                             "the decision in an empty store. Exit 1 when a message would be refused.")
    me.add_argument("message_file", metavar="FILE", help="a file of one or more HL7 messages")
    me.add_argument("--profession", metavar="CODE", default="10",
                    help="the consulting user's G15 code (default 10)")
    me.add_argument("--role", metavar="CODE", help="the user's second role value (R01, G05 or R85 code)")
    me.add_argument("--type", metavar="CODE", help="a document type code (XDS typeCode)")
    me.add_argument("--category", metavar="CODE", help="a document category (TRE_A03 class code)")

    j = sub.add_parser("journal", help="the messages received: list, show, export",
                       description="The journal of the messages received, with the ACK each was sent. No "
                                   "identity is printed unless --show-identities.")
    jsub = _commands(j, "journal_command")

    def selection(jp):
        jp.add_argument("--since", metavar="WHEN", help="from this ISO 8601 date-time (no offset: the configured "
                                                        "time zone) or duration back from now (PT2H); "
                                                        "default: the last hour")
        jp.add_argument("--until", metavar="WHEN", help="before this ISO 8601 date-time or duration back from now")
        jp.add_argument("--sender", metavar="APP[|FACILITY]", help="the sender: MSH-3-1, or MSH-3-1|MSH-4-1")
        jp.add_argument("--event", metavar="EVENT", help="the trigger event, MSH-9-2 (A01, Z99…)")
        jp.add_argument("--ack", metavar="CODE", help="the ACK code sent: AA, AE or AR")
        jp.add_argument("--msh10", metavar="ID", help="the message control id, MSH-10")
        jp.add_argument("--ipp", metavar="IPP", help="the patient's IPP, as the mapping read it")
        jp.add_argument("--visit", metavar="NUMBER", help="the visit number, as the mapping read it")
    jl = command(jsub, "list", help="list the messages received (default: the last hour)",
                 description="List the messages received, oldest first (default: the last hour).")
    selection(jl)
    jl.add_argument("--show-identities", action="store_true", help="show the IPP and visit columns unmasked")
    js = command(jsub, "show", help="one message: raw, the ACK as sent, errors, patient, events",
                 description="One message (or each message journaled under an MSH-10): the raw message, "
                             "the ACK as sent, the errors, the patient it touched, the events it caused.")
    js.add_argument("ref", metavar="ID|MSH-10", help="a journal id (from journal list) or an MSH-10")
    js.add_argument("--show-identities", action="store_true",
                    help="show names, IPP, INS, NDA and visit numbers (masked by default)")
    je = command(jsub, "export", help="write the messages selected as .hl7 files that pamgate replay takes",
                 description="Write each message selected, as received, to FOLDER/ID-MSH10.hl7: "
                             "`pamgate replay FOLDER` takes them back. The files hold identities.")
    je.add_argument("folder", metavar="FOLDER", help="where the .hl7 files are written (made if absent)")
    selection(je)

    d = sub.add_parser("db", help="the store: its schema, its backup", description="The store: its schema, its backup.")
    dsub = _commands(d, "db_command")
    command(dsub, "upgrade", help="create the store or migrate it to the latest schema",
            description="Create the store or migrate it to the latest schema.")
    command(dsub, "backup", help="a consistent copy of a live SQLite store (PostgreSQL: pg_dump -Fc)",
            description="Copy the live SQLite store to FILE with SQLite's online backup, checked and "
                        "fsynced; for PostgreSQL, use pg_dump -Fc (README, Operations).").add_argument(
        "file", metavar="FILE", help="where the copy is written")

    a = sub.add_parser("audit", help="the audit trail", description="The audit trail.")
    asub = _commands(a, "audit_command")
    command(asub, "verify", help="check the audit trail's hash chain from its start; exit 1 if broken",
            description="Check the audit trail's hash chain from its start, beside a running server (it takes "
                        "no write lock), and record the verification in the trail (the console's feed board "
                        "shows the last one); exit 1 if broken.").add_argument(
        "--no-record", action="store_true",
        help="do not record the verification (a backup copy, a store opened read-only)")

    o = sub.add_parser("outbox", help="inspect the outbox and replay dead letters",
                       description="Inspect the outbox and put dead letters back in the queue.")
    osub = _commands(o, "outbox_command")
    ol = command(osub, "list", help="list the deliveries", description="List the deliveries, newest first.")
    ol.add_argument("--status", choices=["pending", "done", "dead"], help="only the deliveries in this status")
    os_ = command(osub, "show", help="show an event and its deliveries",
                  description="Show an event, its deliveries and its envelope.")
    os_.add_argument("id", metavar="ID", help="an event id, an outbox number, or NUMBER/DESTINATION")
    ort = command(osub, "retry", help="put deliveries back in the queue, due now",
                  description="Put a delivery, or every dead letter, back in the queue, due now.")
    ort.add_argument("id", nargs="?", metavar="ID", help="an event id, an outbox number, or NUMBER/DESTINATION")
    ort.add_argument("--all-dead", action="store_true", help="every dead letter")

    st = command(sub, "status", help="one screen of a running instance: version, store, apply process, outbox, "
                                     "senders",
                 description="Read a running instance's GET /v1/status and print it on one screen, without "
                             "any patient identity.")
    st.add_argument("--url", help="its HTTP API (default: the configuration's listeners.http, else "
                                  "http://127.0.0.1:8080)")
    st.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                    help="seconds to wait for the answer (default 10)")

    cn = sub.add_parser("console", help="the web console", description="The web console's tools.")
    _commands(cn, "console_command").add_parser(
        "hash-password", help="print the argon2 hash of a password read from stdin, for console.users",
        description="Read a password (asked twice on a terminal, else the first line of stdin) and print "
                    "its argon2 hash for console.users[].password_hash.")
    return p


def run(args) -> int:
    """The command group's module does the work; each is imported only when its command runs."""
    cmd = args.command
    if cmd == "serve":
        from pamgate.serve import serve
        return serve(args)
    if cmd == "db":
        from pamgate.db import backup, upgrade
        return backup(args) if args.db_command == "backup" else upgrade(args)
    if cmd == "audit":
        from pamgate.audit import verify
        return verify(args)
    if cmd == "mappings":
        from pamgate.mappings import check, explain
        return check(args) if args.mappings_command == "check" else explain(args)
    if cmd == "config":
        from pamgate.config import check
        return check(args)
    if cmd == "journal":
        from pamgate.journal import journal
        return journal(args)
    if cmd == "replay":
        from pamgate.replay import replay
        return replay(args)
    if cmd == "outbox":
        from pamgate.outbox import outbox
        return outbox(args)
    if cmd == "console":
        from console.cli import hash_password
        return hash_password()
    if cmd == "status":
        from pamgate.status import status
        return status(args)
    raise CommandError(f"unknown command {cmd}")


def _chosen(p, args):
    """The (sub)parser of the command given: an unknown argument is its error, pointing at its help."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            return _chosen(action.choices[getattr(args, action.dest)], args)
    return p


def main(argv=None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra:
        _chosen(p, args).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return run(args) or 0
    except (ConfigError, StartError, CommandError) as e:
        print(f"pamgate: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
