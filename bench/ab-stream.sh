#!/usr/bin/env bash
# Streamed throughput, side by side: alternating rounds of `loadgen --stream --conns 50` against
# each binary in turn (`proxy` stands for bench/hyper-proxy), a fresh process each round, all
# in front of one `trestle mock`; prints req/s and the process's CPU per 1,000 requests. The
# streamed counterpart of bench/ab.sh. See BENCHMARKS.md ("Performance, issue 16").
#
#   bench/ab-stream.sh CONFIG ROUNDS SECONDS BIN|proxy...
#
# CONFIG's routes must be `bench` on 127.0.0.1:18100 (bench/trestle.toml,
# bench/trestle-notrace.toml). Needs the release builds of trestle, hyper-proxy and loadgen
# in bench/.target, and curl.
set -u
CFG="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; ROUNDS="$2"; DUR="$3"; shift 3
R="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.target/release"
W="$(mktemp -d /tmp/trestle-ab-stream.XXXXXX)"
"$R/trestle" mock --listen 127.0.0.1:18100 --mode lorem > "$W/mock.log" 2>&1 &
MOCK=$!
trap 'kill $MOCK 2>/dev/null; rm -rf "$W"' EXIT
sleep 1
for m in bench m1; do
  printf '{"model":"%s","messages":[{"role":"user","content":"Write a few sentences about bridges."}],"max_tokens":128,"stream":true}' "$m" > "$W/body-$m.json"
done
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"
for r in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    if [ "$bin" = proxy ]; then
      "$R/hyper-proxy" 127.0.0.1:18130 127.0.0.1:18100 > "$W/proxy.log" 2>&1 &
      gw=$!; body="$W/body-m1.json"; sleep 0.3
    else
      mkdir -p "$W/$r"
      (cd "$W/$r" && rm -rf .trestle && exec "$bin" serve --config "$CFG" --listen 127.0.0.1:18130) > "$W/gw.log" 2>&1 &
      gw=$!; body="$W/body-bench.json"
      for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18130/health && break; sleep 0.1; done
    fi
    url=http://127.0.0.1:18130/v1/chat/completions
    "$R/loadgen" --url "$url" --body-file "$body" --stream --conns 50 --duration 1 --warmup 0 > /dev/null 2>&1
    t0="$(ticks "$gw")"
    out="$("$R/loadgen" --url "$url" --body-file "$body" --stream --conns 50 --duration "$DUR" --warmup 0.5 2>&1 | tail -1)"
    t1="$(ticks "$gw")"
    read -r rps req < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["rps"], d["requests"])' "$out")
    echo "$(basename "$bin") round $r: $rps req/s, $(python3 -c "print(round(($t1 - $t0) * 1000 / $hz / max($req, 1) * 1000, 1))") CPU ms per 1,000 requests"
    kill "$gw"; wait "$gw" 2>/dev/null
  done
done
