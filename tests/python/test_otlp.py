"""OTLP ingest with the official OpenTelemetry Python SDK and its OTLP/HTTP exporter: the
app's spans (an agent turn, a tool call) and the gateway's request join in one trace,
through `traceparent` propagated to Trestle by the app."""

import httpx
from openai import OpenAI
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def test_app_spans_join_the_gateway_trace(gateway_url):
    provider = TracerProvider(resource=Resource.create({"service.name": "support-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{gateway_url}/v1/traces")))
    tracer = provider.get_tracer("trestle-tests")
    client = OpenAI(base_url=f"{gateway_url}/v1", api_key="unused")
    with tracer.start_as_current_span("agent.turn", attributes={"gen_ai.conversation.id": "conv-otel"}) as turn:
        with tracer.start_as_current_span("tool.lookup_order") as tool:
            tool.set_attribute("order.id", "A1001")
        headers = {}
        propagate.inject(headers)  # traceparent: the gateway's request becomes a child of the turn
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "where is A1001?"}],
                                       extra_headers=headers)
    provider.force_flush()
    trace_id = format(turn.get_span_context().trace_id, "032x")
    turn_span = format(turn.get_span_context().span_id, "016x")

    trace = None
    for _ in range(50):
        r = httpx.get(f"{gateway_url}/v1/traces/{trace_id}")
        if r.status_code == 200 and r.json()["requests"] and len(r.json()["app_spans"]) == 2:
            trace = r.json()
            break
        import time
        time.sleep(0.05)
    assert trace is not None, r.text
    names = {s["name"]: s for s in trace["app_spans"]}
    assert set(names) == {"agent.turn", "tool.lookup_order"}
    assert names["tool.lookup_order"]["attributes"]["order.id"] == "A1001"
    assert names["tool.lookup_order"]["parent_span_id"] == turn_span
    assert names["agent.turn"]["conversation_id"] == "conv-otel"
    assert names["agent.turn"]["service"] == "support-agent"
    assert trace["requests"][0]["parent_span_id"] == turn_span


def test_the_json_encoding_and_bad_bodies(gateway_url):
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "retrieval",
        "kind": 1, "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000250000000"}]}]}]}
    r = httpx.post(f"{gateway_url}/v1/traces", json=body)
    assert r.status_code == 200, r.text
    t = httpx.get(f"{gateway_url}/v1/traces/0af7651916cd43dd8448eb211c80319c").json()
    assert t["app_spans"][0]["name"] == "retrieval" and t["app_spans"][0]["end_ms"] - t["app_spans"][0]["start_ms"] == 250
    bad = httpx.post(f"{gateway_url}/v1/traces", content=b"\xff\xff", headers={"content-type": "application/x-protobuf"})
    assert bad.status_code == 400 and "protobuf" in bad.json()["error"]["message"]
    wrong = httpx.post(f"{gateway_url}/v1/traces", content=b"hi", headers={"content-type": "text/plain"})
    assert wrong.status_code == 400
