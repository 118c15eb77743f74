"""OTLP ingest load for bench/otel.sh: POSTs pre-encoded ExportTraceServiceRequest payloads
(protobuf) to a gateway's /v1/traces at a fixed span rate, then checks that every span was
stored (rows in `app_spans`) and that `trestle_otlp_spans_total` counted none as failed.

usage: otlp_load.py --url http://127.0.0.1:18300 --db traces.db
                    [--rate 10000] [--duration 30] [--batch 500] [--senders 4]

Needs the `opentelemetry-proto` Python package (it comes with
opentelemetry-exporter-otlp-proto-http). Every payload is encoded before the clock starts,
each span with its own ids (10 spans a trace), so the sender only sends. Requests go out on a
fixed schedule (open loop): a gateway that falls behind shows as late sends, not as a lower
offered rate. Prints one JSON line.
"""

import argparse
import http.client
import json
import os
import re
import sqlite3
import sys
import threading
import time
import urllib.parse
import urllib.request

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

SPANS_PER_TRACE = 10


def kv(key, value):
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def payload(index, batch, now_ns):
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "bench-agent"))
    ss = rs.scope_spans.add()
    ss.scope.name = "bench"
    for i in range(batch):
        n = index * batch + i
        trace = n // SPANS_PER_TRACE
        s = ss.spans.add()
        s.trace_id = (trace + 1).to_bytes(16, "big")
        s.span_id = (n + 1).to_bytes(8, "big")
        if n % SPANS_PER_TRACE:
            s.parent_span_id = (trace * SPANS_PER_TRACE + 1).to_bytes(8, "big")
        s.name = "agent.turn" if n % SPANS_PER_TRACE == 0 else "tool.lookup_order"
        s.kind = Span.SPAN_KIND_INTERNAL
        s.start_time_unix_nano = now_ns + n * 1000
        s.end_time_unix_nano = now_ns + n * 1000 + 2_500_000
        s.attributes.extend(
            [
                kv("gen_ai.conversation.id", f"conv-{trace % 1000}"),
                kv("tool.name", "lookup_order"),
                kv("order.id", n),
            ]
        )
    return req.SerializeToString()


def stored_rows(db):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM app_spans").fetchone()[0]
    finally:
        conn.close()


def otlp_counters(base):
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'trestle_otlp_spans_total\{result="(\w+)"\} (\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--rate", type=float, default=10000)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--senders", type=int, default=4)
    a = ap.parse_args()

    n_requests = int(a.rate * a.duration / a.batch)
    t_enc = time.perf_counter()
    now_ns = time.time_ns()
    bodies = [payload(i, a.batch, now_ns) for i in range(n_requests)]
    encode_s = time.perf_counter() - t_enc
    print(
        f"encoded {n_requests} payloads of {a.batch} spans ({sum(map(len, bodies)) / 1e6:.1f} MB) in {encode_s:.1f} s",
        file=sys.stderr,
    )

    base = a.url.rstrip("/")
    host = urllib.parse.urlparse(base)
    rows_before = stored_rows(a.db) if os.path.exists(a.db) else 0
    before = otlp_counters(base)
    interval = a.batch / a.rate
    next_index = [0]
    lock = threading.Lock()
    results = []  # (index, lateness_s, latency_s, status)

    def sender():
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= n_requests:
                break
            due = t0 + i * interval
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            sent = time.perf_counter()
            try:
                conn.request(
                    "POST", "/v1/traces", body=bodies[i], headers={"Content-Type": "application/x-protobuf"}
                )
                r = conn.getresponse()
                r.read()
                status = r.status
            except OSError as e:
                status = f"error: {e}"
                conn.close()
                conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
            done = time.perf_counter()
            with lock:
                results.append((i, sent - due, done - sent, status))
        conn.close()

    t0 = time.perf_counter() + 0.2
    threads = [threading.Thread(target=sender) for _ in range(a.senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    time.sleep(1.0)

    ok = sum(1 for r in results if r[3] == 200)
    statuses = {}
    for r in results:
        statuses[str(r[3])] = statuses.get(str(r[3]), 0) + 1
    lat = sorted(r[2] for r in results)
    late = max(r[1] for r in results)
    sent_spans = n_requests * a.batch
    rows = stored_rows(a.db) - rows_before
    after = otlp_counters(base)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    print(
        json.dumps(
            {
                "spans_sent": sent_spans,
                "requests": n_requests,
                "batch": a.batch,
                "offered_spans_per_s": a.rate,
                "achieved_spans_per_s": round(sent_spans / wall, 1),
                "wall_s": round(wall, 2),
                "statuses": statuses,
                "latency_p50_ms": round(lat[len(lat) // 2] * 1000, 2),
                "latency_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2),
                "latency_max_ms": round(lat[-1] * 1000, 2),
                "latest_send_behind_schedule_ms": round(max(late, 0) * 1000, 2),
                "rows_stored": rows,
                "otlp_spans_total": delta,
                "all_stored": rows == sent_spans and ok == n_requests and delta.get("failed", 0) == 0,
            }
        )
    )


if __name__ == "__main__":
    main()
