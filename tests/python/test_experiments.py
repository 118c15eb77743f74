"""Prompts, experiments and feedback with the official OpenAI SDK: `prompt_variables` in
`extra_body`, the user in `extra_headers`, the variant and prompt version read from the
response headers, feedback posted for the answer, and the readout."""

import tempfile
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import free_port, start

PROMPT = '''description = "Answers support questions"
variables = { shop = { type = "string", required = true } }
[[versions]]
version = 1
system = "You are a helpful support agent for {{ shop }}."
[[versions]]
version = 2
system = "You are a concise support agent for {{ shop }}. Answer in one sentence."
[labels]
production = 1
'''

CONFIG = '''
[store]
path = "traces.db"
flush_interval_ms = 5
[prompts]
dir = "prompts"
[feedback.thumbs]
type = "boolean"
[providers.local]
kind = "placeholder"
[routes.chat]
targets = ["local/transcript"]
prompt = "support-answer"
[experiments.tone]
route = "chat"
unit = "user"
variants = { control = "support-answer@1", concise = "support-answer@2" }
traffic = { control = 50, concise = 50 }
metrics = ["thumbs"]
min_duration_h = 0
'''


@pytest.fixture(scope="module")
def gateway():
    work = Path(tempfile.mkdtemp(prefix="trestle-exp-"))
    (work / "prompts").mkdir()
    (work / "prompts" / "support-answer.toml").write_text(PROMPT)
    (work / "trestle.toml").write_text(CONFIG)
    port = free_port()
    proc = start(["serve", "--config", "trestle.toml", "--listen", f"127.0.0.1:{port}"], work)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def test_variants_prompts_and_feedback_through_the_sdk(gateway):
    client = OpenAI(base_url=f"{gateway}/v1", api_key="unused")
    answers = {}
    for i in range(60):
        user = f"user-{i}"
        raw = client.chat.completions.with_raw_response.create(
            model="chat",
            messages=[{"role": "user", "content": "Where is my parcel?"}],
            extra_body={"prompt_variables": {"shop": "Acme"}},
            extra_headers={"x-trestle-user-id": user},
        )
        variant = raw.headers["x-trestle-variant"]
        version = raw.headers["x-trestle-prompt-version"]
        text = raw.parse().choices[0].message.content
        assert version == {"control": "support-answer@1", "concise": "support-answer@2"}[variant]
        assert ("concise support agent for Acme" in text) == (variant == "concise")
        answers[user] = (variant, raw.headers["x-trestle-trace-id"])
    # The same user gets the same variant again.
    again = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "And my refund?"}],
        extra_body={"prompt_variables": {"shop": "Acme"}}, extra_headers={"x-trestle-user-id": "user-7"})
    assert again.headers["x-trestle-variant"] == answers["user-7"][0]

    # A missing variable is a 400 naming it, as the SDK's BadRequestError.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-trestle-user-id": "user-1"})
    assert e.value.body["param"] == "prompt_variables.shop"

    for i, (user, (variant, trace_id)) in enumerate(sorted(answers.items())):
        up = variant == "concise" or i % 3 == 0
        r = httpx.post(f"{gateway}/v1/feedback", json={"trace_id": trace_id, "name": "thumbs", "value": up})
        assert r.status_code in (200, 201), r.text
    bad = httpx.post(f"{gateway}/v1/feedback", json={"trace_id": answers["user-1"][1], "name": "thumbs", "value": 5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "value"

    readout = httpx.get(f"{gateway}/v1/experiments/tone").json()
    assert readout["name"] == "tone" and readout["status"] == "running"
    by = {v["name"]: v for v in readout["variants"]}
    assert by["control"]["n"] + by["concise"]["n"] == 60
    assert by["concise"]["mean"] == 1.0
    assert by["concise"]["prob_best"] > 0.95 > by["control"]["prob_best"]
    for v in by.values():
        assert set(v) >= {"name", "n", "mean", "ci_low", "ci_high", "prob_best", "expected_loss"}
    assert readout["decision"].startswith("ship concise")
