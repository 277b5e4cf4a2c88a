"""Real receivers on loopback for the outbound tests: an HTTP endpoint and an MLLP endpoint, each in a
thread of its own, that can be taken down (port closed, connections cut) and brought back on the same port.
Each records what it accepted, in arrival order, and every attempt it saw."""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpReceiver:
    """POST / with a JSON envelope. `answer(envelope) -> status` decides; 2xx ones are recorded."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.accepted: list[dict] = []
        self.attempts: list[dict] = []
        self.answer = lambda env: 200
        self.body = lambda env: b"ok"
        self.delay = 0.0
        # True: connections are kept after an answer, and a kept one is closed unanswered when its next request
        # comes, as by a server whose idle timeout ends at that instant (a stale connection for the client)
        self.drops_kept_connections = False
        self.lock = threading.Lock()
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def up(self) -> "HttpReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request a connection, "down" then cuts everything. Twisted keeps such a connection
            # (the answer says no "Connection: close") until it reads the close: the client meets stale ones.
            protocol_version = "HTTP/1.1" if receiver.drops_kept_connections else "HTTP/1.0"
            answered = False

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.answered:
                    self.close_connection = True
                    return
                self.answered = receiver.drops_kept_connections
                env = json.loads(body)
                env["_headers"] = {"content-type": self.headers.get("content-type"),
                                   "idempotency-key": self.headers.get("idempotency-key")}
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.answer(env)
                with receiver.lock:
                    receiver.attempts.append(env)
                    if 200 <= status < 300:
                        receiver.accepted.append(env)
                body = receiver.body(env)
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 64      # the dispatcher opens several connections at once

        deadline = time.monotonic() + 30
        while True:
            try:
                self.server = Server(("127.0.0.1", self.port), Handler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


FRAME = re.compile(rb"\x0b(.*?)\x1c\r", re.DOTALL)


class MllpReceiver:
    """Answers each framed message with an ACK from mllp.ack.build_ack. `answer(text) -> (code, msa2)`:
    the ACK code, and an MSA-2 to put in place of the real one (None keeps MSH-10)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.accepted: list[str] = []
        self.attempts: list[str] = []
        self.answer = lambda text: ("AA", None)
        self.lock = threading.Lock()
        self.exchange = threading.Lock()
        self.sock = None
        self.conns: list[socket.socket] = []
        self.running = False

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> "MllpReceiver":
        deadline = time.monotonic() + 30
        while True:
            try:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", self.port))
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        s.listen(16)
        s.settimeout(0.1)
        self.sock, self.running = s, True
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        return self

    def _accept(self, s) -> None:
        while self.running and self.sock is s:
            try:
                c, _ = s.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c) -> None:
        from mllp.ack import build_ack
        buf = b""
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
                while True:
                    m = FRAME.search(buf)
                    if not m:
                        break
                    buf = buf[m.end():]
                    text = m.group(1).decode("utf-8", "replace").rstrip("\r")
                    # one exchange at a time against down(): a message counts as accepted once its ACK
                    # has left, as a real receiver commits before it answers
                    with self.exchange:
                        if not self.running:
                            return
                        code, msa2 = self.answer(text)
                        ack = build_ack(text, code)
                        if msa2 is not None:
                            ack = re.sub(r"(MSA\|[A-Z]{2}\|)[^|\r]*", lambda mm: mm.group(1) + msa2, ack)
                        with self.lock:
                            self.attempts.append(text)
                        c.sendall(b"\x0b" + ack.encode("utf-8") + b"\x1c\r")
                        if code == "AA" and msa2 is None:
                            with self.lock:
                                self.accepted.append(text)
        except OSError:
            return
        finally:
            c.close()

    def down(self) -> None:
        with self.exchange:
            self.running = False
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


def segment(text: str, name: str) -> list[str]:
    for seg in text.split("\r"):
        if seg.startswith(name + "|"):
            return seg.split("|")
    raise AssertionError(f"no {name} in {text!r}")
