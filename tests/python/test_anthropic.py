"""The official Anthropic Python SDK against Trestle's `/v1/messages` front door, served by a
route whose targets are OpenAI-compatible (`trestle mock` upstreams)."""

import json
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anthropic
import httpx
import pytest
from anthropic import Anthropic
from conftest import BIN, free_port, start

TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    }
]


@pytest.fixture()
def client(gateway_url):
    return Anthropic(base_url=gateway_url, api_key="unused", max_retries=0)


def wait_trace(gateway_url, trace_id):
    for _ in range(100):
        r = httpx.get(f"{gateway_url}/v1/traces/{trace_id}")
        if r.status_code == 200:
            return r.json()
        time.sleep(0.05)
    raise AssertionError(f"trace {trace_id} was not recorded")


def test_text_non_streamed_is_traced(gateway_url, client):
    raw = client.messages.with_raw_response.create(
        model="chat",
        max_tokens=100,
        system="be brief",
        messages=[{"role": "user", "content": "hello anthropic sdk"}],
        metadata={"user_id": "claude-user"},
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text"
    assert message.content[0].text == "hello anthropic sdk"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.output_tokens == 3 and message.usage.input_tokens > 0
    trace_id = raw.headers["x-trestle-trace-id"]
    assert raw.headers["x-trestle-fallback-level"] == "primary"
    assert raw.headers["request-id"] == trace_id
    trace = wait_trace(gateway_url, trace_id)
    assert trace["requests"][0]["user_id"] == "claude-user"
    assert trace["requests"][0]["route"] == "chat"
    sent = trace["requests"][0]["request"]["messages"]
    assert sent[0] == {"role": "system", "content": "be brief"}
    assert sent[1]["content"] == "hello anthropic sdk"


def test_system_blocks_and_multi_turn(client):
    message = client.messages.create(
        model="chat",
        max_tokens=100,
        system=[{"type": "text", "text": "you are terse", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": [{"type": "text", "text": "first answer"}]},
            {"role": "user", "content": [{"type": "text", "text": "second question"}]},
        ],
        # This SDK release takes the sampling parameters only as extra body fields.
        extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 20, "stop_sequences": ["never"]},
    )
    assert message.content[0].text == "second question"


def test_max_tokens_stops_the_answer(client):
    message = client.messages.create(
        model="chat", max_tokens=2, messages=[{"role": "user", "content": "one two three four five"}]
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


def test_stop_sequences(client):
    message = client.messages.create(
        model="chat",
        max_tokens=50,
        stop_sequences=["END"],
        messages=[{"role": "user", "content": "alpha beta END gamma"}],
    )
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "END"
    assert message.content[0].text.strip() == "alpha beta"
    with client.messages.stream(
        model="chat",
        max_tokens=50,
        stop_sequences=["END"],
        messages=[{"role": "user", "content": "alpha beta END gamma"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "END"


def test_what_cannot_be_carried_is_named(client):
    raw = client.messages.with_raw_response.create(
        model="chat",
        max_tokens=100,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "cache me", "cache_control": {"type": "ephemeral"}}],
            }
        ],
    )
    assert raw.parse().content[0].text == "cache me"
    dropped = raw.headers["x-trestle-dropped-params"].split(", ")
    assert "thinking" in dropped and "cache_control" in dropped


def test_text_streamed_with_the_stream_helper(client):
    with client.messages.stream(
        model="chat", max_tokens=100, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two three"
    assert final.content[0].text == "one two three"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3
    assert final.usage.input_tokens > 0


def test_text_streamed_raw_events(client):
    raw = client.messages.with_raw_response.create(
        model="chat", max_tokens=100, stream=True, messages=[{"role": "user", "content": "a b"}]
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert len(raw.headers["x-trestle-trace-id"]) == 32
    events = list(raw.parse())
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
    assert "".join(deltas) == "a b"
    assert events[-2].delta.stop_reason == "end_turn"


def test_tool_round_trip(client):
    first = client.messages.create(
        model="chat",
        max_tokens=200,
        tools=TOOLS,
        tool_choice={"type": "auto"},
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather"
    assert isinstance(call.input["city"], str)
    second = client.messages.create(
        model="chat",
        max_tokens=200,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
        ],
    )
    assert second.stop_reason == "end_turn"
    assert [b.type for b in second.content] == ["text"]
    assert second.content[0].text == "weather in Paris?"


def test_toolu_ids_survive_the_round_trip(gateway_url, client):
    raw = client.messages.with_raw_response.create(
        model="chat",
        max_tokens=200,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_01AbC", "name": "get_weather", "input": {"city": "Oslo"}}
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01AbC", "content": "rain"}]},
        ],
    )
    assert raw.parse().content[0].text == "weather in Oslo?"
    sent = wait_trace(gateway_url, raw.headers["x-trestle-trace-id"])["requests"][0]["request"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "toolu_01AbC"
    assert sent[2] == {"role": "tool", "content": "rain", "tool_call_id": "toolu_01AbC"}


def test_tool_round_trip_streamed(client):
    with client.messages.stream(
        model="chat",
        max_tokens=200,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    call = first.content[0]
    assert call.type == "tool_use" and call.name == "get_weather"
    assert isinstance(call.input["city"], str)
    with client.messages.stream(
        model="chat",
        max_tokens=200,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
        ],
    ) as stream:
        text = "".join(stream.text_stream)
        second = stream.get_final_message()
    assert text == "weather?"
    assert second.stop_reason == "end_turn"


def test_missing_max_tokens_is_an_anthropic_400(gateway_url):
    r = httpx.post(
        f"{gateway_url}/v1/messages",
        headers={"anthropic-version": "2023-06-01", "x-api-key": "unused"},
        json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    # Refused before the pipeline, it is still traced, with its error.
    trace = wait_trace(gateway_url, r.headers["x-trestle-trace-id"])
    refused = trace["requests"][0]
    assert refused["status"] == 400, trace
    assert "max_tokens" in refused["error"], trace


def test_errors_raise_the_sdks_exceptions(client):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-route", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "not_found_error"
    assert "no-such-route" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(
            model="chat",
            max_tokens=10,
            messages=[{"role": "user", "content": [{"type": "video", "source": {}}]}],
        )
    assert "messages[0].content[0]" in e.value.body["error"]["message"]


def test_count_tokens(client):
    short = client.messages.count_tokens(model="chat", messages=[{"role": "user", "content": "hi"}])
    longer = client.messages.count_tokens(
        model="chat",
        system="be brief",
        tools=TOOLS,
        messages=[{"role": "user", "content": "hello there, how is the weather in Paris today?"}],
    )
    assert short.input_tokens > 0
    assert longer.input_tokens > short.input_tokens


# An Anthropic target: a fake written from Anthropic's public Messages reference records what
# the gateway sends, so what survives the two translations can be checked.
class FakeAnthropic(BaseHTTPRequestHandler):
    received = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        FakeAnthropic.received.append((self.path, dict(self.headers), body))
        if self.path == "/v1/messages/count_tokens":
            return self.reply({"input_tokens": 4242})
        usage = {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 7, "cache_creation_input_tokens": 3}
        message = {
            "id": "msg_fake01",
            "type": "message",
            "role": "assistant",
            "model": "claude-fake",
            "content": [{"type": "text", "text": "pong"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        thinking = []
        if body.get("thinking"):
            message["content"].insert(0, {"type": "thinking", "thinking": "hmm", "signature": "sig-fake"})
            thinking = [
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "signature_delta", "signature": "sig-fake"}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ]
        if not body.get("stream"):
            return self.reply(message)
        at = len(thinking) and 1
        events = [
            ("message_start", {"type": "message_start", "message": {**message, "content": [], "stop_reason": None,
                                                                     "usage": {**usage, "output_tokens": 0}}}),
            *thinking,
            ("content_block_start", {"type": "content_block_start", "index": at,
                                     "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": at,
                                     "delta": {"type": "text_delta", "text": "pong"}}),
            ("content_block_stop", {"type": "content_block_stop", "index": at}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": 1}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for name, data in events:
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

    def reply(self, value):
        out = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture(scope="module")
def claude_gateway():
    fake = ThreadingHTTPServer(("127.0.0.1", 0), FakeAnthropic)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="trestle-anthropic-")
    (Path(work) / "trestle.toml").write_text(
        f"""
[providers.claude]
kind = "anthropic"
base_url = "http://127.0.0.1:{fake.server_address[1]}"
api_key = "sk-fake"
[routes.claude]
targets = ["claude/claude-fake"]
"""
    )
    port = free_port()
    proc = start(["serve", "--config", "trestle.toml", "--listen", f"127.0.0.1:{port}"], work)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)
    fake.shutdown()


def test_an_anthropic_target_keeps_cache_control_and_tool_ids(claude_gateway):
    client = Anthropic(base_url=claude_gateway, api_key="unused", max_retries=0)
    FakeAnthropic.received.clear()
    message = client.messages.create(
        model="claude",
        max_tokens=64,
        system=[{"type": "text", "text": "long stable rules", "cache_control": {"type": "ephemeral"}}],
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_01AbC", "name": "get_weather", "input": {"city": "Oslo"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01AbC", "content": "rain"},
                    {"type": "text", "text": "and so?", "cache_control": {"type": "ephemeral"}},
                ],
            },
        ],
    )
    assert message.content[0].text == "pong"
    assert message.usage.input_tokens == 5
    assert message.usage.cache_read_input_tokens == 7
    assert message.usage.cache_creation_input_tokens == 3
    path, headers, sent = FakeAnthropic.received[-1]
    assert path == "/v1/messages" and headers["x-api-key"] == "sk-fake"
    assert sent["system"] == [{"type": "text", "text": "long stable rules", "cache_control": {"type": "ephemeral"}}]
    assert sent["messages"][1]["content"][0]["id"] == "toolu_01AbC"
    last = sent["messages"][2]["content"]
    assert last[0]["type"] == "tool_result" and last[0]["tool_use_id"] == "toolu_01AbC"
    assert last[1] == {"type": "text", "text": "and so?", "cache_control": {"type": "ephemeral"}}

    with client.messages.stream(
        model="claude", max_tokens=64, messages=[{"role": "user", "content": "ping"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "pong"
    assert final.usage.output_tokens == 1 and final.usage.cache_read_input_tokens == 7

    counted = client.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "ping"}])
    assert counted.input_tokens == 4242
    path, _, sent = FakeAnthropic.received[-1]
    assert path == "/v1/messages/count_tokens" and "max_tokens" not in sent


def test_thinking_round_trips_through_an_anthropic_target(claude_gateway):
    client = Anthropic(base_url=claude_gateway, api_key="unused", max_retries=0)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    first = client.messages.create(
        model="claude", max_tokens=2048, thinking=thinking, messages=[{"role": "user", "content": "think"}]
    )
    assert [b.type for b in first.content] == ["thinking", "text"]
    assert first.content[0].thinking == "hmm" and first.content[0].signature == "sig-fake"
    assert FakeAnthropic.received[-1][2]["thinking"] == thinking
    with client.messages.stream(
        model="claude",
        max_tokens=2048,
        thinking=thinking,
        messages=[
            {"role": "user", "content": "think"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": "again"},
        ],
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].signature == "sig-fake"
    assert final.content[1].text == "pong"
    sent = FakeAnthropic.received[-1][2]
    assert sent["messages"][1]["content"][0] == {"type": "thinking", "thinking": "hmm", "signature": "sig-fake"}


def test_client_keys_work_as_x_api_key():
    work = tempfile.mkdtemp(prefix="trestle-anthropic-keys-")
    db = Path(work) / "traces.db"
    key = subprocess.run(
        [BIN, "keys", "create", "--name", "agent", "--tenant", "acme", "--db", str(db)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(work) / "trestle.toml").write_text(
        f'[store]\npath = "{db}"\n[providers.local]\nkind = "placeholder"\n[routes.chat]\ntargets = ["local/echo"]\n'
    )
    port = free_port()
    proc = start(["serve", "--config", "trestle.toml", "--listen", f"127.0.0.1:{port}"], work)
    try:
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(anthropic.AuthenticationError) as e:
            Anthropic(base_url=url, api_key="sk-not-a-trestle-key", max_retries=0).messages.create(
                model="chat", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
        assert e.value.body["type"] == "error"
        assert e.value.body["error"]["type"] == "authentication_error"
        client = Anthropic(base_url=url, api_key=key, max_retries=0)
        message = client.messages.create(model="chat", max_tokens=10, messages=[{"role": "user", "content": "keyed"}])
        assert message.content[0].text == "keyed"
        assert client.messages.count_tokens(model="chat", messages=[{"role": "user", "content": "x"}]).input_tokens > 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)
