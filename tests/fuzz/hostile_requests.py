"""Hostile HTTP requests, generated up front from one seed, as raw bytes (so that nothing between us and
the server tidies them up: bad UTF-8, %FF, odd methods and header bytes reach it as written)."""
from __future__ import annotations

import json
import random

TOKEN = "fuzz-token-0123456789"
PATIENTS = [{"id": "700001", "authority": "HOSP-T"}, {"id": "799999", "authority": "HOSP-T"},
            {"id": "000000", "authority": "NOWHERE"}, {"ins": "1800175123456", "oid": "1.2.250.1.213.1.4.8"},
            {"ins": "2" * 13, "oid": "1.2.250.1.213.1.4.10"}]
USERS = [f"fuzz-user-{i}" for i in range(5)]

EDGE_DATES = ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-14:00", "9999-12-31", "0001-01-01T00:00:00Z",
              "0001-01-01T00:00:00+14:00", "0001-01-01", "2025-03-30T02:30:00", "2025-10-26T02:30:00+01:00",
              "2025-13-01T00:00:00Z", "2025-02-30", "+002025-01-01", "2025-01-06T10:00:00+01:00",
              "2025-01-06T10:00:00.123456789Z", "2099-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "now", "", " ",
              "2025-01-06T10:00:00+24:00", "2025-01-06T10:00:00\u00a0", "２０２５-01-06", "20250106T100000Z"]

HUGE = [10 ** 400, -(10 ** 300), 1e308, -0.0, 2 ** 63, -(2 ** 64), 0]
WEIRD = [None, True, False, 0, -1, 1.5, "", " ", "\u0000", "\ud800", "\udfff", "\U0001F600", "é" * 1000,
         "A" * 70000, [], [1, 2], {}, {"a": 1}, "NaN", "'; DROP TABLE patient;--", "../../etc/passwd",
         "%FF", "\\", "\u202e", "V" * 201, "V" * 200 + "X"]


