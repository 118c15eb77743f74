#!/usr/bin/env bash
# What OTLP costs, measured on this machine (not run in CI). See BENCHMARKS.md, "OTLP".
#
#   bench/otel.sh [--no-build] [--only export|ingest] [--rounds N] [--duration S]
#                 [--ingest-rate SPANS_PER_S] [--ingest-duration S]
#
# export: the gateway's throughput at 50 connections with `[otel]` export on and off, side by
#   side in one run. Two release gateways with the same routes (bench/trestle.toml, trace
#   store on) in front of one `trestle mock --mode lorem`; the second also has `[otel]`
#   pointed at bench/hyper-proxy's `otlp-sink` (takes every export, decodes nothing). Each
#   round runs wrk (-t1 -c50, non-streamed) against one gateway then the other, the order
#   swapped every round; reported: median req/s of each, the ratio, each gateway's CPU time
#   per 1,000 requests, and the exporter's counters (spans exported, dropped, failed).
# ingest: one release gateway; bench/otlp_load.py sends pre-encoded protobuf payloads of 500
#   spans to POST /v1/traces at a fixed rate (10,000 spans/s for 30 s by default), then counts
#   the rows in `app_spans` and reads `trestle_otlp_spans_total`.
#
# Needs wrk (installed with apt-get when missing, as bench/run.sh does) and a Python with the
# opentelemetry-proto package (the repository's .venv has it: scripts/test.sh makes it).
# Run it under `nice -n 19` on a shared machine. Output: one JSON line per measurement, and
# the logs in the /tmp/trestle-otelbench.* folder it names.
set -uo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$BENCH/.target}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
BUILD=1
ONLY=""
ROUNDS=5
DUR=10
INGEST_RATE=10000
INGEST_DUR=30
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0 ;;
    --only) ONLY="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --duration) DUR="$2"; shift ;;
    --ingest-rate) INGEST_RATE="$2"; shift ;;
    --ingest-duration) INGEST_DUR="$2"; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

TRESTLE="$CARGO_TARGET_DIR/release/trestle"
SINK="$CARGO_TARGET_DIR/release/otlp-sink"
WORK="$(mktemp -d /tmp/trestle-otelbench.XXXXXX)"
PIDS=()
MOCK=18100; SINK_PORT=18190; OFF=18201; ON=18202; INGEST=18300

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
wanted() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

start() {  # start NAME DIR CMD... -> $PID
  mkdir -p "$2"
  local name="$1" dir="$2"; shift 2
  (cd "$dir" && exec "$@") > "$WORK/$name.log" 2>&1 &
  PID=$!; PIDS+=("$PID")
}

wait_up() {  # wait_up PORT
  for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$1/health" && return 0
    curl -s -o /dev/null "http://127.0.0.1:$1/stats" && return 0
    sleep 0.05
  done
  echo "nothing answers on port $1 (logs in $WORK)" >&2; exit 1
}

cpu_ms() { python3 "$BENCH/procstat.py" cpu "$1"; }

if [ "$BUILD" = 1 ]; then
  log "building trestle and otlp-sink (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --release --bin trestle) > "$WORK/build.log" 2>&1 \
    || { tail -20 "$WORK/build.log" >&2; exit 1; }
  (cd "$BENCH/hyper-proxy" && cargo build --release --bin otlp-sink) >> "$WORK/build.log" 2>&1 \
    || { tail -20 "$WORK/build.log" >&2; exit 1; }
fi

