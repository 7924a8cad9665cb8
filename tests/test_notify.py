"""The notification outbox against the real sandbox HTTP server (its own process, over a
socket): Slack (webhook and chat.postMessage threads), PagerDuty alert and change events and
Statuspage; 429 + Retry-After for minutes, 400, 5xx until the give-up time, a dead sink and a
silent one, kill -9 while a notice is pending; every notice journaled before it is sent and
its end after, and no secret anywhere. Time is injected: nothing here sleeps minutes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from controlroom.config.loader import LoadedConfig, load_config
from controlroom.config.secrets import SecretStore
from controlroom.notify.delivery import retry_after_seconds
from controlroom.notify.notice import deployment_dedup_key, render_message
from controlroom.notify.outbox import Outbox, journal_state
from controlroom.notify.slack import slack_text
from controlroom.release.journal import Journal
from controlroom.sandbox.runner import Sandbox

pytestmark = pytest.mark.timeout(90)


class FakeTime:
    """The outbox's clock and sleep: a wait moves the clock on at once, and what the header
    said at each wait is kept."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self.outbox: Outbox | None = None
        self.headers: list[tuple[str, ...]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self.outbox is not None:
            self.headers.append(self.outbox.view().pending)
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(simulate=False, locations=20) as running:
        yield running


@pytest.fixture(scope="module")
def loaded(sandbox: Sandbox) -> LoadedConfig:
    return load_config(sandbox.config_path, environ={})


@pytest.fixture
async def admin(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {sandbox.settings.admin_token}"}
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=headers, timeout=5) as client:
        (await client.delete("/_sandbox/sinks")).raise_for_status()  # records and faults
        yield client


def webhook_only(loaded: LoadedConfig) -> LoadedConfig:
    """The same config with Slack through its incoming webhook (no bot token)."""
    notifications = loaded.runbook.notifications
    slack = notifications.slack.model_copy(update={"bot_token_secret": None})
    runbook = loaded.runbook.model_copy(update={"notifications": notifications.model_copy(update={"slack": slack})})
    return dataclasses.replace(loaded, runbook=runbook)


async def fault(admin: httpx.AsyncClient, sink: str, status: int, count: int = 1, retry_after: int | None = None) -> None:
    body = {"sink": sink, "status": status, "count": count, "retry_after": retry_after}
    (await admin.post("/_sandbox/sinks/faults", json=body)).raise_for_status()


async def sinks(admin: httpx.AsyncClient) -> dict[str, list[dict]]:
    response = await admin.get("/_sandbox/sinks")
    response.raise_for_status()
    return response.json()


def secret_values(loaded: LoadedConfig) -> list[str]:
    webhook = loaded.secrets.get("slack_webhook_url")
    return [webhook, urlsplit(webhook).path, loaded.secrets.get("pagerduty_routing_key"),
            loaded.secrets.get("slack_bot_token"), loaded.secrets.get("statuspage_api_key")]


def assert_no_secrets(loaded: LoadedConfig, journal: Journal) -> None:
    text = journal.path.read_text(encoding="utf-8")
    for secret in secret_values(loaded):
        assert secret not in text


def journal_at(tmp_path: Path, name: str = "release.jsonl") -> Journal:
    journal = Journal.open(tmp_path / name, operator={"user": "ana"})
    journal.append("deploy_started", {"version": "v2.15.0", "git_sha": "3f9c2a1"})
    return journal


def ends(journal: Journal) -> list[dict]:
    return [r.data for r in journal.records if r.kind == "notification"]


def outbox_for(loaded: LoadedConfig, journal: Journal, time: FakeTime | None = None, **kwargs: object) -> Outbox:
    time = time or FakeTime()
    outbox = Outbox(loaded, journal, clock=time.clock, sleep=time.sleep, **kwargs)  # type: ignore[arg-type]
    time.outbox = outbox
    return outbox


async def ended(outbox: Outbox, notice: object, timeout_s: float = 15.0) -> None:
    """Until the notice has an end (sent, failed, given up): with FakeTime's waits that is soon."""
    for _ in range(int(timeout_s / 0.02)):
        if outbox.result(notice) is not None:  # type: ignore[arg-type]
            return
        await asyncio.sleep(0.02)


async def test_one_deployment_one_incident_one_thread_one_status_page_incident(
    loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    journal = journal_at(tmp_path)
    key = deployment_dedup_key(journal.records)
    assert key == deployment_dedup_key(Journal.open(journal.path).records)  # stable across a reopen
    outbox = outbox_for(loaded, journal)
    values = {"version": "v2.14.3", "provider": "fudo"}
    link = ("https://ci.example/reports/r1", "Post-deployment report")
    triggered = outbox.notify(["slack", "pagerduty", "statuspage"], "trigger", "@channel POS production issue - rolling back to {version}",
                              dedup_key=key, values=values, provider="fudo", links=(link,),
                              details={"version": "v2.14.3", "reason": "smoke tests failed", "phase": "rollback"})
    lines = await outbox.settle(triggered, 10)
    assert lines == ["slack trigger: sent (1 attempt)", "pagerduty trigger: sent (1 attempt)",
                     "statuspage trigger: sent (1 attempt)"]
    later = outbox.notify(["slack", "statuspage"], "acknowledge", "Identified: rolling back to {version}", dedup_key=key,
                          values=values, provider="fudo")
    resolved = outbox.notify(["slack", "pagerduty", "statuspage"], "resolve", "Rollback to {version} verified on {environment}",
                             dedup_key=key, values=values, provider="fudo")
    assert all(line.endswith("sent (1 attempt)") for line in await outbox.settle(later + resolved, 10))
    await outbox.aclose()

    received = await sinks(admin)
    # Slack: one thread; the resolve also goes to the channel.
    posts = received["slack_api"]
    assert [p["ok"] for p in posts] == [True, True, True] and received["slack"] == []
    root = posts[0]["ts"]
    assert posts[0]["thread_ts"] is None and [p["thread_ts"] for p in posts[1:]] == [root, root]
    assert [p["reply_broadcast"] for p in posts] == [False, False, True]
    assert posts[0]["body"]["text"].startswith("<!channel> POS production issue - rolling back to v2.14.3")
    assert posts[0]["body"]["blocks"][0]["type"] == "header"
    assert "<https://ci.example/reports/r1|Post-deployment report>" in json.dumps(posts[0]["body"]["blocks"])
    assert next(e for e in ends(journal) if e["channel"] == "slack")["delivered"]["ts"] == root  # journaled
    # PagerDuty: one incident, with its context.
    events = [p["body"] for p in received["pagerduty"]]
    assert [e["event_action"] for e in events] == ["trigger", "resolve"] and {e["dedup_key"] for e in events} == {key}
    payload = events[0]["payload"]
    assert payload["component"] == "fudo" and payload["group"] == loaded.environment.name
    assert payload["custom_details"]["reason"] == "smoke tests failed" and events[0]["client"] == "controlroom"
    assert events[0]["links"] == [{"href": link[0], "text": link[1]}]
    # Statuspage: one incident, investigating -> identified -> resolved, with Fudo's component.
    pages = received["statuspage"]
    assert [(p["method"], p["status"]) for p in pages if p["method"] != "GET"] == [("POST", 201), ("PATCH", 200), ("PATCH", 200)]
    changes = [p["body"]["incident"] for p in pages if p["method"] != "GET"]
    assert [c["status"] for c in changes] == ["investigating", "identified", "resolved"]
    assert [c["components"] for c in changes] == [{"cmpfudo00001": "major_outage"}, {"cmpfudo00001": "partial_outage"},
                                                  {"cmpfudo00001": "operational"}]
    assert len({p["incident_id"] for p in pages if p["method"] != "GET"}) == 1
    # Journaled: each notice before it was sent, its end after, none pending.
    kinds = [r.kind for r in journal.records if r.kind.startswith("notification")]
    assert kinds.count("notification_queued") == kinds.count("notification") == 8
    assert journal_state(journal.records) == ([], [])
    assert_no_secrets(loaded, journal)


async def test_a_429_with_retry_after_120_three_times_is_delivered_once(
    loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    await fault(admin, "pagerduty", 429, count=3, retry_after=120)
    journal, time = journal_at(tmp_path), FakeTime()
    outbox = outbox_for(loaded, journal, time)
    (notice,) = outbox.notify(["pagerduty"], "trigger", "Fudo failing", dedup_key="controlroom-test-429")
    await ended(outbox, notice)
    result = outbox.result(notice)
    assert result is not None and (result.status, result.attempts, result.http_status) == ("sent", 4, 202)
    assert time.waits == [120.0, 120.0, 120.0]  # Retry-After honoured, whole: no cap
    assert time.headers[0] == ("PagerDuty trigger pending, retry in 120 s — HTTP 429: {\"status\":\"error\",\"message\":\"Rate limit exceeded\"}",)
    received = await sinks(admin)
    assert [p["status"] for p in received["pagerduty"]] == [429, 429, 429, 202]
    assert {p["body"]["dedup_key"] for p in received["pagerduty"]} == {"controlroom-test-429"}
    assert [(e["status"], e["attempts"]) for e in ends(journal)] == [("sent", 4)]
    assert outbox.view().pending == ()
    await outbox.aclose()


async def test_400_is_final_never_retried(loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path) -> None:
    await fault(admin, "slack", 400, count=3)
    journal, time = journal_at(tmp_path), FakeTime()
    outbox = outbox_for(webhook_only(loaded), journal, time)
    (slack,) = outbox.notify(["slack"], "trigger", "Fudo failing", dedup_key="k")
    await outbox.settle([slack], 10)
    result = outbox.result(slack)
    assert result is not None and (result.status, result.attempts, result.http_status) == ("failed", 1, 400)
    assert result.error == "HTTP 400: invalid_payload" and not result.gave_up
    assert time.waits == [] and len((await sinks(admin))["slack"]) == 1
    assert outbox.view() == outbox.view().__class__((), ())  # failed for good: not pending, not given up

    # A real 400 from the sandbox's PagerDuty rules (a wrong routing key): final too, and the
    # wrong key is not shown either.
    wrong = SecretStore({"pagerduty_routing_key": "PD_KEY"}, {"PD_KEY": "not-the-routing-key-0123"}, {})
    outbox = outbox_for(dataclasses.replace(loaded, secrets=wrong), journal, time)
    (pagerduty,) = outbox.notify(["pagerduty"], "trigger", "Fudo failing", dedup_key="k")
    await outbox.settle([pagerduty], 10)
    result = outbox.result(pagerduty)
    assert result is not None and (result.status, result.attempts, result.http_status) == ("failed", 1, 400)
    assert "routing_key" in result.error and time.waits == []
    assert "not-the-routing-key-0123" not in journal.path.read_text()
    await outbox.aclose()


async def test_5xx_is_retried_with_jittered_backoff_until_given_up_then_retried_by_the_operator(
    loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    await fault(admin, "slack", 502, count=10_000)
    journal, time = journal_at(tmp_path), FakeTime()
    outbox = outbox_for(webhook_only(loaded), journal, time)
    first, second = (outbox.notify(["slack"], "info", text, dedup_key="k")[0] for text in ("first", "second"))
    await ended(outbox, first)
    result = outbox.result(first)
    assert result is not None and result.gave_up and result.status == "failed" and result.http_status == 502
    assert "retried for 5 min" in result.error
    assert sum(time.waits) == pytest.approx(300, abs=1) and max(time.waits) <= 60
    assert len(set(time.waits)) > 3  # jittered, not a fixed schedule
    assert outbox.result(second) is None  # held behind the given-up one: order is kept
    view = outbox.view()
    assert view.given_up == ("Slack info given up after 5 min: HTTP 502: internal_error (retried for 5 min)",)
    assert view.pending == ("Slack info waiting: the Slack notice before it was given up",)

    (await admin.delete("/_sandbox/sinks")).raise_for_status()  # the sink is back
    (again,) = outbox.retry_given_up()
    assert again.retry_of == first.id and again.dedup_key == first.dedup_key
    await outbox.settle([again, second], 10)
    assert [p["body"]["text"] for p in (await sinks(admin))["slack"]] == ["first", "second"]
    assert outbox.view() == view.__class__((), ())
    await outbox.aclose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_sink_that_is_down_or_silent_is_retried_then_given_up(loaded: LoadedConfig, tmp_path: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    down = f"http://127.0.0.1:{closed_port()}/services/T000/B000/secretpathsecretpath"
    try:
        for hook, expected in ((down, "cannot reach the endpoint: ConnectError"),
                               (f"http://127.0.0.1:{port}/services/T0/B0/abcdefabcdef", "no answer within 0.2 s")):
            store = SecretStore({"slack_webhook_url": "HOOK"}, {"HOOK": hook}, {})
            config = webhook_only(loaded)
            slack = config.runbook.notifications.slack.model_copy(update={"timeout_s": 0.2, "give_up_after_minutes": 1})
            runbook = config.runbook.model_copy(update={"notifications": config.runbook.notifications.model_copy(
                update={"slack": slack})})
            journal = journal_at(tmp_path, f"{port}-{len(hook)}.jsonl")
            outbox = outbox_for(dataclasses.replace(config, runbook=runbook, secrets=store), journal)
            (notice,) = outbox.notify(["slack"], "info", "deploy of {version} started", dedup_key="k", values={"version": "v2"})
            await ended(outbox, notice)
            result = outbox.result(notice)
            assert result is not None and result.gave_up and result.attempts >= 3
            assert result.error.startswith(expected) and result.summary == "deploy of v2 started"
            assert "secretpathsecretpath" not in journal.path.read_text()
            await outbox.aclose()
    finally:
        server.close()


async def test_a_missing_secret_is_final_and_pagerduty_has_no_info_event(
    loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    journal = journal_at(tmp_path)
    unset = SecretStore({"slack_webhook_url": "SLACK_WEBHOOK_URL", "pagerduty_routing_key": "PD_KEY"}, {}, {})
    outbox = outbox_for(dataclasses.replace(webhook_only(loaded), secrets=unset), journal)
    notices = outbox.notify(["slack", "pagerduty"], "trigger", "x", dedup_key="k")
    assert await outbox.settle(notices, 5) == ["slack trigger: FAILED after 0 attempts — SLACK_WEBHOOK_URL is not set",
                                               "pagerduty trigger: FAILED after 0 attempts — PD_KEY is not set"]
    outbox = outbox_for(webhook_only(loaded), journal)
    slack, pagerduty = outbox.notify(["slack", "pagerduty"], "info", "Phase 2 started", dedup_key="k")
    await outbox.settle([slack, pagerduty], 5)
    assert outbox.result(slack).status == "sent" and outbox.result(pagerduty).status == "skipped"
    received = await sinks(admin)
    assert len(received["slack"]) == 1 and received["pagerduty"] == []
    await outbox.aclose()


async def test_a_resolve_goes_only_where_the_incident_was_triggered(
    loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    journal = journal_at(tmp_path)
    outbox = outbox_for(loaded, journal)
    notices = outbox.notify(["pagerduty", "statuspage"], "resolve", "verified", dedup_key="never-triggered")
    assert await outbox.settle(notices, 5) == [
        "pagerduty resolve: skipped — no incident was triggered for this deployment",
        "statuspage resolve: skipped — no status page incident was opened for this deployment"]
    received = await sinks(admin)
    assert received["pagerduty"] == [] and [p["method"] for p in received["statuspage"]] == []
    await outbox.aclose()


async def test_change_events_are_accepted_by_the_documented_schema(
    loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    journal = journal_at(tmp_path)
    outbox = outbox_for(loaded, journal)
    long = "x" * 2000  # clipped to PagerDuty's 1024
    notices = [outbox.enqueue("pagerduty", "change", text, dedup_key="k", links=(("/tmp/r.report.md", "Post-deployment report"),),
                              details={"event": "deploy_finished", "version": "v2.15.0", "outcome": "success",
                                       "operator": "ana@bastion-1", "verdict": "GO", "phase": "Post-Deployment"})
               for text in ("sandbox: deployment of v2.15.0 finished: success", long)]
    assert await outbox.settle(notices, 5) == ["pagerduty change: sent (1 attempt)"] * 2
    posts = (await sinks(admin))["pagerduty_change"]
    assert [p["status"] for p in posts] == [202, 202]
    body = posts[0]["body"]
    assert body["routing_key"] == "[redacted]" and body["payload"]["source"] == "controlroom"
    assert body["payload"]["custom_details"]["event"] == "deploy_finished"
    assert body["links"] == [{"href": "/tmp/r.report.md", "text": "Post-deployment report"}]
    assert len(posts[1]["body"]["payload"]["summary"]) == 1024
    await outbox.aclose()


def test_templating_escaping_and_retry_after_parsing() -> None:
    assert render_message("{provider} down in {environment}, back to {version} {other}", version="v1", provider="fudo",
                          environment="prod") == "fudo down in prod, back to v1 {other}"
    assert render_message("back to {version}") == "back to {version}"  # unknown stays visible
    assert slack_text("info", "<!everyone> & <http://x|y> @channel") == "&lt;!everyone&gt; &amp; &lt;http://x|y&gt; <!channel>"
    assert slack_text("resolve", "done").startswith("RESOLVED: ")
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds("3600") == 3600.0
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None and retry_after_seconds("nan") is None
    now = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    assert retry_after_seconds("Sun, 29 Nov 2026 03:00:12 GMT", now=now) == 12.0


async def test_operator_text_reaches_slack_escaped_never_a_ping_or_a_link(
    loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    journal = journal_at(tmp_path)
    outbox = outbox_for(loaded, journal)
    evil = "<!everyone> & <http://x|y>"
    notices = outbox.notify(["slack"], "trigger", "Rollback to {version} started", dedup_key="k",
                            values={"version": f"v2 {evil}"}, details={"reason": evil, "version": evil})
    await outbox.settle(notices, 5)
    (post,) = (await sinks(admin))["slack_api"]
    sent = json.dumps(post["body"])
    assert "<!everyone>" not in sent and "<http://x|y>" not in sent
    assert "&lt;!everyone&gt; &amp; &lt;http://x|y&gt;" in post["body"]["text"]
    assert "*Reason:* &lt;!everyone&gt; &amp; &lt;http://x|y&gt;" in sent
    await outbox.aclose()


async def test_a_notice_cancelled_mid_retry_stays_pending_and_a_reopened_outbox_sends_it(
    loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    await fault(admin, "pagerduty", 503, count=1)
    journal = journal_at(tmp_path)
    waiting = asyncio.Event()

    async def blocking_sleep(seconds: float) -> None:
        waiting.set()
        await asyncio.sleep(30)

    outbox = Outbox(loaded, journal, sleep=blocking_sleep)
    (notice,) = outbox.notify(["pagerduty"], "trigger", "x", dedup_key="controlroom-cancelled")
    await asyncio.wait_for(waiting.wait(), 5)
    await outbox.aclose()  # the app quits while it waits to retry
    assert ends(journal) == [] and [n.id for n in journal_state(journal.records)[0]] == [notice.id]

    reopened = Journal.open(journal.path)
    again = outbox_for(loaded, reopened)
    assert again.resume() == 1 and again.resume() == 0  # once, however often it is asked
    await again.settle([notice], 5)
    assert [(e["id"], e["status"], e["dedup_key"]) for e in ends(reopened)] == [(notice.id, "sent", "controlroom-cancelled")]
    assert [(p["status"], p["body"]["dedup_key"]) for p in (await sinks(admin))["pagerduty"]] == [
        (503, "controlroom-cancelled"), (202, "controlroom-cancelled")]
    await again.aclose()


PENDING_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from controlroom.config.loader import load_config
    from controlroom.notify.outbox import Outbox
    from controlroom.release.journal import Journal

    async def main():
        loaded = load_config(Path(sys.argv[1]), environ={})
        journal = Journal.open(Path(sys.argv[2]), operator={"user": "ana"})
        journal.append("deploy_started", {"version": "v2.15.0"})
        outbox = Outbox(loaded, journal)
        notices = outbox.notify(["pagerduty"], "trigger", "Fudo failing", dedup_key="controlroom-killed")
        print(await outbox.settle(notices, 10), flush=True)
        await asyncio.sleep(120)

    asyncio.run(main())
""")


async def test_kill_9_while_a_notification_is_pending_then_reopen_delivers_it_once(
    loaded: LoadedConfig, admin: httpx.AsyncClient, sandbox: Sandbox, tmp_path: Path
) -> None:
    await fault(admin, "pagerduty", 429, count=1, retry_after=120)
    path = tmp_path / "killed.jsonl"
    process = subprocess.Popen([sys.executable, "-c", PENDING_SCRIPT, str(sandbox.config_path), str(path)],
                               stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)  # type: ignore[union-attr]
        assert "pending, retry in 120 s" in line
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    journal = Journal.open(path)
    (pending,), _ = journal_state(journal.records)
    outbox = outbox_for(loaded, journal)
    assert outbox.resume() == 1
    await outbox.settle([pending], 10)
    assert [(e["status"], e["id"]) for e in ends(journal)] == [("sent", pending.id)]
    posts = (await sinks(admin))["pagerduty"]
    assert [(p["status"], p["body"]["dedup_key"]) for p in posts] == [(429, "controlroom-killed"), (202, "controlroom-killed")]
    await outbox.aclose()


async def test_a_retry_keeps_its_place_before_the_resolve_it_held_across_a_reopen(
    loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    await fault(admin, "pagerduty", 503, count=10_000)
    journal, time = journal_at(tmp_path), FakeTime()
    outbox = outbox_for(loaded, journal, time)
    trigger, resolve = (outbox.notify(["pagerduty"], event, "x", dedup_key="controlroom-held")[0]
                        for event in ("trigger", "resolve"))
    await ended(outbox, trigger)
    assert outbox.result(trigger).gave_up and outbox.result(resolve) is None  # held behind it
    (await admin.delete("/_sandbox/sinks")).raise_for_status()
    (retry,) = outbox.retry_given_up()
    outbox.stop()  # killed before the retry went out
    await outbox.aclose()

    reopened = Journal.open(journal.path)
    pending, _ = journal_state(reopened.records)
    assert [n.id for n in pending] == [retry.id, resolve.id]  # the retry in its original's place
    again = outbox_for(loaded, reopened)
    again.resume()
    await again.settle([retry, resolve], 10)
    assert [(p["body"]["event_action"], p["status"]) for p in (await sinks(admin))["pagerduty"]] == [
        ("trigger", 202), ("resolve", 202)]
    await again.aclose()