class RequestFactory:
    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def decision(self) -> dict:
        r = self.r
        body = {"patient": dict(r.choice(PATIENTS)), "action": r.choice(["consult", "feed"]),
                "user": {"id": r.choice(USERS), "profession": r.choice(["10", "21", "40", "60", "99"])}}
        if r.random() < 0.5:
            body["at"] = r.choice(EDGE_DATES)
        if r.random() < 0.3:
            body["visit"] = r.choice(["V1", "V" * 201, "W" * 200 + "1", "W" * 200 + "2", ""])
        if r.random() < 0.3:
            body["mode"] = r.choice(["normal", "bris_de_glace", "centre_15", "BRIS", ""])
            body["reason"] = r.choice([None, "urgence", "", "x" * 5000])
        return body

    def consent(self) -> dict:
        r = self.r
        return {"patient": dict(r.choice(PATIENTS)), "consult": r.choice(["IC", "INC", "NA", "X", None]),
                "feed": r.choice(["INO", "IO", "NA", None]), "collected_at": r.choice(EDGE_DATES),
                "collected_by": r.choice([{"id": "x"}, {}, {"id": "\ud800"}, "me", None]),
                "visit": r.choice(["V1", None, "V" * 201, "W" * 200 + "3"])}

    def dmp(self) -> dict:
        r = self.r
        return {"patient": dict(r.choice(PATIENTS)), "user": {"id": r.choice(USERS)},
                "transaction": r.choice(["TD0.2", "TD0.3", "TD0.9"]),
                "result": r.choice(["VALIDE", "EXPIRE", "INTERDIT", "NON_EXISTE", "OK", "FAILED", "?"])}

    def spoil(self, value):
        """The same body, wrong somewhere: a type, a field, a value, a nesting."""
        r = self.r
        if isinstance(value, dict) and value and r.random() < 0.7:
            key = r.choice(list(value))
            op = r.randrange(5)
            if op == 0:
                del value[key]
            elif op == 1:
                value["unknown_" + str(r.randint(0, 9))] = r.choice(WEIRD[:10])
            elif op == 2:
                value[key] = r.choice(WEIRD + HUGE)
            else:
                value[key] = self.spoil(value[key])
            return value
        return r.choice(WEIRD + HUGE)

    def body_bytes(self, body) -> bytes:
        r = self.r
        kind = r.random()
        if kind < 0.05:                                   # deep nesting
            depth = r.choice([100, 1000, 5000, 20000])
            return (b"[" * depth + b"]" * depth) if r.random() < 0.5 else (b'{"a":' * depth + b"1" + b"}" * depth)
        if kind < 0.08:                                   # lone surrogates as JSON escapes
            return json.dumps(body).replace('"consult"', '"\\ud800"', 1).replace('"HOSP-T"', '"\\udc00x"').encode()
        if kind < 0.11:                                   # bytes that are not UTF-8
            return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass").replace(b"HOSP", b"\xff\xfeHO", 1)
        if kind < 0.13:                                   # numbers no float holds
            return json.dumps(body).replace('"10"', "1" + "0" * r.choice([400, 5000]), 1).encode()
        if kind < 0.15:
            return r.choice([b"", b"null", b"[]", b"\"x\"", b"NaN", b"Infinity", b"{", b"\xef\xbb\xbf{}", b"{}" * 10,
                             b'{"patient": {"id": "1", "id": "2"}}', r.randbytes(r.randint(1, 300)),
                             b"x" * 70000])
        text = json.dumps(body, ensure_ascii=r.random() < 0.5, default=str)
        return text.encode("utf-8", "surrogatepass")

    def target(self) -> tuple[str, str, bytes | None]:
        """(method, path with query, body or None)."""
        r = self.r
        k = r.random()
        if k < 0.35:
            body = self.decision()
            return "POST", "/v1/decisions", self.body_bytes(self.spoil(body) if r.random() < 0.8 else body)
        if k < 0.5:
            body = self.consent()
            return "POST", "/v1/consents", self.body_bytes(self.spoil(body) if r.random() < 0.7 else body)
        if k < 0.58:
            body = self.dmp()
            return "POST", "/v1/dmp/results", self.body_bytes(self.spoil(body) if r.random() < 0.7 else body)
        if k < 0.75:
            auth = r.choice(["HOSP-T", "%FF", "%00", "%C3%28", "%ED%A0%80", "..", "%2F", "a" * 3000, "%", "%E9"])
            ipp = r.choice(["700001", "799999", "%FF", "x%00y", "%F0%9F%98%80", "1" * 500, ""])
            at = r.choice(EDGE_DATES + ["2025-01-06T10:00:00+01:00", "%FF", "2025-01-06T10%3A00%3A00%2B01%3A00",
                                        "2025-01-06T10:00:00%2001:00", "%ED%A0%80"])
            query = r.choice(["", f"?at={at}", f"?at={at}&at=x", "?at", "?=&&", "?at=%", "?%FF=%FF"])
            return "GET", f"/v1/patients/{auth}/{ipp}/consent{query}", None
        if k < 0.82:
            q = r.choice(["?authority=HOSP-T&id=700001", "?id=%FF", "?authority=%FF&id=1", "", "?id=", "?id=1&id=2",
                          "?id=%ED%A0%80", "?authority=&id=" + "9" * 3000])
            return "GET", "/v1/audit" + q, None
        method = r.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT", "FOO",
                           "get", "M-SEARCH", "PROPFIND", "G\xc9T", "POST\x00"])
        path = r.choice(["/", "/healthz", "/livez", "/readyz", "/metrics", "/v1", "/v1/", "/v1/decisions",
                         "/v1/decisions/", "//v1/decisions", "/v1/../v1/decisions", "/v1/decisions?x=%FF",
                         "/v1/patients/HOSP-T/700001/consent/extra", "/console/", "/console/messages",
                         "/console/patients/HOSP-T/700001?at=%FF", "/console/messages/%FF", "/console/x%00",
                         "/%FF", "/" + "a" * 5000, "*", "http://evil/v1/decisions", "/v1/decisions#frag",
                         "/v1/consents;x=1", "/\xe9"])
        return method, path, (self.body_bytes(self.decision()) if r.random() < 0.3 else None)

    def headers(self, body: bytes | None) -> bytes:
        r = self.r
        auth = r.choice([f"Bearer {TOKEN}".encode()] * 12 + [
            b"Bearer \xff\xfe", b"Bearer " + TOKEN.encode() + b"\x00", b"Basic Zm9vOmJhcg==", b"Bearer",
            b"bearer " + TOKEN.encode(), b"Bearer " + TOKEN.encode() + b" ", b"\xc3\x28", b"Bearer " + b"x" * 8000,
            None])
        lines = [b"Host: 127.0.0.1", b"Connection: close"]
        if auth is not None:
            lines.append(b"Authorization: " + auth)
        if body is not None:
            lines.append(b"Content-Type: " + r.choice([b"application/json"] * 5 + [b"text/plain", b"application/json; charset=latin-1", b"\xff"]))
            lines.append(b"Content-Length: " + str(len(body)).encode())
        if r.random() < 0.05:
            lines.append(r.choice([b"X-Junk: \x01\x02\xff", b"Accept: */*\xff", b"Expect: 100-continue",
                                   b"Cookie: " + b"a=b;" * 500, b"Authorization: Bearer second"]))
        return b"\r\n".join(lines)

    def request(self) -> bytes:
        method, target, body = self.target()
        head = f"{method} {target} HTTP/1.1".encode("utf-8", "surrogateescape").replace(b"\xc3\xa9", b"\xe9")
        return head + b"\r\n" + self.headers(body) + b"\r\n\r\n" + (body or b"")

    def requests(self, count: int) -> list[bytes]:
        return [self.request() for _ in range(count)]
