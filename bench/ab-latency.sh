#!/usr/bin/env bash
# Added latency at one connection, measured the way the issue-16 target reads it: the mock
# upstream alone (the floor), the bare hyper proxy, and one or more trestle builds, each in its
# own round of `wrk -t1 -c1 --latency`, alternating, a fresh process each round. Prints every
# round's p50 and p99, then each target's median p50 minus the floor's median: the added p50.
# Single runs of a few seconds move by tens of microseconds on a shared 2-core machine;
# alternating rounds and medians are what make a 10 µs target readable at all.
#
#   bench/ab-latency.sh CONFIG ROUNDS SECONDS PROXY_BIN TRESTLE_BIN [TRESTLE_BIN...]
#
# CONFIG's routes must be `bench` on 127.0.0.1:18100 (bench/trestle.toml,
# bench/trestle-notrace.toml). The first TRESTLE_BIN also runs `trestle mock`. Needs wrk, curl.
set -u
CFG="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; ROUNDS="$2"; DUR="$3"; PROXY="$4"; shift 4
BINS=("$@")
. "$(dirname "${BASH_SOURCE[0]}")/ab-lib.sh"
ab_setup "${BINS[0]}"
# wrk prints percentiles as 98.00us / 1.34ms / 1.02s; in microseconds:
us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else print n * 1000000 }'; }
measure() {  # measure NAME URL
  wrk -t1 -c1 -d1s -s "$W/post.lua" "$2" > /dev/null
  local out p50 p99
  out="$(wrk -t1 -c1 -d"${DUR}s" --latency -s "$W/post.lua" "$2")"
  p50="$(us "$(echo "$out" | awk '$1 == "50%" {print $2}')")"
  p99="$(us "$(echo "$out" | awk '$1 == "99%" {print $2}')")"
  echo "$1 $p50 $p99" >> "$W/rounds"
  printf '%-12s round %s: p50 %6.1f µs  p99 %7.1f µs\n' "$1" "$r" "$p50" "$p99"
}
serve() {  # serve NAME CMD...: starts CMD on :18130, measures, stops it
  local name="$1"; shift
  "$@" > "$W/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18130/v1/models && break; sleep 0.1; done
  measure "$name" http://127.0.0.1:18130/v1/chat/completions
  kill "$pid"; wait "$pid" 2>/dev/null
}
for r in $(seq "$ROUNDS"); do
  measure floor http://127.0.0.1:18100/v1/chat/completions
  serve proxy "$PROXY" 127.0.0.1:18130 127.0.0.1:18100
  i=0
  for bin in "${BINS[@]}"; do
    i=$((i + 1))
    mkdir -p "$W/t$i-$r"
    serve "trestle-$i" sh -c "cd '$W/t$i-$r' && exec '$bin' serve --config '$CFG' --listen 127.0.0.1:18130"
  done
done
python3 - "$W/rounds" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
p50 = {}
for name, a, _ in rows:
    p50.setdefault(name, []).append(float(a))
floor = statistics.median(p50["floor"])
print(f"\nmedian p50: floor {floor:.1f} µs")
for name, values in p50.items():
    if name != "floor":
        print(f"{name:12s} median p50 {statistics.median(values):7.1f} µs, added {statistics.median(values) - floor:6.1f} µs")
PY
