"""Guardrails through the official OpenAI Python SDK: a streamed answer arrives with its PII
redacted (even when an entity spans chunks), and a blocked answer arrives as the route's
template, parsed like any other answer."""

import tempfile
from pathlib import Path

import pytest
from openai import OpenAI

from conftest import free_port, start

CONFIG = """
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:{up}/v1"
[guardrails.pii]
kind = "pii"
action = "redact"
entities = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "PERSON", "LOCATION"]
[guardrails.competitors]
kind = "deny_terms"
action = "block"
terms = ["Globex"]
[routes.chat]
targets = ["up/m1"]
guardrails = { input = [], output = ["pii", "competitors"] }
[routes.chat.fallback]
template = "Sorry, I can't talk about that."
"""


@pytest.fixture(scope="module")
def client():
    work = tempfile.mkdtemp(prefix="trestle-sdk-guard-")
    up, gw = free_port(), free_port()
    procs = [start(["mock", "--listen", f"127.0.0.1:{up}", "--tokens-per-sec", "300"], work)]
    (Path(work) / "trestle.toml").write_text(CONFIG.replace("{up}", str(up)))
    procs.append(start(["serve", "--config", "trestle.toml", "--listen", f"127.0.0.1:{gw}"], work))
    yield OpenAI(base_url=f"http://127.0.0.1:{gw}/v1", api_key="unused", max_retries=0)
    for p in procs:
        p.terminate()
        p.wait(timeout=20)


def test_a_streamed_answer_arrives_redacted(client):
    said = "Call Priya Raman on +44 20 7946 0958 or pay with 4111 1111 1111 1111 today."
    chunks = list(
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": said}], stream=True
        )
    )
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    text = "".join(pieces)
    assert text == "Call <PERSON> on <PHONE_NUMBER> or pay with <CREDIT_CARD> today."
    assert len([p for p in pieces if p]) > 1, "the answer was streamed, not sent whole"
    assert not any("4111" in p for p in pieces)


def test_a_blocked_answer_is_served_as_the_template(client):
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "Globex does it cheaper"}]
    )
    assert raw.headers["x-trestle-fallback-level"] == "template"
    assert raw.parse().choices[0].message.content == "Sorry, I can't talk about that."
    chunks = list(
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "Globex does it cheaper"}],
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Sorry, I can't talk about that."
