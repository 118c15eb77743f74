"""A request a target cannot take as written is the client's error: the official OpenAI SDK
(with its default retries on) gets one 400 naming the field, never a 502 it would retry, and
the route's fallback does not paper over it."""

import json
import tempfile
import time
import urllib.request
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from conftest import free_port, start

CONFIG = """
[providers.claude]
kind = "anthropic"
base_url = "http://127.0.0.1:9"
api_key = "unused"
[providers.gem]
kind = "gemini"
base_url = "http://127.0.0.1:9/v1beta"
api_key = "unused"
[routes.chat]
targets = ["claude/claude-3-5-haiku-latest"]
[routes.chat.fallback]
template = "Answers are paused."
[routes.gem]
targets = ["gem/gemini-2.0-flash"]
"""


@pytest.fixture(scope="module")
def gateway():
    work = tempfile.mkdtemp(prefix="trestle-sdk-refusals-")
    (Path(work) / "trestle.toml").write_text(CONFIG)
    port = free_port()
    proc = start(["serve", "--config", "trestle.toml", "--listen", f"127.0.0.1:{port}"], work)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)


def traces(url, conversation):
    with urllib.request.urlopen(f"{url}/v1/traces?conversation_id={conversation}") as r:
        return json.load(r)["data"]


@pytest.mark.parametrize(
    "route,messages,param",
    [
        ("chat", [{"role": "function", "name": "f", "content": "1"}], "messages[0].role"),
        (
            "chat",
            [{"role": "user", "content": [
                {"type": "text", "text": "listen"},
                {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}]}],
            "messages[0].content[1]",
        ),
        (
            "gem",
            [{"role": "user", "content": "x"},
             {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                 "function": {"name": "f", "arguments": "not json"}}]}],
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            "gem",
            [{"role": "user", "content": "x"},
             {"role": "tool", "tool_call_id": "nobody-made-this", "content": "42"}],
            "messages[1].tool_call_id",
        ),
    ],
)
def test_refusals_are_one_400_naming_the_param(gateway, route, messages, param):
    conversation = f"refusal-{route}-{param}"
    client = OpenAI(base_url=f"{gateway}/v1", api_key="unused")  # default retries: 2
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=route,
            messages=messages,
            extra_headers={"x-trestle-conversation-id": conversation},
        )
    err = info.value
    assert err.status_code == 400
    assert err.body["type"] == "invalid_request_error"
    assert err.body["code"] == "unsupported_by_target"
    assert err.body["param"] == param
    assert "cannot take this request" in err.body["message"]
    # One call, one trace: the SDK did not retry, and no fallback answered.
    for _ in range(50):
        found = traces(gateway, conversation)
        if found:
            break
        time.sleep(0.05)
    assert len(found) == 1, found
    assert found[0]["status"] == 400
