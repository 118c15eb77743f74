"""The web UI in a real browser: Playwright for Python driving Debian's Chromium against the
real binary. Real traffic goes through the gateway (the OpenAI SDK, with the OpenTelemetry
SDK exporting the app's own spans over OTLP), two eval runs land in the store, and the pages
are driven end to end: search a conversation, open it, open a trace and its waterfall (with
an OTLP-ingested tool span), the routes, experiments, evals and drift pages, a rubric label
and a blind side-by-side preference, whose labels `trestle eval calibrate` then reads.
Screenshots go to target/ui-screenshots (docs/observability.md shows them)."""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from opentelemetry import propagate, trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from playwright.sync_api import expect, sync_playwright

from conftest import BIN, free_port, start

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("TRESTLE_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
SHOTS = Path(os.environ.get("TRESTLE_UI_SHOTS", ROOT / "target/ui-screenshots"))
# Flags a closed network needs: no background fetches, no first-run work.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def ui_gateway():
    work = Path(tempfile.mkdtemp(prefix="trestle-ui-"))
    db = work / "trestle.db"
    config = work / "gateway.toml"
    # The example's provider files are relative to the repository root.
    config.write_text((ROOT / "examples/evals/gateway.toml").read_text()
                      .replace('path = ".trestle/evals-example.db"', f'path = "{db}"')
                      .replace('file = "examples/', f'file = "{ROOT}/examples/') + f"""
# An A/B experiment on two prompt versions, for the experiments page.
[prompts]
dir = "{ROOT}/examples/prompts/prompts"
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
variants = {{ control = "support-answer@1", concise = "support-answer@2" }}
traffic = {{ control = 50, concise = 50 }}
metrics = ["thumbs", "latency_ms"]
min_duration_h = 0
""")
    port = free_port()
    proc = start(["serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"], work)
    yield f"http://127.0.0.1:{port}", config, db
    proc.terminate()
    proc.wait(timeout=20)


def wait_for(fn, what, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def traffic(url):
    """A conversation of three turns, the first inside an app trace with a failed tool."""
    provider = TracerProvider(resource=Resource.create({"service.name": "support-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    tracer = provider.get_tracer("trestle-ui-tests")
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    conv = {"x-trestle-conversation-id": "conv-ui", "x-trestle-user-id": "ana"}
    with tracer.start_as_current_span("invoke_agent support", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.conversation.id": "conv-ui"}) as turn:
        with tracer.start_as_current_span("execute_tool lookup_order", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
                "gen_ai.tool.call.arguments": '{"order": "A1001"}'}) as tool:
            tool.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, "orders service timed out"))
        headers = dict(conv)
        propagate.inject(headers)
        client.chat.completions.create(model="support", extra_headers=headers,
                                       messages=[{"role": "user", "content": "How do I return an item?"}])
    provider.force_flush()
    for q in ["How long does a refund take?", "Can I change my shipping address?"]:
        client.chat.completions.create(model="support", extra_headers=conv,
                                       messages=[{"role": "user", "content": q}])
    # Experiment traffic: twenty users, thumbs on each answer.
    for i in range(20):
        r = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "Where is my parcel?"}],
            extra_headers={"x-trestle-user-id": f"user-{i}"}, extra_body={"prompt_variables": {"shop": "Acme"}})
        httpx.post(f"{url}/v1/feedback", json={"trace_id": r.headers["x-trestle-trace-id"], "name": "thumbs",
                                              "value": i % 3 != 0}).raise_for_status()
    return format(turn.get_span_context().trace_id, "032x")