# ---------------------------------------------------------------- export: on vs off
if wanted export; then
  if ! command -v wrk >/dev/null; then
    log "installing wrk (apt-get)"
    { apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; } > "$WORK/wrk-install.log" 2>&1
    command -v wrk >/dev/null || { echo "wrk is required" >&2; exit 1; }
  fi
  start mock "$WORK/mock" "$TRESTLE" mock --listen "127.0.0.1:$MOCK" --mode lorem
  start sink "$WORK/sink" "$SINK" "127.0.0.1:$SINK_PORT"; SINK_PID=$PID
  wait_up "$MOCK"; wait_up "$SINK_PORT"
  { cat "$BENCH/trestle.toml"; printf '\n[otel]\nendpoint = "http://127.0.0.1:%s"\n' "$SINK_PORT"; } > "$WORK/trestle-otel.toml"
  start off "$WORK/off" "$TRESTLE" serve --config "$BENCH/trestle.toml" --listen "127.0.0.1:$OFF"; OFF_PID=$PID
  start on "$WORK/on" "$TRESTLE" serve --config "$WORK/trestle-otel.toml" --listen "127.0.0.1:$ON"; ON_PID=$PID
  wait_up "$OFF"; wait_up "$ON"
  BODY="$WORK/body.json"
  printf '{"model":"bench","messages":[{"role":"user","content":"Write a few sentences about bridges."}],"max_tokens":128,"stream":false}' > "$BODY"

  measure() {  # measure NAME PORT PID -> one JSON line, and appends rps to $WORK/NAME.rps
    local before after out json
    before="$(cpu_ms "$3")"
    out="$(WRK_BODY="$BODY" wrk -t1 -c50 -d"${DUR}s" --timeout 10s -s "$BENCH/wrk-post.lua" \
      "http://127.0.0.1:$2/v1/chat/completions" 2>&1)"
    after="$(cpu_ms "$3")"
    json="$(sed -n 's/^WRKJSON {\(.*\)}$/\1/p' <<<"$out")"
    [ -n "$json" ] || { echo "wrk failed: $out" >&2; exit 1; }
    local requests rps
    requests="$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' <<<"$json")"
    rps="$(sed -n 's/.*"rps":\([0-9.]*\).*/\1/p' <<<"$json")"
    echo "$rps" >> "$WORK/$1.rps"
    echo "$(( (after - before) * 1000 / (requests > 0 ? requests : 1) ))" >> "$WORK/$1.cpu"
    echo "{\"bench\":\"otel-export\",\"gateway\":\"$1\",\"round\":$ROUND,\"cpu_ms\":$((after - before)),$json}"
    sleep 2  # the gateway's last commits and WAL checkpoint, before the other one runs
  }

  log "warming up both gateways"
  for port in $OFF $ON; do
    WRK_BODY="$BODY" wrk -t1 -c50 -d2s -s "$BENCH/wrk-post.lua" "http://127.0.0.1:$port/v1/chat/completions" > /dev/null 2>&1
  done
  for ROUND in $(seq 1 "$ROUNDS"); do
    log "round $ROUND of $ROUNDS (${DUR} s each)"
    if [ $((ROUND % 2)) = 1 ]; then
      measure off "$OFF" "$OFF_PID"; measure on "$ON" "$ON_PID"
    else
      measure on "$ON" "$ON_PID"; measure off "$OFF" "$OFF_PID"
    fi
  done
  sleep 2  # the last batches reach the sink
  ready="$(curl -s "http://127.0.0.1:$ON/ready")"
  sink="$(curl -s "http://127.0.0.1:$SINK_PORT/stats")"
  python3 - "$WORK" "$ready" "$sink" <<'PY'
import json, statistics, sys
work, ready, sink = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
def nums(name, kind):
    return [float(x) for x in open(f"{work}/{name}.{kind}").read().split()]
off, on = statistics.median(nums("off", "rps")), statistics.median(nums("on", "rps"))
# Rounds are pairs run back to back: the ratio within each round is steadier than medians.
paired = [b / a for a, b in zip(nums("off", "rps"), nums("on", "rps"))]
print(json.dumps({
    "bench": "otel-export", "summary": True,
    "off_rps_median": round(off, 1), "on_rps_median": round(on, 1),
    "on_over_off": round(on / off, 4),
    "on_over_off_paired_geomean": round(statistics.geometric_mean(paired), 4),
    "off_rps_rounds": nums("off", "rps"), "on_rps_rounds": nums("on", "rps"),
    "off_cpu_ms_per_1k": statistics.median(nums("off", "cpu")),
    "on_cpu_ms_per_1k": statistics.median(nums("on", "cpu")),
    "exporter": ready.get("otel"), "traces": ready.get("traces"), "sink": sink,
}))
PY
  cpu_sink="$(cpu_ms "$SINK_PID")"
  log "otlp-sink used ${cpu_sink} ms of CPU in all"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done; wait 2>/dev/null; PIDS=()
fi

# ---------------------------------------------------------------- ingest: 10,000 spans/s
if wanted ingest; then
  start ingest "$WORK/ingest" "$TRESTLE" serve --listen "127.0.0.1:$INGEST"; INGEST_PID=$PID
  wait_up "$INGEST"
  before="$(cpu_ms "$INGEST_PID")"
  "$PYTHON" "$BENCH/otlp_load.py" --url "http://127.0.0.1:$INGEST" \
    --db "$WORK/ingest/.trestle/trestle.db" --rate "$INGEST_RATE" --duration "$INGEST_DUR"
  after="$(cpu_ms "$INGEST_PID")"
  log "the ingesting gateway used $((after - before)) ms of CPU over the run"
fi
log "logs: $WORK"
