#!/bin/bash
# Two (or more) checkouts of pamgate, measured in turns on the realistic feed: on a shared VM two runs
# minutes apart differ by more than most changes, so only runs that alternate compare.
#
#   bench/alternate.sh MESSAGES ROUNDS CHECKOUT...      e.g. bench/alternate.sh 6000 3 . ../base
#
# Each run: a fresh `pamgate serve` of that checkout (its own .venv, a store in a temporary folder, port 0),
# driven by this checkout's bench/load.py at 1, 4 and 16 connections; one line per run: msg/s and p99 ms.
set -eu
N=$1; R=$2; shift 2
HERE=$(cd "$(dirname "$0")/.." && pwd)
for r in $(seq "$R"); do
  for tree in "$@"; do
    tree=$(cd "$tree" && pwd)
    d=$(mktemp -d)
    printf 'store: {url: "sqlite:///%s/bench.db"}\nlisteners: {mllp: [{endpoint: "tcp:0:interface=127.0.0.1"}], http: "tcp:0:interface=127.0.0.1"}\nlog: {level: warning}\n' "$d" > "$d/config.yaml"
    (cd "$tree" && exec .venv/bin/python -m pamgate.cli serve --config "$d/config.yaml") > "$d/out" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q "mllp listening" "$d/out" 2>/dev/null && break; sleep 0.2; done
    port=$(grep -o "mllp listening.*:[0-9]*)" "$d/out" | grep -o "[0-9]*)$" | tr -d ')')
    printf '%s  ' "$tree"
    "$HERE/.venv/bin/python" "$HERE/bench/load.py" 127.0.0.1 "$port" --connections 1,4,16 --messages "$N" \
        --feed realistic --warmup 300 | awk '/^ *[0-9]+ conn /{printf "%s conn: %s msg/s p99 %s ms   ", $1, $7, $13}'
    echo
    kill "$server"; wait "$server" 2>/dev/null || true
    rm -rf "$d"
  done
done
