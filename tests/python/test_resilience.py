"""Fallback levels through the official OpenAI Python SDK: a template answer streams and
parses like a model's, and the `omitted` level raises an SDK error an app can key on."""

import tempfile
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from conftest import free_port, start

CONFIG = """
[providers.dead]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[routes.busy]
targets = ["dead/m1"]
retries = 0
[routes.busy.fallback]
template = "Answers are paused. You asked: {{ last_user_message }}"
[routes.hidden]
targets = ["dead/m1"]
retries = 0
fallback = { omitted = true, omitted_status = 503, omitted_message = "suggestions are off" }
"""


@pytest.fixture(scope="module")
def client():
    work = tempfile.mkdtemp(prefix="trestle-sdk-fallback-")
    (Path(work) / "trestle.toml").write_text(CONFIG)
    port = free_port()
    proc = start(["serve", "--config", "trestle.toml", "--listen", f"127.0.0.1:{port}"], work)
    yield OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    proc.terminate()
    proc.wait(timeout=20)


def test_template_answer_parses_and_streams(client):
    raw = client.chat.completions.with_raw_response.create(
        model="busy", messages=[{"role": "user", "content": "where is my parcel"}]
    )
    assert raw.headers["x-trestle-fallback-level"] == "template"
    assert raw.parse().choices[0].message.content == "Answers are paused. You asked: where is my parcel"

    chunks = list(
        client.chat.completions.create(
            model="busy",
            messages=[{"role": "user", "content": "stream it"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Answers are paused. You asked: stream it"
    assert chunks[-1].usage is not None


def test_omitted_raises_a_feature_unavailable_error(client):
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="hidden", messages=[{"role": "user", "content": "x"}])
    err = info.value
    assert err.status_code == 503
    assert err.body["type"] == "feature_unavailable"
    assert err.body["message"] == "suggestions are off"
    assert err.response.headers["x-trestle-fallback-level"] == "omitted"
