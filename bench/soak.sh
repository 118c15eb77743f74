#!/usr/bin/env bash
# The soak: Trestle at a steady rate against two mock upstreams with 10% faults, for a long
# time (30 minutes by default), with its RSS, open file descriptors and trace counters sampled
# every minute. RSS must be flat after warm-up. See BENCHMARKS.md, "Soak".
#
#   bench/soak.sh [--minutes N] [--rate REQ_PER_SEC] [--no-build]
#
# Output: bench/results/soak-<date>.csv (one row per sample), .svg (the plot) and .md (the
# summary BENCHMARKS.md quotes). All traffic stays on 127.0.0.1. Not run in CI.
set -uo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
RESULTS="$BENCH/results"
MINUTES=30
RATE=400
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES="$2"; shift ;;
    --rate) RATE="$2"; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$BENCH/.target}"
TRESTLE="$CARGO_TARGET_DIR/release/trestle"
LOADGEN="$CARGO_TARGET_DIR/release/loadgen"
if [ "$BUILD" = 1 ]; then
  cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin trestle || exit 1
  cargo build --release --manifest-path "$BENCH/hyper-proxy/Cargo.toml" --bin loadgen || exit 1
fi

WORK="$(mktemp -d /tmp/trestle-soak.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

FAULTS="500,429,429-bare,503,hang,slow,slow-ttft,stall,malformed,disconnect,reset"
"$TRESTLE" mock --listen 127.0.0.1:18200 --mode lorem --lorem-words 24 --fault-rate 0.1 \
  --faults "$FAULTS" --seed 1 > "$WORK/mock-a.log" 2>&1 & PIDS+=($!)
"$TRESTLE" mock --listen 127.0.0.1:18201 --mode lorem --lorem-words 24 --fault-rate 0.1 \
  --faults "$FAULTS" --seed 2 > "$WORK/mock-b.log" 2>&1 & PIDS+=($!)
cat > "$WORK/trestle.toml" <<TOML
[providers.a]
kind = "openai"
base_url = "http://127.0.0.1:18200/v1"
[providers.b]
kind = "openai"
base_url = "http://127.0.0.1:18201/v1"
[routes.soak]
class = "progressive"
targets = ["a/m1", "b/m1"]
timeout_ms = 2000
ttft_timeout_ms = 400
attempt_timeout_ms = 500
retries = 1
[routes.soak.fallback]
template = "Busy: {{ last_user_message }}"
TOML
(cd "$WORK" && RUST_LOG=warn exec "$TRESTLE" serve --config trestle.toml --listen 127.0.0.1:18202 \
  > "$WORK/trestle.log" 2>&1) & PIDS+=($!)
sleep 1
GW_PID="$(pgrep -f 'trestle serve --config trestle.toml --listen 127.0.0.1:18202' | head -1)"
[ -n "$GW_PID" ] || { echo "trestle did not start: $(cat "$WORK/trestle.log")" >&2; exit 1; }

# A fifth of the traffic streamed; 150 distinct prompts so the cache level has something.
printf '{"model":"soak","messages":[{"role":"user","content":"soak question"}]}' > "$WORK/plain.json"
printf '{"model":"soak","stream":true,"messages":[{"role":"user","content":"soak stream"}]}' > "$WORK/stream.json"
SECS=$((MINUTES * 60))
"$LOADGEN" --url http://127.0.0.1:18202/v1/chat/completions --body-file "$WORK/plain.json" \
  --rate $((RATE * 4 / 5)) --max-inflight 2000 --duration "$SECS" --warmup 0 \
  > "$WORK/load-plain.json" 2>&1 & PIDS+=($!)
"$LOADGEN" --url http://127.0.0.1:18202/v1/chat/completions --body-file "$WORK/stream.json" \
  --rate $((RATE / 5)) --max-inflight 2000 --duration "$SECS" --warmup 0 --stream \
  > "$WORK/load-stream.json" 2>&1 & PIDS+=($!)

STAMP="$(date -u +%Y-%m-%d)"
CSV="$RESULTS/soak-$STAMP.csv"
mkdir -p "$RESULTS"
echo "minute,rss_kib,fds,traces_recorded,traces_written,traces_dropped,traces_failed,model_served_share" > "$CSV"
sample() {
  local rss fds ready stats
  rss="$(sed -n 's/^VmRSS:\s*\([0-9]*\).*/\1/p' "/proc/$GW_PID/status")"
  fds="$(ls "/proc/$GW_PID/fd" | wc -l)"
  ready="$(curl -s http://127.0.0.1:18202/ready)"
  stats="$(curl -s 'http://127.0.0.1:18202/v1/stats?window_s=60')"
  python3 - "$1" "$rss" "$fds" "$ready" "$stats" >> "$CSV" <<'PY'
import json, sys
minute, rss, fds, ready, stats = sys.argv[1:6]
t = json.loads(ready)["traces"]
share = json.loads(stats)["routes"].get("soak", {}).get("model_served_share", "")
print(",".join(map(str, [minute, rss, fds, t["recorded"], t["written"], t["dropped"], t["failed"], share])))
PY
}
sample 0
for m in $(seq 1 "$MINUTES"); do
  sleep 60
  kill -0 "$GW_PID" 2>/dev/null || { echo "trestle exited during the soak" >&2; exit 1; }
  sample "$m"
  tail -1 "$CSV"
done
sleep 5
python3 "$BENCH/soak_report.py" "$CSV" "$WORK/load-plain.json" "$WORK/load-stream.json" \
  "$RATE" "$FAULTS"
