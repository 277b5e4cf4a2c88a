"""The HTTP listener's own limits, over real sockets to a real `pamgate serve`: a client cannot take every
connection (file descriptors) of the process, trickle a request forever (slowloris), or make it keep a
huge body before the API reads it. The MLLP listener serves on meanwhile."""
from __future__ import annotations

import json
import socket
import time

import pytest

from tests.builders import adt, zfa_2111
from tests.serving import Server, ack_code

LIMITS = {"limits": {"max_connections": 20, "frame_timeout": 2, "idle_timeout": 30}}


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path, LIMITS).start()
    yield s
    s.stop()


def answer(sock: socket.socket, timeout: float = 20) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def healthz(server) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            head = answer(s, 5)
        return int(head.split()[1]) if head else None
    except OSError:
        return None


def test_a_trickled_request_is_answered_408_and_closed(server):
    with socket.create_connection(("127.0.0.1", server.http_port)) as s:
        started = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")      # the headers never end
        data = answer(s)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert json.loads(data.partition(b"\r\n\r\n")[2]) == {"error": "request.timeout",
                                                         "detail": "the request did not arrive in time"}
    assert time.monotonic() - started < 15
    assert "http.request_too_slow" in server.stderr()


def test_a_body_over_the_limit_is_refused_before_it_is_received(server):
    with socket.create_connection(("127.0.0.1", server.http_port)) as s:
        s.sendall(b"POST /v1/decisions HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000000\r\n\r\n")
        data = answer(s)                                        # no byte of the body was sent
    assert data.startswith(b"HTTP/1.1 413 ") and b'"body.too_large"' in data
    with socket.create_connection(("127.0.0.1", server.http_port)) as s:
        s.sendall(b"POST /v1/decisions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(100):                                # 6.5 MB, while the server answers
                s.sendall(b"10000\r\n" + b"a" * 0x10000 + b"\r\n")
        except OSError:
            pass                                                # closed after the 413: as it should
        data = answer(s)
    assert data.startswith(b"HTTP/1.1 413 ") and b'"body.too_large"' in data


def test_held_connections_past_the_limit_are_refused_and_mllp_serves_on(server):
    held = []
    try:
        for _ in range(60):                                     # 3 × the limit, each an unfinished request
            s = socket.create_connection(("127.0.0.1", server.http_port))
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            held.append(s)
        time.sleep(0.5)
        assert server.stderr().count("http.connection_refused") >= 40
        ack = server.send(adt("A01", ipp="LIM1", visit="VLIM1", zfa=zfa_2111("INO", "IC")))
        assert ack_code(ack) == "AA"                            # the MLLP listener is not starved
        deadline = time.monotonic() + 15                        # the held ones time out: the API is back
        while healthz(server) != 200:
            assert time.monotonic() < deadline, "the API did not come back after the held requests timed out"
            time.sleep(0.2)
    finally:
        for s in held:
            s.close()


def raw(server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.http_port)) as s:
        s.sendall(request)
        return answer(s)


def test_head_is_answered_as_get_without_a_body_and_405_names_the_methods(server):
    """HTTP: every server takes HEAD where it takes GET (probes send it), and a 405 carries `Allow`."""
    deadline = time.monotonic() + 30
    while healthz(server) != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for path in (b"/livez", b"/healthz", b"/readyz", b"/metrics"):
        data = raw(server, b"HEAD " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"", (path, data)
    data = raw(server, b"OPTIONS /v1/decisions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ") and b"\r\nAllow: POST" in head
    assert json.loads(body)["error"] == "method.not_allowed"
    data = raw(server, b"DELETE /v1/patients/HOSP-T/P1/consent HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 405 ") and b"\r\nAllow: GET, HEAD" in data
    data = raw(server, b"PUT /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 404 ") and b'"route.unknown"' in data
