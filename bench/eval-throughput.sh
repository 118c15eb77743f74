#!/usr/bin/env bash
# Eval throughput and memory: `trestle eval run` against a gateway with the placeholder model
# (instant answers, traces recorded), at concurrency 32.
#   1. 1,000 cases: wall time, cases/s, traces written vs dropped.
#   2. 100,000 cases: the runner's RSS sampled every second, to show it stays flat while
#      cases are processed (the dataset is loaded once at the start).
# Not run in CI. Uses the release build (BENCH_TARGET_DIR, default bench/.target).
#
#   bench/eval-throughput.sh [--no-build] [--big N]
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
BIG=100000
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0 ;;
    --big) BIG="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$BENCH/.target}"
TRESTLE="${TRESTLE_BIN:-$CARGO_TARGET_DIR/release/trestle}"
if [ "$BUILD" = 1 ] && [ -z "${TRESTLE_BIN:-}" ]; then
    cargo build --release --bin trestle --manifest-path "$ROOT/Cargo.toml"
fi
WORK="$(mktemp -d /tmp/trestle-evalbench.XXXXXX)"
cd "$WORK"
PORT=18611
GW=""
trap '[ -n "$GW" ] && kill "$GW" 2>/dev/null; true' EXIT

python3 - "$BIG" <<'PY'
import json, sys
cats = ["returns", "shipping", "billing", "account"]
for n, name in ((1000, "small"), (int(sys.argv[1]), "big")):
    with open(f"{name}.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"c{i}", "category": cats[i % 4],
                "input": f"question {i}: can I return a jacket I bought {i % 60} days ago?",
                "assert": [{"type": "contains", "value": "jacket"}, {"type": "not_contains", "value": "sorry"}]}) + "\n")
PY
cat > gateway.toml <<TOML
[store]
path = "traces.db"
[providers.p]
kind = "placeholder"
[routes.chat]
targets = ["p/echo"]
TOML
for s in small big; do printf 'dataset = "%s.jsonl"\nroute = "chat"\nconcurrency = 32\n[gates]\ndefault = { min_pass_rate = 0.99 }\n' "$s" > "$s.toml"; done

"$TRESTLE" serve --config gateway.toml --listen "127.0.0.1:$PORT" > serve.log 2>&1 & GW=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && break; sleep 0.1; done

echo "== 1,000 cases, concurrency 32, through a running gateway (--url)"
/usr/bin/time -f "wall %e s, max RSS %M KB" "$TRESTLE" eval run small.toml --url "http://127.0.0.1:$PORT" --db evals.db 2>&1 | grep -E "cases in|wall"
echo "== 1,000 cases, in process (--config)"
/usr/bin/time -f "wall %e s, max RSS %M KB" "$TRESTLE" eval run small.toml --config gateway.toml --db evals.db 2>&1 | grep -E "cases in|wall"
sleep 1
curl -s "http://127.0.0.1:$PORT/ready" | python3 -c 'import json,sys; t=json.load(sys.stdin)["traces"]; print("running gateway traces: recorded %(recorded)s, written %(written)s, dropped %(dropped)s" % t)'

echo "== $BIG cases: the runner's RSS (KB), one sample a second"
"$TRESTLE" eval run big.toml --url "http://127.0.0.1:$PORT" --db evals.db > big.out 2>&1 & P=$!
SAMPLES=()
while kill -0 "$P" 2>/dev/null; do
    r=$(awk '/VmRSS/ {print $2}' "/proc/$P/status" 2>/dev/null || true)
    [ -n "$r" ] && SAMPLES+=("$r")
    sleep 1
done
wait "$P" || true
grep "cases in" big.out
printf '%s\n' "${SAMPLES[@]}" | python3 -c '
import sys
s = [int(x) for x in sys.stdin.read().split()]
print("samples:", " ".join(str(x // 1024) for x in s), "(MB)")
if len(s) > 4:
    after = s[2:]
    print(f"after loading (from the 3rd second): min {min(after)//1024} MB, max {max(after)//1024} MB, last {s[-1]//1024} MB")
'
echo "work files in $WORK"
