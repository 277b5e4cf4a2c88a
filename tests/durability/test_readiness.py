"""/livez answers while the store is down (a supervisor does not restart a process that waits for its store);
/readyz says 503 with the reason, then 200 once the store is back. On a PostgreSQL server of the test's own."""
from __future__ import annotations

import time

from tests.durability.support import private_postgres, wait_until
from tests.serving import Server


def test_livez_stays_200_and_readyz_follows_the_store(tmp_path):
    with private_postgres() as pg:
        server = Server(tmp_path, store_url=pg.url).start()
        try:
            wait_until(lambda: server.http("GET", "/readyz")[0] == 200, timeout=30, what="ready at start")
            assert server.http("GET", "/livez") == (200, {"status": "ok"})

            pg.stop("immediate")
            status, body = server.http("GET", "/readyz")
            assert status == 503, body
            assert body["status"] == "unavailable" and body["error"] == "store.unavailable" and body["reason"]
            assert server.http("GET", "/healthz")[0] == 503         # the older name, the same answer
            assert server.http("GET", "/livez") == (200, {"status": "ok"})
            # the metrics still answer, in time for a scrape, and say the store is down
            started = time.monotonic()
            status, text = server.http("GET", "/metrics")
            assert status == 200 and time.monotonic() - started < 8
            assert b"\npamgate_store_up 0.0\n" in text

            pg.start()
            wait_until(lambda: server.http("GET", "/readyz")[0] == 200, timeout=60, every=0.5,
                       what="ready again once the store is back")
            assert server.http("GET", "/healthz") == (200, {"status": "ok"})
            assert server.proc.poll() is None
        finally:
            server.stop()
