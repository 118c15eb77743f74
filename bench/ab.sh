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
. "$(dirname "${BASH_SOURCE[0]}")/ab-lib.sh"
ab_setup "$B"
ab_rounds "$ROUNDS" "$DUR" "$A" "$CFG" "$B" "$CFG"
