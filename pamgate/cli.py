"""The `pamgate` command. A bad argument or file gives one line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import sys

from engine.assembly import StartError
from engine.config import ConfigError
from engine.errors import CommandError


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"pamgate: {message} (see pamgate --help)\n")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="pamgate", description="IHE PAM FR gate for consent to consult the DMP")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    def command(parent, name: str, **kw) -> argparse.ArgumentParser:
        """A command; every one reads the configuration, so every one takes --config."""
        c = parent.add_parser(name, **kw)
        c.add_argument("--config")
        return c

    def group(name: str, help: str):
        return sub.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True,
                                                              parser_class=OneLineParser)

    command(sub, "serve", help="run the MLLP listeners, the HTTP API and the dispatcher")

    r = command(sub, "replay", help="replay message files and check ACKs and expectations")
    r.add_argument("paths", nargs="+", metavar="PATH")
    r.add_argument("--expect")
    r.add_argument("--to", metavar="mllp://HOST:PORT")
    r.add_argument("--api", metavar="http://HOST:PORT", help="with --to: the running server's HTTP API")
    r.add_argument("--junit", metavar="FILE")
    r.add_argument("--report", metavar="FILE.html")
    for flag in ("--strict", "--show-identities"):
        r.add_argument(flag, action="store_true")

    mappings = group("mappings", "check or explain the mappings")
    command(mappings, "check").add_argument("files", nargs="*")
    me = command(mappings, "explain")
    me.add_argument("message_file")
    me.add_argument("--profession", default="10", help="the consulting user's G15 code (default 10)")
    me.add_argument("--role", help="the user's second role value (R01, G05 or R85 code)")
    me.add_argument("--type", help="a document type code (XDS typeCode)")
    me.add_argument("--category", help="a document category (TRE_A03 class code)")

    db = group("db", "the store: its schema, its backup")
    command(db, "upgrade")
    command(db, "backup", help="a consistent copy of a live SQLite store (PostgreSQL: pg_dump -Fc)").add_argument(
        "file", metavar="FILE")
    command(group("audit", "the audit trail"), "verify")

    outbox = group("outbox", "inspect the outbox and replay dead letters")
    command(outbox, "list").add_argument("--status", choices=["pending", "done", "dead"])
    command(outbox, "show").add_argument("id")
    retry = command(outbox, "retry")
    retry.add_argument("id", nargs="?")
    retry.add_argument("--all-dead", action="store_true")

    group("console", "the web console").add_parser(
        "hash-password", help="print the argon2 hash of a password read from stdin, for console.users")
    st = command(sub, "status", help="one screen of a running instance: version, store, apply process, outbox, "
                                     "senders")
    st.add_argument("--url", help="its HTTP API (default: the configuration's listeners.http, else "
                                  "http://127.0.0.1:8080)")
    st.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")
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


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args) or 0
    except (ConfigError, StartError, CommandError) as e:
        print(f"pamgate: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
