"""`pamgate status [--url URL]`: one screen of a running instance, read from its `GET /v1/status`."""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request

from engine import config as configuration
from engine.errors import CommandError

DEFAULT_URL = "http://127.0.0.1:8080"


def api_url(http_listener: str) -> str:
    """The URL of a configured `listeners.http` endpoint string (`tcp:8080:interface=127.0.0.1`,
    `ssl:8443:…`), on loopback when it listens on every interface."""
    parts = http_listener.split(":")
    kind = parts[0] if parts and not parts[0].isdigit() else "tcp"
    m = re.search(r"(?:^|:)(?:port=)?(\d+)(?::|$)", http_listener)
    port = m.group(1) if m else None
    m = re.search(r"interface=([^:]+)", http_listener)
    host = m.group(1) if m and m.group(1) not in ("0.0.0.0", "::") else "127.0.0.1"
    if port is None:
        return DEFAULT_URL
    return f"{'https' if kind in ('ssl', 'tls') else 'http'}://{host}:{port}"


def _age(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= n:
            return f"{seconds // n} {unit}"
    return f"{seconds} s"


def screen(s: dict) -> str:
    ap = s.get("apply_process") or {}
    store = s.get("store") or {}
    eps = s.get("endpoints") or {}
    lines = [
        f"pamgate {s.get('version', '?')}  (process {s.get('process_id')}, since {s.get('started_at')})",
        f"configuration  {s.get('config') or '(defaults)'}",
        f"endpoints      mllp {', '.join(eps.get('mllp', []))}; http {eps.get('http')}"
        f"; listening on {', '.join(eps.get('listening', []))}",
        f"store          {store.get('dialect')} {store.get('url')}: "
        f"{'answers' if s.get('store_answers') else 'DOES NOT ANSWER'}"
        + (f", journal {s['journal_rows']} rows" if s.get("journal_rows") is not None else ""),
        f"apply process  {'ready' if ap.get('ready') else 'NOT READY'} (process {ap.get('process_id')}, "
        f"{ap.get('in_flight', 0)} in flight, {ap.get('restarts', 0)} restarts)",
    ]
    dests = s.get("destinations")
    if dests is None:
        lines.append("destinations   (the store did not answer)")
    elif not dests:
        lines.append("destinations   none configured")
    else:
        lines.append("destinations   name                pending  oldest pending  dead")
        for name, d in dests.items():
            lines.append(f"               {name[:18]:<18} {d['pending']:>8}  {_age(d['oldest_pending_age_seconds']):>14}"
                         f"  {d['dead']:>4}")
    senders = s.get("senders") or {}
    if not senders:
        lines.append("senders        no message since the start")
    else:
        lines.append("senders        last message (UTC)")
        for name, at in senders.items():
            lines.append(f"               {name[:40]:<40} {at}")
    return "\n".join(lines)


def status(args) -> int:
    cfg = None
    if args.config or os.environ.get("PAMGATE_CONFIG") or os.path.exists("config.yaml"):
        cfg = configuration.load(args.config)
    url = (args.url or (api_url(cfg.listeners.http) if cfg else DEFAULT_URL)).rstrip("/")
    token = cfg.api.token if cfg else os.environ.get("PAMGATE_API_TOKEN")
    try:    # a port that is not a number in range is a ValueError here, rather than a traceback in urlopen
        parts = urllib.parse.urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise CommandError(f"--url {url!r}: expected http://HOST:PORT (or https://)")
    try:
        req = urllib.request.Request(f"{url}/v1/status")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=args.timeout) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("error", "")
        except ValueError:
            detail = ""
        raise CommandError(f"{url}/v1/status answered HTTP {e.code} {detail}".rstrip()
                           + (" (give the API token: api.token or PAMGATE_API_TOKEN)" if e.code == 401 else "")) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise CommandError(f"cannot reach pamgate at {url}: {reason}") from None
    print(screen(body))
    return 0
