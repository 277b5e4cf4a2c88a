"""Soak: a long run of the realistic feed through one `pamgate serve`, its memory, store and throughput.

    python bench/soak.py [--messages 1000000] [--every 50000] [--connections 16] [--seed 13] [--keep]

The feed (bench/feed.py: the CPage event mix over a long-tailed population) is written to a file ahead of the
run, so neither its generation nor its per-patient state is on the measured path or in the server's memory.
A real `pamgate serve` (bench/e2e.py's: fresh SQLite store, WAL, ACK after its commit is on the disk) takes
the messages over MLLP on `--connections` connections, each waiting for its ACK (bench/load.py's driver);
every ACK must be `AA`. After every `--every` messages, between two intervals, one row: messages so far,
elapsed wall time, the interval's throughput and p99 ACK latency, the resident memory (VmRSS) of the server
and of its apply process, the CPU each used per message in the interval, the store's size (the SQLite file
and its -wal) and bytes per message, the journal / outbox / audit rows, the apply process's read system
calls and bytes read per message (/proc/PID/io: the store's page reads, a count the machine's load does not
change), and the machine's load (1 min).

At the end, the issue 13 targets are judged:
- memory drift of each process between the row at a tenth of the run (the 100,000th message of a million)
  and the last row, under 10 %;
- store growth linear: the least-squares line of store size against messages (its slope is the bytes per
  message), its largest residual, and the slope of the second half against the first;
- throughput of the last interval at least 90 % of the first; since wall throughput on a shared machine
  follows the machine's load, the CPU per message of server and apply process, first against last, is given
  beside it, and the apply process's CPU over the server's (the server's work per message does not depend on
  the store, so the ratio takes out what the load adds to both).

Rows go to var/soak-<time>.csv as they come (a partial run keeps what it measured), and with the summary to
var/soak-<time>.json; the server's stderr (warnings and errors) to var/soak-<time>.serve.log. The store
and the feed file are under var/soak-<time>/, removed at the end unless --keep. At the end, the bytes per
message of each table with its indexes (SQLite's dbstat).

    python bench/soak.py --table var/soak-<time>.csv [--every 100000]

prints the Markdown table of a run's rows (finished or still going) and its judgement so far.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.e2e import serving  # noqa: E402
from bench.feed import Feed  # noqa: E402
from bench.load import drive, percentile  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
COUNTED = ("journal", "outbox", "audit", "patient")
FIELDS = ("messages", "elapsed_s", "msg_per_s", "p99_ms", "not_aa", "server_rss_mb", "apply_rss_mb",
          "server_cpu_us_per_msg", "apply_cpu_us_per_msg", "db_bytes", "wal_bytes", "store_bytes",
          "bytes_per_msg", *(f"{t}_rows" for t in COUNTED), "apply_reads_per_msg", "apply_read_kb_per_msg", "apply_pid", "load1")


# --- the processes, from /proc ---------------------------------------------------------------------

def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS      # utime, stime: fields 14 and 15 of stat


def reads(pid: int) -> tuple[int, int]:
    """(read system calls, bytes read) of the process so far: the store's page reads (SQLite's page cache
    misses, the checkpoint's copy of the WAL), counted the same on a busy machine as on a quiet one."""
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(io["syscr"]), int(io["rchar"])


def apply_pid(server: int) -> int:
    """The server's apply process (engine/apply_process.py), found among its children."""
    for children in Path(f"/proc/{server}/task").glob("*/children"):
        for pid in children.read_text().split():
            if b"engine.apply_process" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
    raise RuntimeError(f"process {server} has no apply process")


# --- the store -------------------------------------------------------------------------------------

def store_sizes(db: Path) -> tuple[int, int]:
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size, wal.stat().st_size if wal.exists() else 0


def row_counts(db: Path) -> dict[str, int]:
    """Rows of the tables that grow with the feed: a read-only connection, between two intervals."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}
    finally:
        con.close()


def table_bytes(db: Path) -> dict[str, int]:
    """Bytes of each table with its indexes (SQLite's dbstat), largest first: where a message's bytes go."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute("SELECT m.tbl_name, sum(s.pgsize) FROM dbstat s JOIN sqlite_master m ON m.name = s.name "
                           "GROUP BY m.tbl_name ORDER BY 2 DESC").fetchall()
    finally:
        con.close()
    return dict(rows)


def write_feed(path: Path, messages: int, seed: int) -> None:
    """The run's messages, one a line (a message's segments are split by CR, never LF)."""
    feed = Feed(seed=seed)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for _ in range(messages):
            out.write(feed.next() + "\n")


# --- the judgement ---------------------------------------------------------------------------------

