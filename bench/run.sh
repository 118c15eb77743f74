#!/usr/bin/env bash
# Trestle side by side with peers, on this machine, in one run. See BENCHMARKS.md.
#
#   bench/run.sh [--quick] [--only NAME,NAME...] [--commit REV | --no-build] [--no-install]
#
# --quick      2 s per scenario instead of 10 (the whole run takes under 3 minutes after installs)
# --only       a comma-separated subset of the targets below
# --commit REV build Trestle from that commit (via `git archive`, the work tree is not touched)
#              instead of the work tree; --no-build uses the binaries already built
# --no-install never install peers (a peer not installed yet is then "not available")
#
# Targets, in order: floor (the mock upstream itself), hyper-proxy, trestle-before (only with
# TRESTLE_BEFORE=BINARY: an earlier build on trestle.toml, for a before/after in one run),
# trestle, trestle-notrace, trestle-full (every request-path stage on: bench/full/trestle.toml),
# tensorzero, litellm, portkey. Each runs alone (one at a time) against the same upstreams:
# `trestle mock` on 127.0.0.1:18100 (no delay) and 127.0.0.1:18101 (50 ms to first token).
# All traffic stays on 127.0.0.1. Peers are installed into bench/.peers (ignored by git); a peer
# that fails to install, start or answer is recorded as "not available" and the run goes on.
#
# Output: bench/results/latest.jsonl (one line per measurement) and bench/results/latest.md.
# Run it under `nice -n 19` on a shared machine; everything it starts inherits that.
#
# Environment: BENCH_TARGET_DIR (cargo target dir, default bench/.target),
#              TENSORZERO_VERSION, LITELLM_VERSION, PORTKEY_VERSION (peer versions to install).
set -uo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
PEERS="$BENCH/.peers"
RESULTS="$BENCH/results"
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-$BENCH/.target}"
TENSORZERO_VERSION="${TENSORZERO_VERSION:-2026.6.0}"
LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
HONO_NODE_SERVER_VERSION="1.13.5"   # Portkey's streaming needs this exact adapter version

QUICK=0
INSTALL=1
BUILD=1
COMMIT=""
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-install) INSTALL=0 ;;
    --only) ONLY="$2"; shift ;;
    --commit) COMMIT="$2"; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$QUICK" = 1 ]; then
  DUR=2; WARM=0.5; RATE=1000
else
  DUR=10; WARM=2; RATE=1000
fi

UP0=18100; UP50=18101
WORK="$(mktemp -d /tmp/trestle-bench.XXXXXX)"
JSONL="$WORK/results.jsonl"
: > "$JSONL"
PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null
  done
  wait 2>/dev/null
}
trap cleanup EXIT

# A JSON string from a shell string.
jstr() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

record() {  # record TARGET SCENARIO JSON_OBJECT_WITHOUT_BRACES
  echo "{\"target\":\"$1\",\"scenario\":\"$2\",$3}" >> "$JSONL"
}

unavailable() {  # unavailable TARGET REASON
  log "$1: not available: $2"
  record "$1" "unavailable" "\"reason\":$(jstr "$2")"
}

wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

# ---------------------------------------------------------------- tools and builds

ensure_wrk() {
  command -v wrk >/dev/null && return 0
  log "installing wrk (apt-get)"
  { apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; } > "$WORK/wrk-install.log" 2>&1
  command -v wrk >/dev/null
}

build_rust() {
  TRESTLE="$CARGO_TARGET_DIR/release/trestle"
  HYPER_PROXY="$CARGO_TARGET_DIR/release/hyper-proxy"
  LOADGEN="$CARGO_TARGET_DIR/release/loadgen"
  local src="$ROOT"
  TRESTLE_SOURCE="work tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || echo ' + uncommitted changes')"
  if [ "$BUILD" = 0 ]; then
    TRESTLE_SOURCE="prebuilt binary ($TRESTLE)"
    [ -x "$TRESTLE" ] && [ -x "$LOADGEN" ] && [ -x "$HYPER_PROXY" ] && return 0
    echo "--no-build: binaries missing in $CARGO_TARGET_DIR/release" >&2
    return 1
  fi
  if [ -n "$COMMIT" ]; then
    src="$WORK/trestle-src"
    mkdir -p "$src"
    git -C "$ROOT" archive "$COMMIT" | tar -x -C "$src" || return 1
    TRESTLE_SOURCE="commit $(git -C "$ROOT" rev-parse --short "$COMMIT")"
  fi
  log "building trestle ($TRESTLE_SOURCE) and bench helpers (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$src" && cargo build --release --bin trestle) > "$WORK/build-trestle.log" 2>&1 \
    || { tail -20 "$WORK/build-trestle.log" >&2; return 1; }
  (cd "$BENCH/hyper-proxy" && cargo build --release) > "$WORK/build-helpers.log" 2>&1 \
    || { tail -20 "$WORK/build-helpers.log" >&2; return 1; }
}

