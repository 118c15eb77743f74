#!/usr/bin/env bash
# Scale-out: Trestle on PostgreSQL (traces) and Redis (key limits, budgets, caches) at a
# fixed open-loop rate, first as one instance, then as two instances sharing the rate, side
# by side in one run. Every request carries a client key, so each one is a Redis limit
# decision and a PostgreSQL trace row. Reports per run: achieved rate, latency p50/p99,
# errors, traces dropped (trestle_traces_dropped_total) and rows in PostgreSQL against
# requests sent, and the CPU time of each process. See docs/deployment.md, "Sizing".
#
#   bench/scale-out.sh [--rate REQ_PER_SEC] [--seconds N] [--no-build]
#
# Needs PostgreSQL's server binaries (apt-get install postgresql) and redis-server; starts
# its own of each on free loopback ports and stops them. Not run in CI.
set -uo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
RATE=2000
SECONDS_RUN=30
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) RATE="$2"; shift ;;
    --seconds) SECONDS_RUN="$2"; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
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
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL is missing: apt-get install postgresql" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install redis-server" >&2; exit 1; }

WORK="$(mktemp -d /tmp/trestle-scale.XXXXXX)"
PIDS=()
AS_PG=()
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$WORK"; AS_PG=(runuser -u postgres --); fi
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# PostgreSQL with its default durability (fsync and synchronous commit on).
PG_PORT="$(free_port)"
"${AS_PG[@]}" "$PGBIN/initdb" -D "$WORK/pg" -A trust -U postgres -E UTF8 --locale=C >/dev/null || exit 1
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
  -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null || exit 1
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & PIDS+=($!)
MOCK_PORT="$(free_port)"
"$TRESTLE" mock --listen "127.0.0.1:$MOCK_PORT" > "$WORK/mock.log" 2>&1 & PIDS+=($!)
sleep 1

cat > "$WORK/trestle.toml" <<TOML
[store]
kind = "postgres"
url = "$PG_URL"
pool_size = 4
[state]
kind = "redis"
url = "redis://127.0.0.1:$REDIS_PORT/0"
instances = 2
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
[routes.bench]
class = "async"
targets = ["up/m1"]
retries = 0
TOML
(cd "$WORK" && "$TRESTLE" migrate --config trestle.toml >/dev/null) || exit 1
KEY="$(cd "$WORK" && "$TRESTLE" keys create --name bench --tenant bench --rpm 10000000 --config trestle.toml | tail -1)"
printf '{"model":"bench","messages":[{"role":"user","content":"scale-out question"}]}' > "$WORK/body.json"

psql_count() { "${AS_PG[@]}" "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT count(*) FROM requests" postgres; }
cpu_ms() { python3 "$BENCH/procstat.py" cpu "$1"; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1==m {s+=$2} END {print s+0}'; }

run() { # run N: N instances share RATE
  local n="$1" ports=() gws=() loads=() before after
  for i in $(seq 1 "$n"); do
    local port; port="$(free_port)"
    (cd "$WORK" && RUST_LOG=warn exec "$TRESTLE" serve --config trestle.toml --listen "127.0.0.1:$port" \
      > "$WORK/gw-$n-$i.log" 2>&1) & gws+=($!); PIDS+=($!)
    ports+=("$port")
  done
  sleep 2
  before="$(psql_count)"
  local pg_pid; pg_pid="$(head -1 "$WORK/pg/postmaster.pid")"
  local c0=() ; for p in "${gws[@]}" "$pg_pid"; do c0+=("$(cpu_ms "$p")"); done
  for port in "${ports[@]}"; do
    "$LOADGEN" --url "http://127.0.0.1:$port/v1/chat/completions" --body-file "$WORK/body.json" \
      --header "authorization: Bearer $KEY" --rate $((RATE / n)) --max-inflight 4000 \
      --duration "$SECONDS_RUN" --warmup 0 > "$WORK/load-$n-$port.json" 2>&1 & loads+=($!)
  done
  wait "${loads[@]}"
  local c1=() ; for p in "${gws[@]}" "$pg_pid"; do c1+=("$(cpu_ms "$p")"); done
  sleep 2
  after="$(psql_count)"
  local dropped=0 sent=0
  for port in "${ports[@]}"; do
    dropped=$((dropped + $(metric "$port" trestle_traces_dropped_total)))
  done
  python3 - "$n" "$RATE" "$SECONDS_RUN" "$before" "$after" "$dropped" "${c0[*]}" "${c1[*]}" "$WORK"/load-"$n"-*.json <<'PY'
import json, sys
n, rate, secs, before, after, dropped = map(int, sys.argv[1:7])
c0 = list(map(float, sys.argv[7].split())); c1 = list(map(float, sys.argv[8].split()))
loads = [json.load(open(p)) for p in sys.argv[9:]]
sent = sum(l["requests"] + l["errors"] for l in loads)
out = {
    "instances": n, "target_rps": rate, "seconds": secs,
    "achieved_rps": round(sum(l["rps"] for l in loads), 1),
    "errors": sum(l["errors"] for l in loads),
    "p50_ms": max(l["lat_p50_ms"] for l in loads), "p99_ms": max(l["lat_p99_ms"] for l in loads),
    "requests_sent": sent, "rows_in_postgres": after - before, "traces_dropped": dropped,
    "gateway_cpu_pct": [round((b - a) / (secs * 10), 1) for a, b in zip(c0[:-1], c1[:-1])],
    "postgres_cpu_pct": round((c1[-1] - c0[-1]) / (secs * 10), 1),
}
print(json.dumps(out))
PY
  for p in "${gws[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
}

run 1
run 2
