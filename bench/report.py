"""Turns bench/run.sh's results (one JSON object a line) into markdown tables.

usage: python3 report.py results.jsonl > results.md
"""

import json
import sys

ORDER = ["floor", "hyper-proxy", "trestle-before", "trestle", "trestle-notrace", "trestle-full",
         "tensorzero", "litellm", "portkey"]
LABEL = {
    "floor": "upstream directly (floor)",
    "hyper-proxy": "bare hyper proxy",
    "trestle": "**Trestle, tracing on**",
    "trestle-notrace": "Trestle, tracing off",
    "trestle-before": "Trestle before (TRESTLE_BEFORE), tracing on",
    "trestle-full": "Trestle, every stage on",
    "tensorzero": "TensorZero",
    "litellm": "LiteLLM proxy",
    "portkey": "Portkey gateway",
}


def load(path):
    data, info = {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            if row["target"] == "machine":
                info = row
                continue
            data.setdefault(row["target"], {})[row["scenario"]] = row
    return info, data


def get(data, target, scenario, key):
    value = data.get(target, {}).get(scenario, {}).get(key)
    return value if isinstance(value, (int, float)) else None


def fmt(x, digits=2):
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def ratio(a, b, digits=2):
    if a is None or b is None or b <= 0 or a <= 0:
        return "–"
    r = a / b
    return f"{r:.{digits}f}×" if r >= 0.1 else f"{r:.3f}×"


def added(data, target, scenario, key):
    mine, floor = get(data, target, scenario, key), get(data, "floor", scenario, key)
    if mine is None or floor is None or target == "floor":
        return None
    return mine - floor


def mib(kib):
    return None if kib is None else kib / 1024


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def compare(data, ran, me):
    """A table of how many times better target `me` does than each other target."""

    def better_high(scen, key, other):  # throughput: me / other
        return ratio(get(data, me, scen, key), get(data, other, scen, key))

    def better_low(scen, key, other):  # cost: other / me
        return ratio(get(data, other, scen, key), get(data, me, scen, key))

    def better_added(scen, key, other):
        mine, theirs = added(data, me, scen, key), added(data, other, scen, key)
        if mine is None or theirs is None or mine < 0.01:
            return "–"
        return f"{theirs / mine:.1f}×"

    rows = []
    for t in ran:
        if t in (me, "floor"):
            continue
        rows.append([
            LABEL[t], better_high("c50", "rps", t), better_high("s50", "rps", t),
            better_added("c1", "lat_p50_ms", t), better_low("c50", "lat_p99_ms", t),
            better_added("s1", "ttfb_p50_ms", t),
            better_low("cpu-c50", "cpu_ms_per_1k", t), better_low("rss-peak", "rss_kib", t),
        ])
    name = LABEL[me].strip("*")
    return (
        f"## {name}, against each\n\n"
        f"How many times better {name} does than each: above 1× Trestle is better, below 1× the "
        "other is. Throughput = Trestle ÷ other; latency, CPU and memory = other ÷ Trestle. "
        "\"Added\" is the latency over the floor (– when Trestle's is under 0.01 ms).\n\n"
        + table(["against", "req/s (50 conns)", "stream req/s (50 conns)", "added p50 (1 conn)",
                 "p99 (50 conns)", "added stream TTFB p50", "CPU / 1k req", "peak RSS"], rows)
    )


def main():
    info, data = load(sys.argv[1])
    targets = [t for t in ORDER if t in data]
    ran = [t for t in targets if "unavailable" not in data[t]]
    md = []
    md.append(f"# Trestle benchmark: {info.get('mode', '?')} run, {info.get('date', '?')}\n")
    md.append(
        f"Machine: {info.get('cpus', '?')} cores ({info.get('cpu_model', '?')}), shared with other "
        f"work; every process on 127.0.0.1. {info.get('duration_s', '?')} s per scenario. "
        f"Trestle: {info.get('trestle_source', '?')}; peers: TensorZero {info.get('tensorzero')}, "
        f"LiteLLM {info.get('litellm')}, Portkey gateway {info.get('portkey')}. Upstream: "
        "`trestle mock` (lorem reply, 48 words; streamed as one chunk a word). How to read "
        "these numbers, and why streamed totals sit near 44 ms or 92 ms: BENCHMARKS.md.\n"
    )

    rows = []
    for t in ran:
        rows.append([
            LABEL[t],
            fmt(get(data, t, "c1", "lat_p50_ms")), fmt(get(data, t, "c1", "lat_p99_ms")),
            fmt(added(data, t, "c1", "lat_p50_ms")), fmt(added(data, t, "c1", "lat_p99_ms")),
            fmt(get(data, t, "s1", "ttfb_p50_ms")), fmt(get(data, t, "s1", "lat_p50_ms")),
            fmt(added(data, t, "s1", "ttfb_p50_ms")), fmt(added(data, t, "s1", "lat_p50_ms")),
        ])
    md.append("## One connection: latency per request (ms)\n")
    md.append(table(["target", "p50", "p99", "added p50", "added p99", "stream TTFB p50",
                     "stream total p50", "added TTFB p50", "added total p50"], rows))

    rows = []
    for t in ran:
        rows.append([
            LABEL[t],
            fmt(get(data, t, "c50", "rps")), ratio(get(data, t, "c50", "rps"), get(data, "floor", "c50", "rps")),
            fmt(get(data, t, "c50", "lat_p50_ms")), fmt(get(data, t, "c50", "lat_p90_ms")),
            fmt(get(data, t, "c50", "lat_p99_ms")),
            fmt(get(data, t, "s50", "rps")), ratio(get(data, t, "s50", "rps"), get(data, "floor", "s50", "rps")),
            fmt(get(data, t, "s50", "ttfb_p99_ms")), fmt(get(data, t, "s50", "lat_p99_ms")),
        ])
    md.append("## 50 connections: throughput and latency\n")
    md.append(table(["target", "req/s", "× floor", "p50 ms", "p90 ms", "p99 ms", "stream req/s",
                     "× floor", "stream TTFB p99 ms", "stream total p99 ms"], rows))

    rate = info.get("rate", "?")
    rows = []
    for t in ran:
        rows.append([
            LABEL[t], fmt(get(data, t, "rate", "rps")), fmt(get(data, t, "rate", "lat_p50_ms")),
            fmt(get(data, t, "rate", "lat_p90_ms")), fmt(get(data, t, "rate", "lat_p99_ms")),
            fmt(get(data, t, "rate", "errors"), 0),
        ])
    md.append(f"## Fixed rate: {rate} req/s offered, non-streamed\n")
    md.append("Latency counts from each request's scheduled start, so a server that falls behind "
              "shows its queueing; a request that would be the 1,001st in flight counts as an error.\n")
    md.append(table(["target", "served req/s", "p50 ms", "p90 ms", "p99 ms", "errors"], rows))

    rows = []
    for t in ran:
        rows.append([
            LABEL[t], fmt(get(data, t, "ttft50-s1", "ttfb_p50_ms")),
            fmt(added(data, t, "ttft50-s1", "ttfb_p50_ms")), fmt(get(data, t, "ttft50-s1", "lat_p50_ms")),
            fmt(get(data, t, "ttft50-c50", "rps")), fmt(get(data, t, "ttft50-c50", "lat_p50_ms")),
            fmt(get(data, t, "ttft50-c50", "lat_p99_ms")),
        ])
    md.append("## Upstream with 50 ms to first token\n")
    md.append(table(["target", "stream TTFB p50 ms (1 conn)", "added", "stream total p50 ms",
                     "50 conns req/s", "p50 ms", "p99 ms"], rows))

    rows = []
    for t in ran:
        rows.append([
            LABEL[t] + (" (the mock itself)" if t == "floor" else ""),
            fmt(mib(get(data, t, "rss-idle", "rss_kib")), 1), fmt(mib(get(data, t, "rss-peak", "rss_kib")), 1),
            fmt(get(data, t, "cpu-c50", "cpu_ms_per_1k"), 1), fmt(get(data, t, "cpu-s50", "cpu_ms_per_1k"), 1),
        ])
    md.append("## Resources\n")
    md.append("RSS from /proc/PID/status (VmRSS, summed over the process tree): idle after start, "
              "peak sampled every 0.2 s during the scenarios. CPU = utime+stime from /proc/PID/stat "
              "during the 50-connection runs, per 1,000 requests served.\n")
    md.append(table(["target", "RSS idle MiB", "RSS peak MiB", "CPU ms / 1k req",
                     "CPU ms / 1k streamed req"], rows))

    for me in ("trestle", "trestle-notrace", "trestle-full"):
        if me in ran:
            md.append(compare(data, ran, me))

    notes = []
    for t in targets:
        if "unavailable" in data[t]:
            notes.append(f"- {LABEL[t]}: **not available**: {data[t]['unavailable'].get('reason', '?')}")
            continue
        for scen, row in data[t].items():
            if row.get("error"):
                notes.append(f"- {LABEL[t]}, {scen}: measurement failed: {row['error']}")
            elif row.get("errors") and scen not in ("warmup", "warmup50"):
                first = row.get("first_error") or "non-2xx or socket errors (wrk)"
                notes.append(f"- {LABEL[t]}, {scen}: {row['errors']} failed requests; first: {first}")
    if notes:
        md.append("## Notes\n")
        md.append("\n".join(notes) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
