#!/usr/bin/env bash
# What an output guardrail adds to a stream: time to first byte and to the whole answer,
# with the `pii` guardrail on the output and without it, side by side in one run, against
# the same mock upstream (lorem, 48 words at 200 tokens/s, 20 ms to first token).
#
#   bench/guard-ttft.sh [--no-build] [--rate N] [--seconds N]
#
# Uses bench/.target/release/{trestle,loadgen} (built by bench/run.sh or bench/soak.sh).
set -uo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$BENCH/.target}"
RATE=100; SECS=20; BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0 ;;
    --rate) RATE="$2"; shift ;;
    --seconds) SECS="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$BUILD" = 1 ]; then
  cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin trestle || exit 1
  cargo build --release --manifest-path "$BENCH/hyper-proxy/Cargo.toml" --bin loadgen || exit 1
fi
T="$CARGO_TARGET_DIR/release/trestle"; L="$CARGO_TARGET_DIR/release/loadgen"
W="$(mktemp -d /tmp/trestle-guard-ttft.XXXXXX)"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null' EXIT
"$T" mock --listen 127.0.0.1:18400 --mode lorem --ttft-ms 20 --tokens-per-sec 200 > "$W/mock.log" 2>&1 & PIDS+=($!)
cat > "$W/t.toml" <<TOML
[store]
enabled = false
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:18400/v1"
[guardrails.pii]
kind = "pii"
[routes.plain]
targets = ["up/m1"]
[routes.guarded]
targets = ["up/m1"]
guardrails = { output = ["pii"] }
TOML
"$T" serve --config "$W/t.toml" --listen 127.0.0.1:18401 > "$W/gw.log" 2>&1 & PIDS+=($!)
sleep 1
for route in plain guarded plain guarded; do
  printf '{"model":"%s","stream":true,"messages":[{"role":"user","content":"tell me a story"}]}' "$route" > "$W/$route.json"
  out="$("$L" --url http://127.0.0.1:18401/v1/chat/completions --body-file "$W/$route.json" \
    --rate "$RATE" --duration "$SECS" --warmup 2 --stream 2>&1 | tail -1)"
  echo "$route $out"
done | tee "$BENCH/results/guard-ttft.txt"