# Each installer leaves a marker with the installed version; a second run reuses it.
# install_pip_peer NAME VERSION REQUIREMENT: a venv in bench/.peers/NAME with REQUIREMENT.
install_pip_peer() {
  local dir="$PEERS/$1" marker="$PEERS/$1/.installed-$2"
  [ -f "$marker" ] && return 0
  rm -rf "$dir" && python3 -m venv "$dir" \
    && "$dir/bin/pip" install -q "$3" \
    && touch "$marker"
}

install_tensorzero() { install_pip_peer tensorzero "$TENSORZERO_VERSION" "tensorzero==$TENSORZERO_VERSION"; }
install_litellm() { install_pip_peer litellm "$LITELLM_VERSION" "litellm[proxy]==$LITELLM_VERSION"; }

install_portkey() {
  local dir="$PEERS/portkey" marker="$PEERS/portkey/.installed-$PORTKEY_VERSION"
  [ -f "$marker" ] && return 0
  command -v npm >/dev/null || { echo "npm not found"; return 1; }
  rm -rf "$dir" && mkdir -p "$dir" && cat > "$dir/package.json" <<EOF
{
  "name": "trestle-bench-portkey",
  "private": true,
  "dependencies": {
    "@portkey-ai/gateway": "$PORTKEY_VERSION",
    "@hono/node-server": "$HONO_NODE_SERVER_VERSION"
  },
  "overrides": { "@hono/node-server": "$HONO_NODE_SERVER_VERSION" }
}
EOF
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error) && touch "$marker"
}

install_peer() {  # install_peer NAME: returns non-zero with the reason in $WORK/NAME-install.log
  [ "$INSTALL" = 1 ] || return 0
  log "$1: installing into bench/.peers (skipped when already there)"
  "install_$1" > "$WORK/$1-install.log" 2>&1
}

# ---------------------------------------------------------------- starting things

body_file() {  # body_file MODEL STREAM(true|false) -> path of a request body
  local f
  f="$WORK/body-$(echo "$1" | tr -c 'a-zA-Z0-9' _)-$2.json"
  printf '{"model":"%s","messages":[{"role":"user","content":"Write a few sentences about bridges."}],"max_tokens":128,"stream":%s}' "$1" "$2" > "$f"
  echo "$f"
}

# chat URL MODEL STREAM HEADERS... -> prints the response, fails unless it is a completion
chat() {
  local url="$1" model="$2" stream="$3"; shift 3
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  local out
  out="$(curl -sS -m 10 "${args[@]}" -H 'content-type: application/json' \
    --data-binary @"$(body_file "$model" "$stream")" "$url" 2>&1)" || { echo "$out"; return 1; }
  echo "$out"
  if [ "$stream" = true ]; then
    grep -q '"choices"' <<<"$out" && grep -q '\[DONE\]' <<<"$out"
  else
    grep -q '"choices"' <<<"$out" && grep -q '"content"' <<<"$out"
  fi
}

wait_ready() {  # wait_ready NAME SECONDS: polls until a non-streamed and a streamed chat both work
  local name="$1" deadline=$((SECONDS + $2)) out=""
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$PID" 2>/dev/null; then
      echo "process exited: $(tail -c 400 "$WORK/$name.log" | tr '\n' ' ')"
      return 1
    fi
    if out="$(chat "$URL" "$MODEL" false "${HEADERS[@]}")"; then
      if out="$(chat "$URL" "$MODEL" true "${HEADERS[@]}")"; then
        log "$name: answers; stream sample: $(head -c 160 <<<"$out" | tr '\n' ' ')"
        return 0
      fi
    fi
    sleep 0.5
  done
  echo "no chat completion within $2 s; last answer: $(head -c 300 <<<"$out" | tr '\n' ' ')"
  return 1
}

start_bg() {  # start_bg NAME CMD... : starts CMD in the background, sets PID
  "${@:2}" > "$WORK/$1.log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
}

