# Shared by bench/ab.sh, bench/ab-config.sh, bench/ab-full.sh and bench/ab-latency.sh
# (sourced, not run).
#
# ab_setup MOCK_BIN: makes $W, starts `MOCK_BIN mock` on 127.0.0.1:18100 ($MOCK, stopped on
# exit), writes the benchmark request to $W/body.json and a wrk script sending it to
# $W/post.lua.
ab_setup() {
  W="$(mktemp -d /tmp/trestle-ab.XXXXXX)"
  "$1" mock --listen 127.0.0.1:18100 --mode lorem > "$W/mock.log" 2>&1 &
  MOCK=$!
  trap 'kill $MOCK 2>/dev/null; rm -rf "$W"' EXIT
  printf '{"model":"bench","messages":[{"role":"user","content":"Write a few sentences about bridges."}],"max_tokens":128,"stream":false}' > "$W/body.json"
  ab_lua "$W/post.lua"
  sleep 1
}

# ab_lua FILE [HEADER...]: a wrk script POSTing $W/body.json with these headers ("name: value").
ab_lua() {
  local file="$1" h; shift
  {
    echo 'wrk.method = "POST"'
    echo 'wrk.headers["content-type"] = "application/json"'
    for h in "$@"; do
      echo "wrk.headers[\"${h%%: *}\"] = \"${h#*: }\""
    done
    echo "local f = io.open(\"$W/body.json\", \"r\"); wrk.body = f:read(\"*a\"); f:close()"
  } > "$file"
}

# ab_post LUA ARGS...: wrk with a POST script against the gateway on :18130.
ab_post() {
  local lua="$1"; shift
  wrk -t1 "$@" -s "$lua" http://127.0.0.1:18130/v1/chat/completions
}

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# ab_round NAME ROUND PID LUA SECONDS: one second of warm-up, then SECONDS of `wrk -c50`;
# prints req/s and PID's CPU per 1,000 requests.
ab_round() {
  local out t0 t1 requests rps hz
  hz="$(getconf CLK_TCK)"
  ab_post "$4" -c50 -d1s > /dev/null
  t0="$(ticks "$3")"
  out="$(ab_post "$4" -c50 -d"$5s")"
  t1="$(ticks "$3")"
  if echo "$out" | grep -q "Non-2xx"; then
    echo "$1 round $2: $(echo "$out" | grep Non-2xx)"
  fi
  requests="$(echo "$out" | awk '/requests in/ {print $1}')"
  rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
  echo "$1 round $2: $rps req/s, $(python3 -c "print(round(($t1 - $t0) * 1000 / $hz / $requests * 1000, 1))") CPU ms per 1,000 requests"
}

# ab_wait: until the gateway on :18130 answers /health (5 s at most).
ab_wait() {
  for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18130/health && return; sleep 0.1; done
}

# ab_rounds ROUNDS SECONDS BIN_A CONFIG_A BIN_B CONFIG_B: alternating rounds of ab_round, A
# then B, each on a fresh gateway in a fresh folder.
ab_rounds() {
  local rounds="$1" dur="$2" r which bin cfg gw
  for r in $(seq "$rounds"); do
    for which in A B; do
      if [ "$which" = A ]; then bin="$3"; cfg="$4"; else bin="$5"; cfg="$6"; fi
      mkdir -p "$W/$which-$r"
      (cd "$W/$which-$r" && exec "$bin" serve --config "$cfg" --listen 127.0.0.1:18130) > "$W/$which-$r.log" 2>&1 &
      gw=$!
      ab_wait
      ab_round "$which" "$r" "$gw" "$W/post.lua" "$dur"
      kill "$gw"; wait "$gw" 2>/dev/null
    done
  done
}
