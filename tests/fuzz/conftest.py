"""The fuzz suite's settings (seed and counts, from the environment) and its real server, on each backend."""
from __future__ import annotations

import os
import time

import pytest

from tests.fuzz.hostile_requests import TOKEN
from tests.serving import Server

SEED = int(os.environ.get("PAMGATE_FUZZ_SEED", "20261201"))
FRAMES = int(os.environ.get("PAMGATE_FUZZ_FRAMES", "20000"))
REQUESTS = int(os.environ.get("PAMGATE_FUZZ_REQUESTS", "5000"))
#: frames per connection at most (the default mixes 10 to 400); a small value keeps one frame that ends its
#: connection from hiding the frames queued behind it, when hunting for failure classes
PER_CONNECTION = int(os.environ.get("PAMGATE_FUZZ_PER_CONNECTION", "0")) or None
#: a file to append every failing frame or request to (up to 200 per class), to hunt for minimal cases
DUMP = os.environ.get("PAMGATE_FUZZ_DUMP")
MAX_FRAME = 65536      # small, so that over-limit frames cost little to send

#: one line per fuzz test, printed at the end of the run (tests/conftest.py's pytest_terminal_summary)
FIGURES: list[str] = []


@pytest.fixture
def fuzz_server(tmp_path, store_url):
    """`pamgate serve` on the backend of `store_url` (tests/conftest.py: SQLite, then PostgreSQL or a skip)."""
    server = Server(tmp_path, {"limits": {"max_frame_bytes": MAX_FRAME}, "api": {"token": TOKEN}},
                    store_url=store_url).start()
    server.backend = store_url.split(":", 1)[0].split("+")[0]
    server.started = time.monotonic()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def figures_reported(request):
    """The lines a test added to FIGURES go into its report, which reaches the end of the run from a
    pytest-xdist worker too."""
    before = len(FIGURES)
    yield
    request.node.user_properties.extend(("figure", [f"fuzz (PAMGATE_FUZZ_SEED={SEED})", line])
                                        for line in FIGURES[before:])
