"""Notifications against the real sandbox HTTP server (its own process, over a socket): Slack
and PagerDuty trigger + resolve reach the sinks with one dedup_key; 429 + Retry-After, 400,
5xx, a dead sink and a silent one; every result journaled, and no secret anywhere."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from controlroom.release.journal import Journal
from controlroom.notify.channels import (
    Notifier,
    NotificationResult,
    deployment_dedup_key,
    render_message,
    retry_after_seconds,
)
from controlroom.config.loader import LoadedConfig, load_config
from controlroom.config.models import Notifications, NotifyAction, PagerDutyTarget, SlackTarget
from controlroom.sandbox.runner import Sandbox
from controlroom.config.secrets import SecretStore

pytestmark = pytest.mark.timeout(60)


class Sleeps:
    """An injected sleep: records each wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


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


async def fault(admin: httpx.AsyncClient, sink: str, status: int, count: int = 1, retry_after: int | None = None) -> None:
    body = {"sink": sink, "status": status, "count": count, "retry_after": retry_after}
    (await admin.post("/_sandbox/sinks/faults", json=body)).raise_for_status()


async def sinks(admin: httpx.AsyncClient) -> dict[str, list[dict]]:
    response = await admin.get("/_sandbox/sinks")
    response.raise_for_status()
    return response.json()


def secret_values(loaded: LoadedConfig) -> list[str]:
    webhook = loaded.secrets.get("slack_webhook_url")
    return [webhook, urlsplit(webhook).path, loaded.secrets.get("pagerduty_routing_key")]


def assert_no_secrets(loaded: LoadedConfig, journal: Journal, results: list[NotificationResult]) -> None:
    shown = journal.path.read_text(encoding="utf-8") + "\n".join(repr(r) + r.describe() for r in results)
    for secret in secret_values(loaded):
        assert secret not in shown
    hook_id = urlsplit(loaded.secrets.get("slack_webhook_url")).path.rsplit("/", 1)[-1]
    assert hook_id not in shown


def journal_at(tmp_path: Path) -> Journal:
    return Journal.open(tmp_path / "session.jsonl", operator={"user": "ana"})


def journaled(journal: Journal) -> list[dict]:
    return [json.loads(line)["data"] for line in journal.path.read_text().splitlines() if '"kind":"notification"' in line]


