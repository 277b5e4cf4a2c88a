"""The two gates a replay can talk to: pamgate in this process, or a running `pamgate serve`.

Both answer the same four questions — the ACK of a message, a decision, the patient's state at an instant,
the events in the outbox — and return plain JSON values, so the checks and reports never know which one
answered. In-process runs the code path of `serve` (the MLLP listener's protocol, `message_handler`, the
pipeline and the unit of work, the ACK builder) on a temporary SQLite file, with no socket (an in-memory
transport); only the group commit's batching is replaced by one transaction per operation, on this thread.
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from engine.api import to_json
from engine.assembly import build_pipeline, listener_settings, open_store
from engine.commit import run_batch
from engine.errors import CommandError
from engine.inbound import in_process, message_handler, prepared, rejections_journaled
from engine.pipeline import now_utc, patient_key
from mllp.client import BlockingMLLPClient, MLLPError, decode_ack
from mllp.decoding import UndecodableFrame, codec_for_charset, decode_frame, decode_leniently
from mllp.frame import END_BLOCK, START_BLOCK, frame
from mllp.listener import ListenerSettings, MLLPServerFactory


def plain(value):
    """The JSON form of a value, as the HTTP API sends it (datetimes as ISO 8601 text)."""
    return json.loads(to_json(value))


def key_of(patient: dict) -> str:
    return patient_key(patient.get("authority"), patient.get("id"))


# --- in-process --------------------------------------------------------------------------------

class InlineCommit:
    """The group commit's contract (`submit(work, keys) -> Deferred`), run at once: one transaction each."""

    def __init__(self, store):
        self.store = store

    def submit(self, work, keys=(), refused=None):
        try:
            (ok, result), = run_batch(self.store, [(work, keys, refused)])[0]
        except Exception:  # noqa: BLE001 — handed on as the group commit does, as a failed Deferred
            return defer.fail(Failure())
        return defer.succeed(result) if ok else defer.fail(result)


def _now(d):
    """The result of a Deferred that has already fired."""
    box = []
    d.addBoth(box.append)
    if not box:
        raise RuntimeError("the operation did not complete synchronously")
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


class InProcessGate:
    mode = "in-process"
    reads_events = True

    def __init__(self, cfg):
        self.cfg = cfg
        self.where = "in-process, into a fresh temporary store"
        self._dir = tempfile.mkdtemp(prefix="pamgate-replay-")
        self._stores = 0
        self.store = None
        try:
            self.pipeline = build_pipeline(cfg)
        except Exception as e:  # noqa: BLE001 — a mapping or matrix that cannot load: one line
            raise CommandError(f"cannot load the mappings: {str(e).splitlines()[0]}") from None
        self.fresh()

    def fresh(self) -> None:
        """A new, empty store (a replay's start, or each file of an isolated replay)."""
        if self.store is not None:
            self.store.dispose()
        self._stores += 1
        cfg = self.cfg.model_copy(deep=True)
        cfg.store.url = f"sqlite:///{self._dir}/replay-{self._stores}.db"
        cfg.store.auto_upgrade = True
        self.store = open_store(cfg)
        self.commit = InlineCommit(self.store)
        handler = message_handler(prepared(self.pipeline, in_process(self.commit)))
        # the listener of `pamgate serve`, on a transport in memory and a clock that never moves
        self.settings = (listener_settings(self.cfg, self.cfg.listeners.mllp[0]) if self.cfg.listeners.mllp else
                         ListenerSettings(name="in-process", default_encoding=codec_for_charset("8859/1")))
        factory = MLLPServerFactory(handler, settings=self.settings, clock=Clock(),
                                    on_rejected=rejections_journaled(self.pipeline, in_process(self.commit)))
        self.connection = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 0))
        self.transport = StringTransport()
        self.connection.makeConnection(self.transport)

    def send(self, message) -> str:
        """The ACK that `pamgate serve` would give: the frame goes through the listener's own protocol
        (framing, decoding, the AR it answers by itself, the AE of a store that fails) on an in-memory
        transport, and the ACK is read back as the listener encoded it."""
        raw, _ = message.wire_bytes()
        self.transport.clear()
        self.connection.dataReceived(frame(raw.rstrip(b"\r")))
        out = self.transport.value()
        if not (out.startswith(START_BLOCK) and out.endswith(END_BLOCK)):
            raise RuntimeError("the listener did not answer the frame at once")
        payload = out[len(START_BLOCK):-len(END_BLOCK)]
        try:
            return decode_frame(payload, default_encoding=self.settings.default_encoding,
                                force_encoding=self.settings.force_encoding).text
        except UndecodableFrame:
            return decode_leniently(payload)

    def decide(self, patient: dict, request) -> dict:
        result = _now(self.commit.submit(lambda uow: self.pipeline.decide(uow, patient, request, now_utc()),
                                         [key_of(patient)]))
        return plain(result)

    def state(self, patient: dict, at: datetime) -> dict | None:
        def read(uow):
            pid = self.pipeline.find(uow, patient)
            return None if pid is None else self.pipeline.view(uow, pid, at)
        return plain(_now(self.commit.submit(read)))

    def events(self, key: str) -> list[dict]:
        return plain(_now(self.commit.submit(lambda uow: uow.outbox_events(key, limit=10**9))))

    def close(self) -> None:
        if self.store is not None:
            self.store.dispose()
        shutil.rmtree(self._dir, ignore_errors=True)


# --- a running server --------------------------------------------------------------------------

TO = re.compile(r"^mllp://(\[[^\]]+\]|[^:/]+):(\d+)/?$")


