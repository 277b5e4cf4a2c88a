"""The `pamgate` command. A bad argument or file gives one line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import sys

from engine.config import ConfigError
from engine.errors import CommandError
from engine.assembly import StartError


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"pamgate: {message} (see pamgate --help)\n")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="pamgate", description="IHE PAM FR gate for consent to consult the DMP")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    s = sub.add_parser("serve", help="run the MLLP listeners, the HTTP API and the dispatcher")
    s.add_argument("--config")

    r = sub.add_parser("replay", help="replay message files and check ACKs and expectations")
    r.add_argument("paths", nargs="+", metavar="PATH")
    r.add_argument("--config")
    r.add_argument("--expect")
    r.add_argument("--to", metavar="mllp://HOST:PORT")
    r.add_argument("--api", metavar="http://HOST:PORT", help="with --to: the running server's HTTP API")
    r.add_argument("--junit", metavar="FILE")
    r.add_argument("--report", metavar="FILE.html")
    r.add_argument("--strict", action="store_true")
    r.add_argument("--show-identities", action="store_true")

    m = sub.add_parser("mappings", help="check or explain the mappings")
    msub = m.add_subparsers(dest="mappings_command", required=True, parser_class=OneLineParser)
    mc = msub.add_parser("check")
    mc.add_argument("files", nargs="*")
    mc.add_argument("--config")
    me = msub.add_parser("explain")
    me.add_argument("message_file")
    me.add_argument("--config")
    me.add_argument("--profession", default="10", help="the consulting user's G15 code (default 10)")
    me.add_argument("--role", help="the user's second role value (R01, G05 or R85 code)")
    me.add_argument("--type", help="a document type code (XDS typeCode)")
    me.add_argument("--category", help="a document category (TRE_A03 class code)")

    d = sub.add_parser("db", help="the store: its schema, its backup")
    dsub = d.add_subparsers(dest="db_command", required=True, parser_class=OneLineParser)
    du = dsub.add_parser("upgrade")
    du.add_argument("--config")
    db = dsub.add_parser("backup", help="a consistent copy of a live SQLite store (PostgreSQL: pg_dump -Fc)")
    db.add_argument("file", metavar="FILE")
    db.add_argument("--config")

    a = sub.add_parser("audit", help="the audit trail")
    asub = a.add_subparsers(dest="audit_command", required=True, parser_class=OneLineParser)
    av = asub.add_parser("verify")
    av.add_argument("--config")

    o = sub.add_parser("outbox", help="inspect the outbox and replay dead letters")
    osub = o.add_subparsers(dest="outbox_command", required=True, parser_class=OneLineParser)
    ol = osub.add_parser("list")
    ol.add_argument("--status", choices=["pending", "done", "dead"])
    ol.add_argument("--config")
    os_ = osub.add_parser("show")
    os_.add_argument("id")
    os_.add_argument("--config")
    ort = osub.add_parser("retry")
    ort.add_argument("id", nargs="?")
    ort.add_argument("--all-dead", action="store_true")
    ort.add_argument("--config")
    st = sub.add_parser("status", help="one screen of a running instance: version, store, apply process, "
                                       "outbox, senders")
    st.add_argument("--url", help="its HTTP API (default: the configuration's listeners.http, else "
                                  "http://127.0.0.1:8080)")
    st.add_argument("--config")
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
