"""A real `pamgate serve` in a subprocess, on free loopback ports and a temporary SQLite file."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from mllp.ack import read_ack

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"pamgate: (\w+) listening on .* \(([\d.]+):(\d+)\)")


class Server:
    def __init__(self, tmp: Path, config: dict | None = None, env: dict | None = None, store_url=None):
        self.tmp = tmp
        cfg = {"store": {"url": store_url or f"sqlite:///{tmp / 'store.db'}"},
               "listeners": {"mllp": [{"endpoint": "tcp:0:interface=127.0.0.1"}],
                             "http": "tcp:0:interface=127.0.0.1"},
               "log": {"level": "info"}}
        for k, v in (config or {}).items():
            cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
        self.config_path = tmp / f"config-{time.monotonic_ns()}.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.env = {**os.environ, **(env or {})}
        self.env.pop("PAMGATE_CONFIG", None)
        self.proc = None

    def start(self, timeout=60):
        self.stderr_path = self.tmp / f"stderr-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pamgate.cli", "serve", "--config", str(self.config_path)],
            cwd=self.tmp, env=self.env, stdout=subprocess.PIPE, stderr=open(self.stderr_path, "wb"), text=True)
        ports = {}
        deadline = time.monotonic() + timeout
        while len(ports) < 2:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"pamgate serve exited: {self.stderr()}")
            m = LINE.search(line)
            if m:
                ports[m.group(1)] = int(m.group(3))
            if time.monotonic() > deadline:
                raise RuntimeError("pamgate serve did not start in time")
        self.mllp_port, self.http_port = ports["mllp"], ports["http"]
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def send(self, message: str, encoding="utf-8") -> str:
        from mllp.client import BlockingMLLPClient
        with BlockingMLLPClient("127.0.0.1", self.mllp_port, timeout=30) as c:
            return c.send(message, encoding=encoding)

    def http(self, method, path, body=None, token=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        req.add_header("content-type", "application/json")
        if token:
            req.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw and r.headers.get_content_type() == "application/json" else raw
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw

    def decide(self, patient, action, **kw):
        body = {"patient": patient, "action": action,
                "user": {"id": kw.pop("user", "doc1"), "profession": kw.pop("profession", "10")}, **kw}
        return self.http("POST", "/v1/decisions", body)


def exchange(port: int, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """One raw HTTP/1.0 request: (status, headers with lower-case names, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.lower(): v for k, v in (line.split(b": ", 1) for line in lines[1:] if b": " in line)}
    return int(lines[0].split()[1]), headers, body


def ack_code(ack: str) -> str:
    read = read_ack(ack)
    assert read.has_msa, f"no MSA in {ack!r}"
    return read.code
