#!/usr/bin/env bash
# The added p50 latency of a per-key limit decision on Redis against in memory, side by side
# in one run (not CI). Needs redis-server (apt-get install redis-server); the bench starts
# and stops its own on a free loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install redis-server" >&2; exit 1; }
exec cargo bench -p trestle-gateway --bench limiter "$@"
