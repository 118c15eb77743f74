#!/usr/bin/env bash
# bench/ab.sh for the every-stage-on config (bench/full/trestle.toml): two trestle builds in
# alternating rounds of `wrk -t1 -c50`, non-streamed, each round on a fresh gateway with its
# own store and a client key made for it (sent with a user id, as bench/run.sh's
# `trestle-full` target does); prints req/s and the gateway's CPU per 1,000 requests.
#
#   bench/ab-full.sh BEFORE_BIN AFTER_BIN [ROUNDS=4] [SECONDS=8]
#
# Needs wrk and curl; the upstream is `trestle mock` (AFTER_BIN's) on 127.0.0.1:18100.
set -u
A="$1"; B="$2"; ROUNDS="${3:-4}"; DUR="${4:-8}"
CFG="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/full/trestle.toml"
. "$(dirname "${BASH_SOURCE[0]}")/ab-lib.sh"
ab_setup "$B"
for r in $(seq "$ROUNDS"); do
  for which in A B; do
    bin="$A"; [ "$which" = B ] && bin="$B"
    dir="$(mktemp -d /tmp/trestle-ab-full.XXXXXX)"
    key="$(cd "$dir" && "$bin" keys create --config "$CFG" --name bench --tenant bench \
      --rpm 100000000 --budget-usd month:1000000 2>/dev/null)"
    ab_lua "$dir/post.lua" "authorization: Bearer $key" "x-trestle-user-id: bench-user"
    (cd "$dir" && exec "$bin" serve --config "$CFG" --listen 127.0.0.1:18130) > "$dir.log" 2>&1 &
    gw=$!
    ab_wait
    ab_round "$which" "$r" "$gw" "$dir/post.lua" "$DUR"
    kill "$gw"; wait "$gw" 2>/dev/null
    rm -rf "$dir" "$dir.log"
  done
done
