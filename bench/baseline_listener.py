"""An ACK-only MLLP listener, to measure the ceiling the real server is compared with.

    python bench/baseline_listener.py [--port 0] [--mode bare|pamgate] [--seconds 600]

``bare``: a minimal Twisted protocol, hand framing, an ``AA`` echoing MSH-10; nothing stored.
``pamgate``: ``mllp.listener.MLLPServerFactory`` with a handler that only builds the ACK, so the
difference between the two is the cost of our listener (framing, decoding, ACK building, ordering).

Prints ``listening on 127.0.0.1:PORT`` once ready, and stops after ``--seconds`` (loopback only).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, endpoints, protocol, reactor  # noqa: E402


class BareAck(protocol.Protocol):
    def connectionMade(self):
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\x1c\r")
            if end < 0:
                return
            start = self.buffer.find(b"\x0b")
            message, self.buffer = self.buffer[start + 1 : end], self.buffer[end + 2 :]
            msh = message.split(b"\r", 1)[0].split(b"|")
            control = msh[9] if len(msh) > 9 else b""
            self.transport.write(
                b"\x0bMSH|^~\\&|ACK|BENCH|||20250101000000||ACK|" + control
                + b"|P|2.5\rMSA|AA|" + control + b"\r\x1c\r"
            )


def pamgate_factory():
    import structlog

    from mllp.ack import build_ack
    from mllp.listener import ListenerSettings, MLLPServerFactory

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    def ack_only(frame):
        return defer.succeed(build_ack(frame.text, "AA"))

    return MLLPServerFactory(ack_only, settings=ListenerSettings(name="bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=["bare", "pamgate"], default="bare")
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long")
    args = parser.parse_args()
    factory = protocol.Factory.forProtocol(BareAck) if args.mode == "bare" else pamgate_factory()
    endpoint = endpoints.TCP4ServerEndpoint(reactor, args.port, interface="127.0.0.1")

    def ready(port):
        print(f"listening on 127.0.0.1:{port.getHost().port} ({args.mode})", flush=True)

    def failed(failure):
        print(f"cannot listen: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
        reactor.stop()

    endpoint.listen(factory).addCallbacks(ready, failed)
    reactor.callLater(args.seconds, reactor.stop)
    reactor.run()


if __name__ == "__main__":
    main()