stop_pid() {
  kill "$1" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}

# Each start_NAME sets PID, URL, MODEL, URL50, MODEL50 and HEADERS (an array), or fails with
# the reason in REASON.
start_floor() {
  PID="$MOCK0_PID"; URL="http://127.0.0.1:$UP0/v1/chat/completions"; MODEL=m1
  URL50="http://127.0.0.1:$UP50/v1/chat/completions"; MODEL50=m1; HEADERS=()
}

start_hyper-proxy() {
  start_bg hyper-proxy50 "$HYPER_PROXY" 127.0.0.1:18111 "127.0.0.1:$UP50"
  EXTRA_PID=$PID
  start_bg hyper-proxy "$HYPER_PROXY" 127.0.0.1:18110 "127.0.0.1:$UP0"
  URL="http://127.0.0.1:18110/v1/chat/completions"; MODEL=m1
  URL50="http://127.0.0.1:18111/v1/chat/completions"; MODEL50=m1; HEADERS=()
}

start_trestle_with() {  # start_trestle_with NAME CONFIG PORT
  local dir="$WORK/$1-cwd"
  mkdir -p "$dir"
  (cd "$dir" && exec "$TRESTLE" serve --config "$2" --listen "127.0.0.1:$3") > "$WORK/$1.log" 2>&1 &
  PID=$!; PIDS+=("$PID")
  URL="http://127.0.0.1:$3/v1/chat/completions"; MODEL=bench
  URL50="$URL"; MODEL50=bench50; HEADERS=()
}
start_trestle() { start_trestle_with trestle "$BENCH/trestle.toml" 18120; }
start_trestle-before() {
  [ -n "${TRESTLE_BEFORE:-}" ] && [ -x "$TRESTLE_BEFORE" ] \
    || { REASON="set TRESTLE_BEFORE to an earlier trestle binary"; return 1; }
  local now="$TRESTLE"
  TRESTLE="$TRESTLE_BEFORE" start_trestle_with trestle-before "$BENCH/trestle.toml" 18123
  TRESTLE="$now"
}
start_trestle-full() {
  # A client key in the gateway's store (its working directory), sent with every request,
  # and a user id the experiment assigns a variant by.
  local dir="$WORK/trestle-full-cwd" key
  mkdir -p "$dir"
  key="$(cd "$dir" && "$TRESTLE" keys create --config "$BENCH/full/trestle.toml" --name bench \
    --tenant bench --rpm 100000000 --budget-usd month:1000000 2>/dev/null)" \
    || { REASON="trestle keys create failed"; return 1; }
  start_trestle_with trestle-full "$BENCH/full/trestle.toml" 18122
  HEADERS=("authorization: Bearer $key" "x-trestle-user-id: bench-user")
}
start_trestle-notrace() { start_trestle_with trestle-notrace "$BENCH/trestle-notrace.toml" 18121; }

start_tensorzero() {
  install_peer tensorzero || { REASON="install failed: $(tail -c 300 "$WORK/tensorzero-install.log")"; return 1; }
  start_bg tensorzero "$PEERS/tensorzero/bin/python" -u "$BENCH/peers/tensorzero_gateway.py" \
    "$BENCH/peers/tensorzero.toml"
  local base=""
  for _ in $(seq 100); do
    base="$(sed -n 's/^BASE_URL //p' "$WORK/tensorzero.log" | head -1)"
    [ -n "$base" ] && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.2
  done
  [ -n "$base" ] || { REASON="gateway did not start: $(tail -c 400 "$WORK/tensorzero.log")"; return 1; }
  URL="$base/chat/completions"; MODEL="tensorzero::model_name::m1"
  URL50="$URL"; MODEL50="tensorzero::model_name::m1_50"; HEADERS=()
}

start_litellm() {
  install_peer litellm || { REASON="install failed: $(tail -c 300 "$WORK/litellm-install.log")"; return 1; }
  # LiteLLM refuses to start without a master key; a random one for this run only.
  local key
  key="sk-bench-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
  LITELLM_MASTER_KEY="$key" LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False \
    DISABLE_SCHEMA_UPDATE=True start_bg litellm "$PEERS/litellm/bin/litellm" --config "$BENCH/peers/litellm.yaml" \
    --host 127.0.0.1 --port 18140 --num_workers 1
  URL="http://127.0.0.1:18140/v1/chat/completions"; MODEL=m1
  URL50="$URL"; MODEL50=m1-50; HEADERS=("authorization: Bearer $key")
}