async def test_trigger_and_resolve_reach_both_sinks_with_one_dedup_key(
    loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    journal = journal_at(tmp_path)
    journal.append("deploy_started", {"version": "v2.15.0", "git_sha": "3f9c2a1"})
    key = deployment_dedup_key(journal.records)
    assert key == deployment_dedup_key(Journal.open(journal.path).records)  # stable across a reopen
    sleeps = Sleeps()
    emergency = next(plan for plan in loaded.runbook.rollback.plans if plan.id == "emergency")
    notify_step = next(step.action for step in emergency.steps if isinstance(step.action, NotifyAction))
    async with Notifier.from_config(loaded, journal=journal, sleep=sleeps) as notifier:
        triggered = await notifier.send(notify_step, dedup_key=key, values={"version": "v2.14.3", "provider": "fudo"})
        resolved = await notifier.resolve("Rollback to {version} verified on {environment}", dedup_key=key, values={"version": "v2.14.3"})
    results = triggered + resolved
    assert [(r.channel, r.event, r.status, r.attempts, r.http_status) for r in results] == [
        ("slack", "trigger", "sent", 1, 200),
        ("pagerduty", "trigger", "sent", 1, 202),
        ("slack", "resolve", "sent", 1, 200),
        ("pagerduty", "resolve", "sent", 1, 202),
    ]
    assert sleeps.waits == []
    received = await sinks(admin)
    slack_texts = [post["body"]["text"] for post in received["slack"]]
    assert slack_texts == [
        "<!channel> POS production issue - rolling back to v2.14.3",
        "RESOLVED: Rollback to v2.14.3 verified on sandbox (healthy)",
    ]
    events = [post["body"] for post in received["pagerduty"]]
    assert [event["event_action"] for event in events] == ["trigger", "resolve"]
    assert {event["dedup_key"] for event in events} == {key}
    assert events[0]["payload"]["summary"] == "@channel POS production issue - rolling back to v2.14.3"
    assert events[0]["payload"]["severity"] == "critical" and events[0]["payload"]["source"] == "controlroom"
    assert all(post["accepted"] for posts in received.values() for post in posts)
    records = journaled(journal)  # the channels are sent to concurrently: in order of completion
    assert sorted((r["channel"], r["event"], r["status"], r["attempts"], r["http_status"], r["error"]) for r in records) == sorted(
        (r.channel, r.event, "sent", 1, r.http_status, "") for r in results
    )
    assert {r["summary"] for r in records if r["event"] == "trigger"} == {"@channel POS production issue - rolling back to v2.14.3"}
    assert all(record["dedup_key"] == key for record in records)
    assert_no_secrets(loaded, journal, results)


async def test_429_is_retried_after_its_retry_after(loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path) -> None:
    await fault(admin, "slack", 429, retry_after=3)
    await fault(admin, "pagerduty", 429, count=2, retry_after=120)  # capped at 30 s
    journal, sleeps = journal_at(tmp_path), Sleeps()
    async with Notifier.from_config(loaded, journal=journal, sleep=sleeps) as notifier:
        slack, pagerduty = await notifier.trigger("Fudo failing", dedup_key="controlroom-test-429")
    assert (slack.status, slack.attempts, slack.http_status, slack.waits_s) == ("sent", 2, 200, (3.0,))
    assert (pagerduty.status, pagerduty.attempts, pagerduty.waits_s) == ("sent", 3, (30.0, 30.0))
    assert sorted(sleeps.waits) == [3.0, 30.0, 30.0]
    received = await sinks(admin)
    assert [post["status"] for post in received["slack"]] == [429, 200]
    assert [post["status"] for post in received["pagerduty"]] == [429, 429, 202]
    assert {r["channel"]: r["attempts"] for r in journaled(journal)} == {"slack": 2, "pagerduty": 3}
    assert_no_secrets(loaded, journal, [slack, pagerduty])


async def test_400_is_never_retried(loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path) -> None:
    await fault(admin, "slack", 400, count=3)
    journal, sleeps = journal_at(tmp_path), Sleeps()
    async with Notifier.from_config(loaded, journal=journal, sleep=sleeps) as notifier:
        (slack,) = await notifier.trigger("Fudo failing", dedup_key="k", channels=["slack"])
    assert (slack.status, slack.attempts, slack.http_status) == ("failed", 1, 400)
    assert slack.error == "HTTP 400: invalid_payload"
    assert sleeps.waits == [] and len((await sinks(admin))["slack"]) == 1
    assert journaled(journal)[0]["status"] == "failed"

    # A real 400 from the sandbox's PagerDuty rules (a wrong routing key): final too, and the
    # wrong key is not shown either.
    wrong = SecretStore({"pagerduty_routing_key": "PD_KEY"}, {"PD_KEY": "not-the-routing-key-0123"}, {})
    async with Notifier(loaded.runbook.notifications, wrong, url=loaded.url, journal=journal, sleep=sleeps) as notifier:
        (pagerduty,) = await notifier.trigger("Fudo failing", dedup_key="k", channels=["pagerduty"])
    assert (pagerduty.status, pagerduty.attempts, pagerduty.http_status) == ("failed", 1, 400)
    assert "routing_key" in pagerduty.error and sleeps.waits == []
    assert "not-the-routing-key-0123" not in journal.path.read_text()


async def test_a_500_then_success_takes_two_attempts(loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path) -> None:
    await fault(admin, "pagerduty", 500)
    await fault(admin, "slack", 503, count=1)
    journal, sleeps = journal_at(tmp_path), Sleeps()
    async with Notifier.from_config(loaded, journal=journal, sleep=sleeps) as notifier:
        slack, pagerduty = await notifier.resolve("Rollback verified", dedup_key="controlroom-test-500")
    assert (slack.status, slack.attempts, slack.waits_s) == ("sent", 2, (0.5,))
    assert (pagerduty.status, pagerduty.attempts, pagerduty.http_status, pagerduty.waits_s) == ("sent", 2, 202, (0.5,))
    assert {r["channel"]: r["attempts"] for r in journaled(journal)} == {"slack": 2, "pagerduty": 2}


async def test_5xx_until_the_last_attempt_fails_with_backoff(loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path) -> None:
    await fault(admin, "slack", 502, count=10)
    journal, sleeps = journal_at(tmp_path), Sleeps()
    async with Notifier.from_config(loaded, journal=journal, sleep=sleeps) as notifier:
        (slack,) = await notifier.trigger("x", dedup_key="k", channels=["slack"])
    assert loaded.runbook.notifications.max_attempts == 4
    assert (slack.status, slack.attempts, slack.http_status) == ("failed", 4, 502)
    assert slack.waits_s == (0.5, 1.0, 2.0) and slack.error == "HTTP 502: internal_error"
    assert "FAILED after 4 attempts" in slack.describe()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_sink_that_is_down_is_a_journaled_failure(loaded: LoadedConfig, tmp_path: Path) -> None:
    port = closed_port()
    hook = "https://hooks.example/services/T000/B000/secretpathsecretpath".replace("https://hooks.example", f"http://127.0.0.1:{port}")
    store = SecretStore({"slack": "HOOK", "pd": "PD"}, {"HOOK": hook, "PD": "routing-key-secret-4567"}, {})
    notifications = Notifications(
        slack=SlackTarget(webhook_secret="slack"),
        pagerduty=PagerDutyTarget(routing_key_secret="pd", events_url=f"http://127.0.0.1:{port}/v2/enqueue"),
        max_attempts=3,
    )
    journal, sleeps = journal_at(tmp_path), Sleeps()
    async with Notifier(notifications, store, journal=journal, sleep=sleeps) as notifier:
        results = await notifier.trigger("Fudo failing", dedup_key="k")
    for result in results:
        assert (result.status, result.attempts, result.http_status) == ("failed", 3, None)
        assert result.error.startswith("cannot reach the endpoint: ConnectError")
        assert result.waits_s == (0.5, 1.0)
    records = journaled(journal)
    assert sorted((r["channel"], r["status"]) for r in records) == [("pagerduty", "failed"), ("slack", "failed")]
    text = journal.path.read_text()
    assert "secretpathsecretpath" not in text and "routing-key-secret-4567" not in text
    assert all("secretpath" not in repr(result) for result in results)


async def test_a_sink_that_never_answers_times_out(tmp_path: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        store = SecretStore({"slack": "HOOK"}, {"HOOK": f"http://127.0.0.1:{port}/services/T0/B0/abcdefabcdef"}, {})
        notifications = Notifications(slack=SlackTarget(webhook_secret="slack", timeout_s=0.2), max_attempts=2)
        journal, sleeps = journal_at(tmp_path), Sleeps()
        async with Notifier(notifications, store, journal=journal, sleep=sleeps) as notifier:
            (slack,) = await notifier.send(["slack"], "info", "deploy of {version} started", dedup_key="k", values={"version": "v2"})
        assert (slack.status, slack.attempts, slack.error) == ("failed", 2, "no answer within 0.2 s")
        assert slack.summary == "deploy of v2 started"
        assert 300 < slack.duration_ms < 5000
    finally:
        server.close()


async def test_a_missing_secret_or_target_is_a_failed_result_not_an_exception(tmp_path: Path) -> None:
    store = SecretStore({"slack_webhook_url": "SLACK_WEBHOOK_URL", "pd": "PD_KEY"}, {}, {})
    notifications = Notifications(slack=SlackTarget(webhook_secret="slack_webhook_url"))
    journal = journal_at(tmp_path)
    async with Notifier(notifications, store, journal=journal, sleep=Sleeps()) as notifier:
        slack, pagerduty = await notifier.send(["slack", "pagerduty"], "trigger", "x", dedup_key="k")
        assert notifier.configured_channels == ("slack",)
    assert (slack.status, slack.attempts, slack.error) == ("failed", 0, "SLACK_WEBHOOK_URL is not set")
    assert pagerduty.status == "failed" and "not configured" in pagerduty.error
    assert sorted(r["error"] for r in journaled(journal)) == sorted([slack.error, pagerduty.error])


async def test_pagerduty_has_no_info_event(loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path) -> None:
    journal = journal_at(tmp_path)
    async with Notifier.from_config(loaded, journal=journal, sleep=Sleeps()) as notifier:
        slack, pagerduty = await notifier.send(["slack", "pagerduty"], "info", "Phase 2 started", dedup_key="k")
    assert slack.status == "sent" and pagerduty.status == "skipped" and pagerduty.attempts == 0
    received = await sinks(admin)
    assert len(received["slack"]) == 1 and received["pagerduty"] == []


def test_templating_and_retry_after_parsing() -> None:
    assert render_message("{provider} down in {environment}, back to {version} {other}", version="v1", provider="fudo", environment="prod") == (
        "fudo down in prod, back to v1 {other}"
    )
    assert render_message("back to {version}") == "back to {version}"  # unknown stays visible
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("3600") == 30.0
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    from datetime import UTC, datetime

    now = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    assert retry_after_seconds("Sun, 29 Nov 2026 03:00:12 GMT", now=now) == 12.0


async def test_a_send_cancelled_mid_retry_is_still_journaled(loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path) -> None:
    await fault(admin, "slack", 500, count=5)
    journal = journal_at(tmp_path)
    started = asyncio.Event()

    async def blocking_sleep(seconds: float) -> None:
        started.set()
        await asyncio.sleep(30)

    async with Notifier.from_config(loaded, journal=journal, sleep=blocking_sleep) as notifier:
        task = asyncio.create_task(notifier.trigger("x", dedup_key="k", channels=["slack"]))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (record,) = journaled(journal)
    assert (record["status"], record["attempts"], record["http_status"], record["error"]) == ("failed", 1, 500, "cancelled before an answer")


async def test_data_sent_to_slack_is_escaped_never_a_ping_or_a_link(
    loaded: LoadedConfig, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    journal = journal_at(tmp_path)
    journal.append("deploy_started", {"version": "v2.15.0"})
    async with Notifier.from_config(loaded, journal=journal, sleep=Sleeps()) as notifier:
        await notifier.resolve("Rollback to {version} verified", dedup_key=deployment_dedup_key(journal.records),
                               values={"version": "v2 <!here> <http://evil.example|docs> & co"})
    texts = [post["body"]["text"] for post in (await sinks(admin))["slack"]]
    assert texts[-1] == "RESOLVED: Rollback to v2 &lt;!here&gt; &lt;http://evil.example|docs&gt; &amp; co verified"
