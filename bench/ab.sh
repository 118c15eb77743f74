#!/usr/bin/env bash
# Two trestle binaries on one config, side by side: alternating rounds of `wrk -t1 -c50`
# non-streamed against `trestle mock`, each round on a fresh gateway; prints req/s and the
# gateway's CPU per 1,000 requests for each round. Alternating cancels most of the drift a
# shared machine shows between runs. See BENCHMARKS.md ("Performance, issue 16").
#
#   bench/ab.sh BEFORE_BIN AFTER_BIN CONFIG [ROUNDS=4] [SECONDS=8]
#
# CONFIG's routes must be `bench` on 127.0.0.1:18100 (bench/trestle.toml,
# bench/trestle-notrace.toml). Needs wrk and curl.
set -u
A="$1"; B="$2"; CFG="$(cd "$(dirname "$3")" && pwd)/$(basename "$3")"; ROUNDS="${4:-4}"; DUR="${5:-8}"
W="$(mktemp -d /tmp/trestle-ab.XXXXXX)"
"$B" mock --listen 127.0.0.1:18100 --mode lorem > "$W/mock.log" 2>&1 &
MOCK=$!
trap 'kill $MOCK 2>/dev/null' EXIT
sleep 1
printf '{"model":"bench","messages":[{"role":"user","content":"Write a few sentences about bridges."}],"max_tokens":128,"stream":false}' > "$W/body.json"
cat > "$W/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local f = io.open(os.getenv("BODY"), "r"); wrk.body = f:read("*a"); f:close()
LUA
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"
for r in $(seq "$ROUNDS"); do
  for which in A B; do
    bin="$A"; [ "$which" = B ] && bin="$B"
    mkdir -p "$W/$which-$r"
    (cd "$W/$which-$r" && exec "$bin" serve --config "$CFG" --listen 127.0.0.1:18130) > "$W/$which-$r.log" 2>&1 &
    gw=$!
    for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18130/health && break; sleep 0.1; done
    BODY="$W/body.json" wrk -t1 -c50 -d1s -s "$W/post.lua" http://127.0.0.1:18130/v1/chat/completions > /dev/null
    t0="$(ticks $gw)"
    out="$(BODY="$W/body.json" wrk -t1 -c50 -d"${DUR}s" -s "$W/post.lua" http://127.0.0.1:18130/v1/chat/completions)"
    t1="$(ticks $gw)"
    requests="$(echo "$out" | awk '/requests in/ {print $1}')"
    rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
    echo "$which round $r: $rps req/s, $(python3 -c "print(round(($t1 - $t0) * 1000 / $hz / $requests * 1000, 1))") CPU ms per 1,000 requests"
    kill "$gw"; wait "$gw" 2>/dev/null
  done
done