def line_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares: (slope, intercept)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def judge(rows: list[dict], reference: int) -> dict:
    last = rows[-1]
    ref = next((r for r in rows if r["messages"] >= reference), rows[0])
    out: dict = {"reference_row": ref["messages"], "last_row": last["messages"]}
    for side in ("server", "apply"):
        drift = last[f"{side}_rss_mb"] / ref[f"{side}_rss_mb"] - 1
        out[f"{side}_rss_drift"] = drift
        out[f"{side}_rss_met"] = abs(drift) < 0.10
    xs = [r["messages"] for r in rows]
    ys = [r["store_bytes"] for r in rows]
    slope, intercept = line_fit(xs, ys)
    residuals = [y - (slope * x + intercept) for x, y in zip(xs, ys)]
    half = len(rows) // 2
    first = line_fit(xs[:half + 1], ys[:half + 1])[0] if half >= 1 else slope
    second = line_fit(xs[half:], ys[half:])[0] if len(rows) - half >= 2 else slope
    out.update(bytes_per_msg=slope, intercept_bytes=intercept,
               max_residual_bytes=max(abs(r) for r in residuals),
               max_residual_share=max(abs(r) for r in residuals) / ys[-1],
               slope_first_half=first, slope_second_half=second,
               slope_ratio=second / first if first else float("nan"))
    out["store_linear_met"] = out["max_residual_share"] < 0.05 and abs(out["slope_ratio"] - 1) < 0.10
    out["throughput_ratio"] = last["msg_per_s"] / rows[0]["msg_per_s"]
    out["throughput_met"] = out["throughput_ratio"] >= 0.90
    cpu_first = rows[0]["server_cpu_us_per_msg"] + rows[0]["apply_cpu_us_per_msg"]
    cpu_last = last["server_cpu_us_per_msg"] + last["apply_cpu_us_per_msg"]
    out["cpu_per_msg_ratio"] = cpu_last / cpu_first
    # the server's work per message does not depend on the store: the apply process's CPU over the server's
    # takes out what a loaded machine adds to both (shared caches, steal)
    share = [r["apply_cpu_us_per_msg"] / r["server_cpu_us_per_msg"] for r in (rows[0], last)]
    out["apply_over_server_cpu_ratio"] = share[1] / share[0]
    out["load1_first"], out["load1_last"] = rows[0]["load1"], last["load1"]
    out["not_aa"] = sum(r["not_aa"] for r in rows)
    return out


def summary_text(j: dict) -> str:
    yes = {True: "met", False: "NOT met"}
    return "\n".join([
        f"memory (row {j['reference_row']:,} to row {j['last_row']:,}): server {j['server_rss_drift']:+.1%} "
        f"({yes[j['server_rss_met']]}), apply process {j['apply_rss_drift']:+.1%} ({yes[j['apply_rss_met']]})",
        f"store: {j['bytes_per_msg']:,.0f} bytes per message (least squares), largest residual "
        f"{j['max_residual_bytes'] / 1e6:,.1f} MB ({j['max_residual_share']:.1%} of the last size); slope of the "
        f"second half / first half {j['slope_ratio']:.3f} ({yes[j['store_linear_met']]})",
        f"throughput: last interval / first {j['throughput_ratio']:.2f} ({yes[j['throughput_met']]}; load "
        f"{j['load1_first']:.1f} then {j['load1_last']:.1f}); CPU per message of server + apply process, "
        f"last / first {j['cpu_per_msg_ratio']:.2f}; apply process's CPU over the server's, last / first "
        f"{j['apply_over_server_cpu_ratio']:.2f} (the store side's cost, the machine's load taken out)",
        f"ACKs not AA: {j['not_aa']}",
    ])


# --- the run ---------------------------------------------------------------------------------------

def soak(args, server, port, db: Path, feed_file: Path, out_csv: Path, rows: list[dict]) -> None:
    """Drive the feed, appending a row to `rows` (and to `out_csv`) every `args.every` messages."""
    apply = apply_pid(server.pid)
    cpu = {"server": cpu_seconds(server.pid), "apply": cpu_seconds(apply)}
    io = reads(apply)
    started = time.perf_counter()
    sent = 0
    with feed_file.open(encoding="utf-8", newline="\n") as feed, out_csv.open("w", newline="") as out:
        writer = csv.DictWriter(out, FIELDS)
        writer.writeheader()
        print("| " + " | ".join(FIELDS) + " |", flush=True)
        while sent < args.messages:
            texts = [line.rstrip("\n") for line in itertools.islice(feed, min(args.every, args.messages - sent))]
            latencies, problems, elapsed = drive("127.0.0.1", port, texts, args.connections, args.timeout)
            sent += len(texts)
            if len(latencies) != len(texts):
                raise RuntimeError(f"{len(texts) - len(latencies)} messages without an ACK")
            now = apply_pid(server.pid)
            if now != apply:      # the apply process was restarted: its CPU counts from zero
                print(f"apply process restarted: {apply} -> {now}", flush=True)
                apply, cpu["apply"], io = now, 0.0, (0, 0)
            spent = {}
            for side, pid in (("server", server.pid), ("apply", apply)):
                seconds = cpu_seconds(pid)
                spent[side], cpu[side] = seconds - cpu[side], seconds
            io, before = reads(apply), io
            db_bytes, wal_bytes = store_sizes(db)
            row = {"messages": sent, "elapsed_s": round(time.perf_counter() - started, 1),
                   "msg_per_s": round(len(texts) / elapsed, 1),
                   "p99_ms": round(percentile(latencies, 0.99) * 1000, 2), "not_aa": sum(problems.values()),
                   "server_rss_mb": round(rss_bytes(server.pid) / 2**20, 1),
                   "apply_rss_mb": round(rss_bytes(apply) / 2**20, 1),
                   "server_cpu_us_per_msg": round(spent["server"] / len(texts) * 1e6),
                   "apply_cpu_us_per_msg": round(spent["apply"] / len(texts) * 1e6),
                   "db_bytes": db_bytes, "wal_bytes": wal_bytes, "store_bytes": db_bytes + wal_bytes,
                   "bytes_per_msg": round((db_bytes + wal_bytes) / sent),
                   **{f"{t}_rows": n for t, n in row_counts(db).items()},
                   "apply_reads_per_msg": round((io[0] - before[0]) / len(texts), 1),
                   "apply_read_kb_per_msg": round((io[1] - before[1]) / len(texts) / 1024, 1),
                   "apply_pid": apply, "load1": round(os.getloadavg()[0], 2)}
            if problems:
                print(f"not AA: {problems}", flush=True)
            rows.append(row)
            writer.writerow(row)
            out.flush()
            print("| " + " | ".join(str(row[f]) for f in FIELDS) + " |", flush=True)


