"""`pamgate serve` with a mutual-TLS listener configured by its endpoint string."""
import ssl

import pytest

from mllp.client import BlockingMLLPClient, MLLPError
from tests.builders import adt, zfa_2111
from tests.serving import Server, ack_code


def context(pki, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if with_cert:
        ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return ctx


def test_serve_mutual_tls(tmp_path, pki):
    endpoint = (f"ssl:0:interface=127.0.0.1:privateKey={pki}/server.key:certKey={pki}/server.crt"
                f":caCertsDir={pki}/cas")
    server = Server(tmp_path, {"listeners": {"mllp": [{"endpoint": endpoint}]}}).start()
    try:
        with BlockingMLLPClient("localhost", server.mllp_port, timeout=30,
                                ssl_context=context(pki, True)) as c:
            assert ack_code(c.send(adt("A01", zfa=zfa_2111("INO", "IC")))) == "AA"
        with pytest.raises((ssl.SSLError, MLLPError, ConnectionError, OSError)):
            with BlockingMLLPClient("localhost", server.mllp_port, timeout=30,
                                    ssl_context=context(pki, False)) as c:
                c.send(adt("A01", control_id="NOCERT-1"))
    finally:
        server.stop()
