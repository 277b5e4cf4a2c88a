"""`pamgate replay`: message files replayed in-process or over MLLP, ACKs and expectations checked."""
from __future__ import annotations

from conformance.replay import main


def replay(args) -> int:
    return main(args)