def eval_run(url, config, label):
    out = subprocess.run([BIN, "eval", "run", str(ROOT / "examples/evals/suite.toml"), "--url", url,
                          "--db", str(config.parent / "trestle.db"), "--label", label,
                          "--json", str(config.parent / f"{label}.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode in (0, 1), out.stdout + out.stderr
    return json.loads((config.parent / f"{label}.json").read_text())["summary"]["run"]["id"]


def test_the_ui_end_to_end(ui_gateway):
    url, config, db = ui_gateway
    trace_id = traffic(url)
    run_a = eval_run(url, config, "baseline")
    run_b = eval_run(url, config, "candidate")
    wait_for(lambda: len(httpx.get(f"{url}/v1/traces", params={"conversation_id": "conv-ui"}).json()["data"]) == 3,
             "three conversation turns in the store")
    wait_for(lambda: len(httpx.get(f"{url}/v1/traces/{trace_id}").json().get("app_spans", [])) == 2,
             "the app's two spans")
    SHOTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})

        # Search by conversation id.
        page.goto(f"{url}/ui")
        page.fill("input[name=conversation_id]", "conv-ui")
        page.click("form.search button[type=submit]")
        rows = page.locator("table.traces tbody tr")
        expect(rows).to_have_count(3)
        page.screenshot(path=str(SHOTS / "search.png"), full_page=True)
        # Other filters narrow: no trace of this conversation had a server error.
        page.select_option("select[name=outcome]", "error")
        page.click("form.search button[type=submit]")
        expect(rows).to_have_count(0)

        # The conversation: three turns in order, each with its figures, and the total cost.
        page.goto(f"{url}/ui/conversations/conv-ui")
        turns = page.locator("li.turn")
        expect(turns).to_have_count(3)
        expect(turns.nth(0).locator(".q")).to_contain_text("How do I return an item?")
        expect(turns.nth(2).locator(".q")).to_contain_text("shipping address")
        expect(turns.nth(0).locator(".meta")).to_contain_text("cost $")
        total = float(page.locator("#total-cost").inner_text().lstrip("$"))
        api = httpx.get(f"{url}/v1/conversations/conv-ui").json()
        assert total == pytest.approx(api["total_cost_usd"], abs=1e-6) and total > 0
        # The failed tool span followed by an answer that ignores it is flagged.
        expect(page.locator("ul.anomalies")).to_contain_text("tool_failure_unmentioned")
        page.screenshot(path=str(SHOTS / "conversation.png"), full_page=True)

        # The trace: the waterfall holds the app's spans (OTLP) and the gateway's.
        turns.nth(0).locator("a.mono").click()
        expect(page).to_have_url(f"{url}/ui/traces/{trace_id}")
        tool = page.locator("details.span[data-kind=tool]")
        expect(tool).to_have_count(1)
        expect(page.locator("details.span[data-kind=agent]")).to_have_count(1)
        expect(page.locator("details.span[data-kind=request]")).to_have_count(1)
        expect(page.locator("details.span[data-kind=attempt]")).to_have_count(1)
        expect(page.locator("details.span[data-kind=guardrail]")).to_have_count(1)
        tool.locator("summary").click()
        expect(tool.locator(".body")).to_contain_text("lookup_order")
        expect(tool.locator(".body")).to_contain_text("orders service timed out")
        request = page.locator("details.span[data-kind=request]")
        request.locator("summary").click()
        expect(request.locator(".body")).to_contain_text("How do I return an item?")
        page.screenshot(path=str(SHOTS / "trace.png"), full_page=True)

        # Routes against their budgets.
        page.goto(f"{url}/ui/routes?window=1h")
        support = page.locator("tr[data-route=support]")
        expect(support).to_have_count(1)
        expect(support).to_contain_text("progressive")
        page.screenshot(path=str(SHOTS / "routes.png"), full_page=True)

        # Eval runs, and one run's cases.
        page.goto(f"{url}/ui/evals")
        expect(page.locator("table.runs tbody tr")).to_have_count(2)
        page.click(f"a:text('{run_a}')")
        expect(page.locator("table.cases tbody tr").first).to_be_visible()
        page.screenshot(path=str(SHOTS / "eval-run.png"), full_page=True)
        page.goto(f"{url}/ui/evals")
        page.screenshot(path=str(SHOTS / "evals.png"), full_page=True)

        # Experiments and drift pages render on this config (none configured; few requests).
        page.goto(f"{url}/ui/experiments")
        experiment = page.locator("section.experiment")
        expect(experiment).to_contain_text("tone")
        expect(experiment.locator("tbody tr")).to_have_count(2)
        page.screenshot(path=str(SHOTS / "experiments.png"), full_page=True)
        page.goto(f"{url}/ui/drift?window=1h&reference=1d")
        expect(page.locator("#drifted-count")).to_be_visible()
        page.screenshot(path=str(SHOTS / "drift.png"), full_page=True)

        # Human review: score the flagged trace on the rubric.
        # The flagged queue: the failed-tool trace and the traces with negative feedback.
        page.goto(f"{url}/ui/review?source=flagged")
        expect(page.locator("p.count")).to_contain_text("left in this queue")
        assert int(page.locator("p.count").inner_text().split()[0]) >= 2
        reviewed = page.locator("form.rubric input[name=id]").get_attribute("value")
        for criterion, score in [("accuracy", 4), ("helpfulness", 3), ("tone", 5), ("completeness", 3), ("safety", 5)]:
            page.check(f"input[name={criterion}][value='{score}']")
        page.fill("form.rubric input[name=rater]", "ana")
        page.screenshot(path=str(SHOTS / "review.png"), full_page=True)
        page.click("form.rubric button[type=submit]")
        expect(page.locator("#saved")).to_contain_text(reviewed)

        # A blind side-by-side preference between the two runs' answers.
        page.goto(f"{url}/ui/review/compare?a={run_a}&b={run_b}")
        expect(page.locator("div.pair .side")).to_have_count(2)
        page.fill("form.prefer input[name=rater]", "ana")
        page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)
        page.click("form.prefer button[value=left]")
        expect(page.locator("#saved")).to_be_visible()
        browser.close()

    # The labels, in the format `trestle eval calibrate` reads.
    text = httpx.get(f"{url}/v1/review/labels").text
    labels = [json.loads(line) for line in text.splitlines()]
    rubric = {l["criterion"]: l["score"] for l in labels if l["id"] == reviewed}
    assert rubric == {"accuracy": 4, "helpfulness": 3, "tone": 5, "completeness": 3, "safety": 5}
    preference = [l for l in labels if l["criterion"] == "preference"]
    assert len(preference) == 1 and preference[0]["score"] in (1, -1)
    assert preference[0]["a"] == run_a and preference[0]["b"] == run_b
    labels_file = config.parent / "human.jsonl"
    labels_file.write_text(text)
    judge_file = config.parent / "judge.jsonl"
    judge_file.write_text("".join(json.dumps({"id": reviewed, "criterion": c, "score": s}) + "\n"
                                  for c, s in rubric.items()))
    out = subprocess.run([BIN, "eval", "calibrate", "--judge", str(judge_file), "--labels", str(labels_file),
                          "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kappa" in out.stdout.lower()
