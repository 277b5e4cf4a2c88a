"""`pamgate serve`: the MLLP listeners, the HTTP API and the dispatcher, until the process is stopped."""
from __future__ import annotations

from engine.serve import serve as run_server


def serve(args) -> int:
    return run_server(args.config)
