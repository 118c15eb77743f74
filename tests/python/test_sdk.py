"""The official OpenAI Python SDK against Trestle, with `trestle mock` upstreams."""

import json

import httpx
import openai
import pytest
from openai import OpenAI


@pytest.fixture()
def client(gateway_url):
    return OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0)


def test_non_streamed(client):
    raw = client.chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello sdk"}],
        extra_headers={"x-trestle-conversation-id": "sdk-conv"},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello sdk"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 2
    assert raw.headers["x-trestle-fallback-level"] == "primary"
    assert len(raw.headers["x-trestle-trace-id"]) == 32


def test_streamed_with_usage(client):
    stream = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "one two three"
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 3


def test_stream_without_usage_has_no_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "a b"}], stream=True)
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]


def test_tool_call_round_trip(client):
    first = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "weather in Paris?"}], tools=TOOLS, tool_choice="auto"
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    second = client.chat.completions.create(
        model="chat",
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content == "weather in Paris?"


def test_streamed_tool_call(client):
    name, args = None, ""
    for chunk in client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS, stream=True
    ):
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                name = name or tc.function.name
                args += tc.function.arguments or ""
    assert name == "get_weather"
    assert "city" in json.loads(args)


def test_json_modes(client):
    out = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"}
    )
    assert json.loads(out.choices[0].message.content)["reply"] == "hi"
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "number"}}}
    out = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    parsed = json.loads(out.choices[0].message.content)
    assert isinstance(parsed["answer"], str) and isinstance(parsed["score"], float)


def test_errors_raise_the_sdks_exceptions(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-route", messages=[{"role": "user", "content": "x"}])
    assert "Routes: chat" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chat", messages=[])
    assert e.value.body["code"] == "invalid_request"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}], temperature=5)


def test_models_and_embeddings(client):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "chat" and "up/m1" in ids
    emb = client.embeddings.create(model="chat", input=["hello", "world"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 64


def test_traces_by_conversation(gateway_url, client):
    client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "traced"}],
        user="sdk-user",
        extra_headers={"x-trestle-conversation-id": "sdk-trace"},
    )
    import time

    for _ in range(100):
        data = httpx.get(f"{gateway_url}/v1/traces", params={"conversation_id": "sdk-trace"}).json()["data"]
        if data:
            break
        time.sleep(0.05)
    assert data[0]["user_id"] == "sdk-user"
    full = httpx.get(f"{gateway_url}/v1/traces/{data[0]['trace_id']}").json()
    assert full["requests"][0]["request"]["messages"][0]["content"] == "traced"