start_portkey() {
  install_peer portkey || { REASON="install failed: $(tail -c 300 "$WORK/portkey-install.log")"; return 1; }
  (cd "$PEERS/portkey" && exec node node_modules/@portkey-ai/gateway/build/start-server.js \
    --port=18150 --headless) > "$WORK/portkey.log" 2>&1 &
  PID=$!; PIDS+=("$PID")
  URL="http://127.0.0.1:18150/v1/chat/completions"; MODEL=m1; URL50="$URL"; MODEL50=m1
  HEADERS=("x-portkey-provider: openai" "x-portkey-custom-host: http://127.0.0.1:$UP0/v1"
           "authorization: Bearer unused")
  HEADERS50=("x-portkey-provider: openai" "x-portkey-custom-host: http://127.0.0.1:$UP50/v1"
             "authorization: Bearer unused")
}

# ---------------------------------------------------------------- measuring

# wrk_run TARGET SCENARIO CONNS URL MODEL HEADERS...
wrk_run() {
  local target="$1" scenario="$2" conns="$3" url="$4" model="$5"; shift 5
  local hdrs
  hdrs="$(IFS='|'; echo "$*")"
  local out
  out="$(WRK_BODY="$(body_file "$model" false)" WRK_HEADERS="$hdrs" \
    wrk -t1 -c"$conns" -d"${DUR}s" --timeout 10s -s "$BENCH/wrk-post.lua" "$url" 2>&1)"
  local json
  json="$(sed -n 's/^WRKJSON {\(.*\)}$/\1/p' <<<"$out")"
  if [ -z "$json" ]; then
    record "$target" "$scenario" "\"error\":$(jstr "$(tail -c 300 <<<"$out")")"
    return 1
  fi
  record "$target" "$scenario" "\"tool\":\"wrk\",\"conns\":$conns,$json"
  LAST_REQUESTS="$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' <<<"$json")"
}

# loadgen_run TARGET SCENARIO URL MODEL STREAM MODE_ARGS -- HEADERS...
loadgen_run() {
  local target="$1" scenario="$2" url="$3" model="$4" stream="$5"; shift 5
  local mode=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do mode+=("$1"); shift; done
  shift
  local args=()
  for h in "$@"; do args+=(--header "$h"); done
  [ "$stream" = true ] && args+=(--stream)
  local out
  out="$("$LOADGEN" --url "$url" --body-file "$(body_file "$model" "$stream")" \
    --duration "$DUR" --warmup "$WARM" "${mode[@]}" "${args[@]}" 2>&1 | tail -1)"  # later flags win
  if [[ "$out" != "{"* ]]; then
    record "$target" "$scenario" "\"error\":$(jstr "$out")"
    return 1
  fi
  record "$target" "$scenario" "\"tool\":\"loadgen\",${out:1:${#out}-2}"
  LAST_REQUESTS="$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' <<<"$out")"
}

cpu_of() { python3 "$BENCH/procstat.py" cpu "$1"; }

# cpu_per_1k TARGET SCENARIO BEFORE_MS : after a run, records CPU ms per 1,000 requests
cpu_per_1k() {
  local after
  after="$(cpu_of "$PID")"
  if [ -n "${LAST_REQUESTS:-}" ] && [ "$LAST_REQUESTS" -gt 0 ]; then
    record "$1" "cpu-$2" "\"cpu_ms\":$((after - $3)),\"requests\":$LAST_REQUESTS,\"cpu_ms_per_1k\":$(python3 -c "print(round(($after - $3) * 1000 / $LAST_REQUESTS, 1))")"
  fi
}

