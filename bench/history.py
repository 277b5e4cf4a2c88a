"""History growth: the cost of one message and of one decision for a patient with a long history.

    python bench/history.py [--up-to 10000] [--at 10,100,1000,10000] [--samples 50]

One patient on a fresh SQLite file (WAL, synchronous=FULL) gets messages in process, through the pipeline
and the group commit's run_batch: an A04 with a new visit each time, consent IC / INC alternating (as issue
13 measured). At each history length asked, `--samples` more messages are timed one transaction each, then
`--samples` decisions (POST /v1/decisions's operation, in process); the median of each is printed, wall
time (the commit's fsync included) and the thread's CPU time, with the ratio to the first length. The
history between the lengths is filled in batches of 200 messages.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consent_store.store import Store  # noqa: E402
from engine.commit import run_batch  # noqa: E402
from engine.config import Config  # noqa: E402
from engine.domain import DecisionRequest  # noqa: E402
from engine.serve import build_pipeline  # noqa: E402

T0 = datetime(2000, 1, 3, 9, 0, tzinfo=timezone.utc)
# received after every collection date the messages carry (one dated ahead of the clock is refused)
RECEIVED = datetime(2020, 1, 1, tzinfo=timezone.utc)
IPP, AUTHORITY = "424242", "HOSP-B"


def message(i: int) -> str:
    when = (T0 + timedelta(hours=12 * i)).strftime("%Y%m%d%H%M%S")
    consult = "IC" if i % 2 else "INC"
    visit, cid = f"V{i:07d}", f"B{i:09d}"
    return "\r".join([
        f"MSH|^~\\&|GAM-B|HOSP-B|DPI|HOSP-B|{when}||ADT^A04^ADT_A01|{cid}|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8|||2.11^IHE_FRANCE-2.11-PAM",
        f"EVN||{when}||||{when}",
        f"PID|1||{IPP}^^^{AUTHORITY}&1.2.250.1.71.1.2.2&ISO^PI||DURAND^ANNE^^^^^L||19700101|F||||||||||NDA{visit}^^^{AUTHORITY}^AN||||||||||||||VALI",
        f"PV1|1|O|||||801234567897^MARTIN^Paul^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS||||||||||||{visit}^^^{AUTHORITY}^VN|||||||||||||||||||||||||{when}",
        f"ZBE|M{i:07d}^HOSP-B|{when}||INSERT|N||^^^^^HOSP-B^UF^^^DIAL||HMS",
        f"ZFA|ACTIF|{when}|||||||NA||{consult}|{when}",
    ])


def apply(store, pipeline, texts, received_at):
    works = [pipeline.prepare(t, t.encode(), received_at) for t in texts]
    results, committed = run_batch(store, [(w.run, w.keys()) for w in works])
    assert committed and all(ok and v.code == "AA" for ok, v in results), results[:1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--at", default="10,100,1000,10000")
    ap.add_argument("--samples", type=int, default=50)
    args = ap.parse_args()
    levels = [int(x) for x in args.at.split(",")]
    pipeline = build_pipeline(Config())
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'history.db'}")
        store.upgrade()
        n, rows = 0, []
        fill_started = time.perf_counter()
        for level in levels:
            while n < level:
                k = min(200, level - n)
                apply(store, pipeline, [message(i) for i in range(n, n + k)], RECEIVED)
                n += k
            msg_times, msg_cpu = [], []
            for _ in range(args.samples):
                t = message(n)
                started, cpu = time.perf_counter(), time.thread_time()
                apply(store, pipeline, [t], RECEIVED)
                msg_times.append(time.perf_counter() - started)
                msg_cpu.append(time.thread_time() - cpu)
                n += 1
            now = T0 + timedelta(hours=12 * n)
            dec_times, dec_cpu = [], []
            for j in range(args.samples):
                req = DecisionRequest(action="consult", user=f"dr-{j % 5}", profession="10")
                started, cpu = time.perf_counter(), time.thread_time()
                with store.transaction() as uow:
                    pipeline.decide(uow, {"id": IPP, "authority": AUTHORITY}, req, now)
                dec_times.append(time.perf_counter() - started)
                dec_cpu.append(time.thread_time() - cpu)
            rows.append((level, msg_times, dec_times, msg_cpu, dec_cpu))
            print(f"history {level:>6}: message p50 {_ms(msg_times, 50)} ms (CPU {_ms(msg_cpu, 50)}); "
                  f"decision p50 {_ms(dec_times, 50)} ms (CPU {_ms(dec_cpu, 50)})", flush=True)
        store.dispose()
    print(f"\n{n} messages for one patient in {time.perf_counter() - fill_started:.1f} s (fill included)\n")
    med = [[statistics.median(x) for x in r[1:]] for r in rows]
    print("| history | message p50 (wall, commit and fsync included) | × | message CPU p50 | × | "
          "decision p50 (wall) | × | decision CPU p50 | × |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (level, m, d, mc, dc), r in zip(rows, med):
        print(f"| {level:,} | {_ms(m, 50)} ms | {r[0] / med[0][0]:.2f}× | {_ms(mc, 50)} ms | {r[2] / med[0][2]:.2f}× | "
              f"{_ms(d, 50)} ms | {r[1] / med[0][1]:.2f}× | {_ms(dc, 50)} ms | {r[3] / med[0][3]:.2f}× |")


def _ms(values, pct) -> str:
    s = sorted(values)
    return f"{s[min(len(s) - 1, int(len(s) * pct / 100))] * 1000:.2f}"


if __name__ == "__main__":
    main()