def api_from_config(cfg) -> str | None:
    """The API's base URL, where the configuration's `listeners.http` names a fixed port."""
    m = re.match(r"^(tcp|ssl):(\d+)(.*)$", cfg.listeners.http)
    if not m or m.group(2) == "0":
        return None
    host = re.search(r"interface=([^:]+)", m.group(3))
    scheme = "https" if m.group(1) == "ssl" else "http"
    return f"{scheme}://{host.group(1) if host else '127.0.0.1'}:{m.group(2)}"


class RemoteGate:
    mode = "mllp"

    def __init__(self, to: str, api: str | None, cfg, store_readable: bool, timeout: float = 30.0):
        m = TO.match(to)
        if not m:
            raise CommandError(f"--to {to}: expected mllp://HOST:PORT")
        self.host, self.port = m.group(1).strip("[]"), int(m.group(2))
        self.to = to
        # the server's own configuration (--config) may name its API; the local default does not
        self.api = (api or (api_from_config(cfg) if store_readable else None) or "").rstrip("/") or None
        if api and not re.match(r"^https?://[^/]+", api):
            raise CommandError(f"--api {api}: expected http://HOST:PORT")
        self.token = cfg.api.token
        self.where = f"over MLLP to {to}" + (f", decisions through {self.api}" if self.api else "")
        if self.api:
            self._check_api()   # before any message is sent: a wrong --api or token stops nothing half-way
        self.timeout = timeout
        self.client = BlockingMLLPClient(self.host, self.port, timeout=timeout)
        try:
            self.client.connect()
        except OSError as e:
            raise CommandError(f"--to {to}: cannot connect: {e.strerror or e}") from None
        self.sent = 0
        # The outbox is read from the server's own store, where --config names it (read only).
        self.store = None
        if store_readable:
            c = cfg.model_copy(deep=True)
            c.store.auto_upgrade = False
            try:
                self.store = open_store(c)
                self.store.ping()
            except Exception as e:  # noqa: BLE001
                raise CommandError(f"cannot read the server's store ({c.store.url}): "
                                   f"{str(e).splitlines()[0]}") from None
        self.reads_events = self.store is not None

    def fresh(self) -> None:
        raise CommandError("isolation: file replays each file into a fresh store, which only an in-process "
                           "replay can do: leave out --to")

    def _check_api(self) -> None:
        """The API answers, and takes the token (GET /metrics asks for it when one is configured)."""
        req = urllib.request.Request(self.api + "/metrics")
        if self.token:
            req.add_header("authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise CommandError(f"--api {self.api}: {getattr(reason, 'strerror', None) or reason}; nothing was "
                               f"sent") from None
        if status == 401:
            raise CommandError(f"--api {self.api}: the server refuses the token "
                               f"({'none given: set api.token in --config or PAMGATE_API_TOKEN' if not self.token else 'api.token or PAMGATE_API_TOKEN'})")
        if status >= 400:
            raise CommandError(f"--api {self.api}: answered HTTP {status} to GET /metrics: is it pamgate's API?")

    def send(self, message) -> str:
        raw, codec = message.wire_bytes()
        try:
            try:
                ack = decode_ack(self.client.send_bytes(raw), codec)
            except TimeoutError:
                raise
            except (OSError, MLLPError):
                # the server may have closed an idle connection: send once more on a new one (a message
                # that did arrive is a duplicate, acknowledged again and applied once)
                self.client.close()
                self.client.connect()
                ack = decode_ack(self.client.send_bytes(raw), codec)
        except TimeoutError:
            raise CommandError(f"--to {self.to}: no ACK within {self.timeout:g} s for message {message.position} "
                               f"({message.label}), still waiting after {self.sent} acknowledged "
                               f"(--timeout SECONDS waits longer)") from None
        except (OSError, MLLPError) as e:
            raise CommandError(f"--to {self.to}: no ACK for message {message.position} ({message.label}) after "
                               f"{self.sent} acknowledged: {getattr(e, 'strerror', None) or e}") from None
        self.sent += 1
        return ack

    def _http(self, method: str, path: str, body=None):
        if not self.api:
            raise CommandError("asking the gate needs its HTTP API: give --api http://HOST:PORT")
        req = urllib.request.Request(self.api + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("content-type", "application/json")
        if self.token:
            req.add_header("authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            try:
                return e.code, json.loads(e.read() or b"null")
            except ValueError:
                return e.code, None
        except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise CommandError(f"--api {self.api}: {getattr(reason, 'strerror', None) or reason}") from None

    def decide(self, patient: dict, request) -> dict:
        user = {"id": request.user}
        if request.profession:
            user["profession"] = request.profession
        if request.specialty:
            user["specialty"] = request.specialty
        if request.role:
            user["role"] = request.role
        body = {"patient": patient, "action": request.action, "user": user, "mode": request.mode,
                "at": request.at.isoformat()}
        for k in ("visit", "reason"):
            if getattr(request, k):
                body[k] = getattr(request, k)
        if request.document_type or request.category:
            body["document"] = ({"type": request.document_type} if request.document_type
                                else {"category": request.category})
        status, answer = self._http("POST", "/v1/decisions", body)
        if status != 200:
            raise CommandError(f"--api {self.api}: POST /v1/decisions answered {status}: {answer}")
        return answer

    def state(self, patient: dict, at: datetime) -> dict | None:
        if not self.api or not patient.get("id"):
            return None
        q = urllib.parse.quote
        status, answer = self._http(
            "GET", f"/v1/patients/{q(patient.get('authority') or '', safe='')}/{q(patient['id'], safe='')}"
                   f"/consent?at={q(at.isoformat())}")
        return answer if status == 200 else None

    def events(self, key: str) -> list[dict] | None:
        if self.store is None:
            return None
        with self.store.transaction() as uow:
            return plain(uow.outbox_events(key, limit=10**9))

    def close(self) -> None:
        self.client.close()
        if self.store is not None:
            self.store.dispose()