measure() {  # measure TARGET (uses PID URL MODEL URL50 MODEL50 HEADERS HEADERS50)
  local t="$1" before
  local h50=("${HEADERS[@]}")
  [ "${#HEADERS50[@]}" -gt 0 ] && h50=("${HEADERS50[@]}")
  record "$t" "rss-idle" "\"rss_kib\":$(python3 "$BENCH/procstat.py" rss "$PID")"
  python3 "$BENCH/procstat.py" sample "$PID" "$WORK/$t.rss-peak" &
  local sampler=$!

  log "$t: warm-up"
  loadgen_run "$t" warmup "$URL" "$MODEL" false --conns 50 --duration 1 --warmup 0 -- "${HEADERS[@]}"
  loadgen_run "$t" warmup50 "$URL50" "$MODEL50" true --conns 5 --duration 1 --warmup 0 -- "${h50[@]}"

  log "$t: 1 connection, non-streamed"
  wrk_run "$t" c1 1 "$URL" "$MODEL" "${HEADERS[@]}"
  log "$t: 50 connections, non-streamed"
  before="$(cpu_of "$PID")"
  wrk_run "$t" c50 50 "$URL" "$MODEL" "${HEADERS[@]}" && cpu_per_1k "$t" c50 "$before"
  log "$t: 1 connection, streamed"
  loadgen_run "$t" s1 "$URL" "$MODEL" true --conns 1 -- "${HEADERS[@]}"
  log "$t: 50 connections, streamed"
  before="$(cpu_of "$PID")"
  loadgen_run "$t" s50 "$URL" "$MODEL" true --conns 50 -- "${HEADERS[@]}" && cpu_per_1k "$t" s50 "$before"
  log "$t: upstream with 50 ms to first token: 1 connection streamed, 50 connections non-streamed"
  loadgen_run "$t" ttft50-s1 "$URL50" "$MODEL50" true --conns 1 -- "${h50[@]}"
  wrk_run "$t" ttft50-c50 50 "$URL50" "$MODEL50" "${h50[@]}"
  log "$t: fixed rate $RATE req/s, non-streamed"
  loadgen_run "$t" rate "$URL" "$MODEL" false --rate "$RATE" --max-inflight 1000 -- "${HEADERS[@]}"

  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  peak="$(cat "$WORK/$t.rss-peak" 2>/dev/null)"
  record "$t" "rss-peak" "\"rss_kib\":${peak:-null}"
}

# ---------------------------------------------------------------- main

mkdir -p "$PEERS" "$RESULTS"
log "work dir $WORK; mode $([ $QUICK = 1 ] && echo quick || echo full): ${DUR}s per scenario"
ensure_wrk || { echo "wrk is required (apt-get install wrk failed)" >&2; exit 1; }
build_rust || { echo "build failed (try --commit HEAD, or --no-build to reuse binaries)" >&2; exit 1; }

start_bg mock0 "$TRESTLE" mock --listen "127.0.0.1:$UP0" --mode lorem
MOCK0_PID=$PID
start_bg mock50 "$TRESTLE" mock --listen "127.0.0.1:$UP50" --mode lorem --ttft-ms 50
PID=$MOCK0_PID; URL="http://127.0.0.1:$UP0/v1/chat/completions"; MODEL=m1; HEADERS=()
wait_ready mock0 20 >/dev/null || { echo "mock upstream did not answer" >&2; exit 1; }

record machine info "\"date\":$(jstr "$(date -u '+%Y-%m-%d %H:%M UTC')"),\"cpus\":$(nproc),\"cpu_model\":$(jstr "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"),\"mode\":\"$([ $QUICK = 1 ] && echo quick || echo full)\",\"duration_s\":$DUR,\"rate\":$RATE,\"trestle_source\":$(jstr "$TRESTLE_SOURCE"),\"tensorzero\":\"$TENSORZERO_VERSION\",\"litellm\":\"$LITELLM_VERSION\",\"portkey\":\"$PORTKEY_VERSION\""

for target in floor hyper-proxy trestle-before trestle trestle-notrace trestle-full tensorzero litellm portkey; do
  wanted "$target" || continue
  [ "$target" = trestle-before ] && [ -z "${TRESTLE_BEFORE:-}" ] && continue
  log "=== $target"
  PID=""; EXTRA_PID=""; HEADERS=(); HEADERS50=()
  REASON=""
  if ! "start_$target"; then
    unavailable "$target" "$REASON"
    [ -n "$PID" ] && stop_pid "$PID"
    continue
  fi
  if ! reason="$(wait_ready "$target" 90)"; then
    unavailable "$target" "$reason"
  else
    measure "$target"
  fi
  if [ "$target" != floor ]; then
    stop_pid "$PID"
    [ -n "$EXTRA_PID" ] && stop_pid "$EXTRA_PID"
  fi
done

cp "$JSONL" "$RESULTS/latest.jsonl"
python3 "$BENCH/report.py" "$RESULTS/latest.jsonl" > "$RESULTS/latest.md"
log "results: $RESULTS/latest.md (raw: $RESULTS/latest.jsonl, logs: $WORK)"
cat "$RESULTS/latest.md"