TABLE = (("messages", "{:,}"), ("elapsed_s", "{:,.0f}"), ("msg_per_s", "{:,.0f}"), ("p99_ms", "{:.0f}"),
         ("server_rss_mb", "{:.1f}"), ("apply_rss_mb", "{:.1f}"), ("server_cpu_us_per_msg", "{:.0f}"),
         ("apply_cpu_us_per_msg", "{:.0f}"), ("store_bytes", "{:,}"), ("bytes_per_msg", "{:,}"),
         ("load1", "{:.1f}"), ("not_aa", "{}"))


def print_table(path: str, every: int, reference: int) -> None:
    with open(path, newline="") as f:
        rows = [{k: float(v) if "." in v else int(v) for k, v in r.items()} for r in csv.DictReader(f)]
    print("| " + " | ".join(name for name, _ in TABLE) + " |")
    print("|" + "---|" * len(TABLE))
    for r in rows:
        if r["messages"] % every == 0 or r is rows[-1]:
            print("| " + " | ".join(form.format(r[name]) for name, form in TABLE) + " |")
    print("\n" + summary_text(judge(rows, reference)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--every", type=int, default=50_000, help="messages between two rows")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--seed", type=int, default=13, help="the feed's series (a fresh store each run)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one ACK")
    p.add_argument("--keep", action="store_true", help="keep the store and the feed file (var/soak-<time>/)")
    p.add_argument("--table", metavar="CSV", help="only print the Markdown table and the judgement of a run's "
                   "rows (a finished or a partial run's CSV), every --every messages")
    args = p.parse_args()
    if args.table:
        print_table(args.table, args.every, reference=100_000)
        return
    if args.messages < 1 or args.every < 1:
        p.error("--messages and --every must be positive")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    var = ROOT / "var"
    scratch = var / f"soak-{stamp}"
    scratch.mkdir(parents=True)
    out_csv, out_json, serve_log = (var / f"soak-{stamp}{ext}" for ext in (".csv", ".json", ".serve.log"))
    feed_file = scratch / "feed.txt"
    print(f"soak: {args.messages:,} messages of the realistic feed (seed {args.seed}), {args.connections} "
          f"connections, a row every {args.every:,}; rows to {out_csv}", flush=True)
    t = time.perf_counter()
    write_feed(feed_file, args.messages, args.seed)
    print(f"feed written ahead: {feed_file.stat().st_size / 1e6:,.0f} MB in {time.perf_counter() - t:.0f} s",
          flush=True)
    rows: list[dict] = []
    # stopped by SIGTERM as by ^C: the finally below still writes the summary of the rows so far
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("soak: stopped by SIGTERM"))
    try:
        with serve_log.open("w") as log, serving(str(scratch), stderr=log) as (server, port):
            soak(args, server, port, scratch / "bench.db", feed_file, out_csv, rows)
    finally:
        if rows:
            verdict = judge(rows, reference=max(args.every, args.messages // 10))
            print("\n" + summary_text(verdict), flush=True)
            verdict["table_bytes_per_msg"] = {t: round(n / rows[-1]["messages"])
                                              for t, n in table_bytes(scratch / "bench.db").items()}
            print("bytes per message by table (with its indexes): " + ", ".join(
                f"{t} {n:,}" for t, n in verdict["table_bytes_per_msg"].items()), flush=True)
            out_json.write_text(json.dumps({"args": vars(args), "rows": rows, "summary": verdict}, indent=1))
            print(f"rows and summary: {out_json}", flush=True)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
