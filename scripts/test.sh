#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests, then the official OpenAI Python SDK
# against the real binary. Installs the Python test tools into .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --bin trestle
cargo test --workspace
if [ -f target/tmp/chaos-report.json ]; then
    echo "chaos suite figures (docs/resilience.md):"
    cat target/tmp/chaos-report.json
    echo
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
TRESTLE_BIN="$PWD/target/debug/trestle" .venv/bin/python -m pytest -q tests/python
