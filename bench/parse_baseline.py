"""Parsing cost per message, on the messages of ``bench/messages.py``.

    python bench/parse_baseline.py [--messages 2000] [--rounds 3] [--hl7apy]

Measures, in messages per second (best of ``--rounds``): a plain split on ``\\r`` and ``|``; the
listener's own decoding (``mllp.decoding.decode_frame``: MSH-18, decode, normalise); a full
``hl7.parse`` (python-hl7); and, with ``--hl7apy``, ``hl7apy.parse_message`` on a tenth of them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.messages import messages  # noqa: E402


def best_rate(function, items, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, time.perf_counter() - started)
    return len(items) / best


def plain_split(text: str):
    return [segment.split("|") for segment in text.split("\r")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hl7apy", action="store_true", help="also hl7apy (slow)")
    args = parser.parse_args()
    import hl7

    from mllp.decoding import decode_frame

    texts = messages(args.messages, seed=7)
    raws = [t.encode("utf-8") for t in texts]
    sizes = sorted(len(r) for r in raws)
    print(f"{len(texts)} messages, {sizes[0]}–{sizes[-1]} bytes (median {sizes[len(sizes) // 2]})")
    runs = [
        ("plain split on \\r and |", plain_split, texts),
        ("mllp decode_frame (bytes → text)", decode_frame, raws),
        ("hl7.parse (python-hl7)", hl7.parse, texts),
    ]
    if args.hl7apy:
        from hl7apy.parser import parse_message

        def hl7apy_parse(text):
            return parse_message(text, find_groups=False)

        runs.append(("hl7apy.parse_message", hl7apy_parse, texts[: max(1, len(texts) // 10)]))
    for label, function, items in runs:
        print(f"{label:<36} {best_rate(function, items, args.rounds):>12,.0f} msg/s", flush=True)


if __name__ == "__main__":
    main()
