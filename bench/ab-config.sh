#!/usr/bin/env bash
# One trestle binary on two configs, side by side: alternating rounds of `wrk -t1 -c50`
# non-streamed against `trestle mock`, each round on a fresh gateway in a fresh folder;
# prints req/s and the gateway's CPU per 1,000 requests for each round. This is how the
# "tracing on ≥ 0.9× tracing off" ratio is measured (bench/trestle.toml against
# bench/trestle-notrace.toml). See BENCHMARKS.md ("Performance, issue 16").
#
#   bench/ab-config.sh BIN CONFIG_A CONFIG_B [ROUNDS=4] [SECONDS=8]
#
# Both configs' routes must include `bench` on 127.0.0.1:18100. Needs wrk and curl.
set -u
BIN="$1"; ROUNDS="${4:-4}"; DUR="${5:-8}"
A="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
B="$(cd "$(dirname "$3")" && pwd)/$(basename "$3")"
. "$(dirname "${BASH_SOURCE[0]}")/ab-lib.sh"
ab_setup "$BIN"
ab_rounds "$ROUNDS" "$DUR" "$BIN" "$A" "$BIN" "$B"
