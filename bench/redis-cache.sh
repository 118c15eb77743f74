#!/usr/bin/env bash
# The added p50 latency of the state shared on Redis against the same in memory, side by side
# in one run (not CI): an exact-cache lookup that misses locally and hits in Redis, one that
# misses in both, and a target's admission (shared minute and pause). Needs redis-server
# (apt-get install redis-server); the bench starts and stops its own on a free loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install redis-server" >&2; exit 1; }
exec cargo bench -p trestle-gateway --bench shared_state "$@"
