"""`pamgate serve`: the MLLP listeners, the HTTP API and the dispatcher, until the process is stopped."""
from __future__ import annotations

from console.pages import mount
from engine.serve import serve as run_server


def serve(args) -> int:
    # the web console under /console/, on the API's HTTP listener
    return run_server(args.config, mount=mount)
