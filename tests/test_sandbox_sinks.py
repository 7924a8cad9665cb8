"""The sandbox's notification sinks over a real socket, in the server's own process: PagerDuty
change events and alert context, Slack's chat.postMessage with threads, Statuspage incidents,
faults that last a while, and fudo-outage-watch (Fudo fails after the deploy_finished change
event)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from controlroom.config.loader import load_config
from controlroom.sandbox.http.server import STATUSPAGE_PAGE_ID, HttpServerProcess, HttpSettings
from controlroom.sandbox.http.sinks import SINKS
from controlroom.sandbox.pg.postgres import EmbeddedPostgres
from controlroom.sandbox.runner import Sandbox

from http_fixtures import bearer, create_database, server, shared_dsn, start_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(60)

CHANGE = "/sinks/pagerduty/v2/change/enqueue"
ALERT = "/sinks/pagerduty/v2/enqueue"
POST_MESSAGE = "/sinks/slack-api/chat.postMessage"
PAGE = f"/sinks/statuspage/v1/pages/{STATUSPAGE_PAGE_ID}"
TS = re.compile(r"^\d{10}\.\d{6}$")


@pytest.fixture
async def client(server: HttpServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
        (await http.delete("/_sandbox/sinks", headers=admin(server))).raise_for_status()  # records and faults
        yield http


def admin(server: HttpServerProcess) -> dict[str, str]:
    return bearer(server.settings.admin_token)


async def records(client: httpx.AsyncClient, server: HttpServerProcess, sink: str) -> list[dict[str, Any]]:
    response = await client.get("/_sandbox/sinks", headers=admin(server))
    response.raise_for_status()
    return response.json()[sink]


def change_event(key: str, **details: Any) -> dict[str, Any]:
    """A change event as the control room sends it at a deployment's milestones."""
    return {
        "routing_key": key,
        "payload": {
            "summary": "sandbox: deployment of v2.15.0 finished (succeeded)",
            "source": "controlroom",
            "timestamp": "2024-01-22T03:12:00.000+0000",
            "custom_details": {"event": "deploy_finished", "version": "v2.15.0", "phase": "3", "operator": "alice",
                               "verdict": "GO", "outcome": "succeeded", "environment": "sandbox", **details},
        },
        "links": [{"href": "file:///var/lib/controlroom/report.md", "text": "Post-deployment report"}],
    }


# -- PagerDuty -----------------------------------------------------------------------------


async def test_change_event_is_validated_and_recorded(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    key = server.settings.pagerduty_routing_key
    event = change_event(key, event="deploy_started", outcome=None)
    event["links"].append({"href": "https://ci.example/build/7"})  # text is optional
    event["client"] = "not a change-event field"  # fields the API does not know are ignored
    accepted = await client.post(CHANGE, json=event)
    assert accepted.status_code == 202
    assert accepted.json() == {"status": "success", "message": "Change event processed"}
    longest = change_event(key)
    longest["payload"]["summary"] = "x" * 1024
    assert (await client.post(CHANGE, json=longest)).status_code == 202

    def broken(change: Any) -> dict[str, Any]:
        bad = change_event(key)
        change(bad)
        return bad

    invalid = {
        "summary of 1025 characters": broken(lambda e: e["payload"].update(summary="x" * 1025)),
        "no summary": broken(lambda e: e["payload"].pop("summary")),
        "blank summary": broken(lambda e: e["payload"].update(summary="  ")),
        "wrong routing key": broken(lambda e: e.update(routing_key="not-the-key")),
        "no routing key": broken(lambda e: e.pop("routing_key")),
        "no payload": broken(lambda e: e.pop("payload")),
        "timestamp not ISO 8601": broken(lambda e: e["payload"].update(timestamp="yesterday")),
        "source not a string": broken(lambda e: e["payload"].update(source=7)),
        "custom_details not an object": broken(lambda e: e["payload"].update(custom_details="v2.15.0")),
        "a link without href": broken(lambda e: e.update(links=[{"text": "report"}])),
        "links not a list": broken(lambda e: e.update(links={"href": "x"})),
    }
    for why, bad in invalid.items():
        response = await client.post(CHANGE, json=bad)
        assert response.status_code == 400, why
        body = response.json()
        assert body["status"] == "invalid event" and body["message"] == "Event object is invalid" and body["errors"], why
    assert "1025 characters; at most 1024" in (await client.post(CHANGE, json=invalid["summary of 1025 characters"])).text

    recorded = await records(client, server, "pagerduty_change")
    assert [r["status"] for r in recorded] == [202, 202] + [400] * (len(invalid) + 1)
    first = recorded[0]
    assert first["accepted"] and first["path"] == CHANGE and first["body"]["routing_key"] == "[redacted]"
    assert first["body"]["payload"]["custom_details"]["event"] == "deploy_started"
    assert first["body"]["links"][0] == {"href": "file:///var/lib/controlroom/report.md", "text": "Post-deployment report"}
    assert all(key not in str(r) for r in recorded)  # the routing key is never kept
    assert await records(client, server, "pagerduty") == []  # change events are a sink of their own


async def test_alert_events_carry_links_images_and_context(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    key = server.settings.pagerduty_routing_key
    trigger = {
        "routing_key": key, "event_action": "trigger", "dedup_key": "release-42",
        "payload": {"summary": "Fudo failing after v2.15.0", "source": "controlroom", "severity": "critical",
                    "component": "fudo", "group": "production", "class": "rollback",
                    "timestamp": "2024-01-22T03:20:00Z", "custom_details": {"version": "v2.15.0"}},
        "links": [{"href": "https://reports.example/42", "text": "report"}],
        "images": [{"src": "https://grafana.example/fudo.png", "href": "https://grafana.example", "alt": "Fudo"}],
        "client": "controlroom", "client_url": "https://controlroom.example",
    }
    response = await client.post(ALERT, json=trigger)
    assert response.status_code == 202 and response.json()["dedup_key"] == "release-42"

    def broken(change: Any) -> dict[str, Any]:
        bad = {**trigger, "payload": dict(trigger["payload"])}
        change(bad)
        return bad

    for why, bad in {
        "component not a string": broken(lambda e: e["payload"].update(component=["fudo"])),
        "group not a string": broken(lambda e: e["payload"].update(group=1)),
        "class not a string": broken(lambda e: e["payload"].update({"class": {}})),
        "custom_details not an object": broken(lambda e: e["payload"].update(custom_details=[1])),
        "a link without href": broken(lambda e: e.update(links=[{"text": "report"}])),
        "an image without src": broken(lambda e: e.update(images=[{"alt": "x"}])),
        "client_url not a string": broken(lambda e: e.update(client_url=3)),
        "summary of 1025 characters": broken(lambda e: e["payload"].update(summary="s" * 1025)),
        "dedup_key of 256 characters": broken(lambda e: e.update(dedup_key="k" * 256)),
    }.items():
        answer = await client.post(ALERT, json=bad)
        assert answer.status_code == 400 and answer.json()["errors"], why
    recorded = await records(client, server, "pagerduty")
    assert recorded[0]["body"]["links"] == trigger["links"] and recorded[0]["body"]["payload"]["component"] == "fudo"


# -- Slack's Web API -----------------------------------------------------------------------


async def test_chat_post_message_threads_a_deployment(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    bot = bearer(server.settings.slack_bot_token)
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": "Deploying v2.15.0"}},
              {"type": "section", "text": {"type": "mrkdwn", "text": "*Verdict* GO &lt;!everyone&gt;"}},
              {"type": "divider"},
              {"type": "context", "elements": [{"type": "mrkdwn", "text": "phase 1"}]}]
    first = await client.post(POST_MESSAGE, headers=bot, json={"channel": "#incidents", "text": "Deploying v2.15.0", "blocks": blocks})
    assert first.status_code == 200
    body = first.json()
    assert body["ok"] is True and body["channel"] == "C0SANDBOX01" and TS.match(body["ts"])
    assert body["message"]["ts"] == body["ts"] and body["message"]["text"] == "Deploying v2.15.0"
    assert body["message"]["blocks"] == blocks and "thread_ts" not in body["message"]
    assert body["warning"] == "missing_charset"  # as Slack answers JSON posted without a charset
    thread = body["ts"]

    reply = (await client.post(POST_MESSAGE, headers=bot, json={"channel": "incidents", "text": "Phase 2", "thread_ts": thread})).json()
    assert reply["ok"] and reply["message"]["thread_ts"] == thread and reply["ts"] > thread
    resolve = (await client.post(POST_MESSAGE, headers={**bot, "Content-Type": "application/json; charset=utf-8"},
                                 content=f'{{"channel": "C0SANDBOX01", "text": "Resolved", "thread_ts": "{thread}", '
                                         f'"reply_broadcast": true}}')).json()
    assert resolve["ok"] and "warning" not in resolve and resolve["ts"] > reply["ts"]

    async def refused(headers: dict[str, str], **args: Any) -> str:
        response = await client.post(POST_MESSAGE, headers=headers, json={"channel": "#incidents", "text": "x", **args})
        assert response.status_code == 200  # Slack answers its refusals with 200 and ok: false
        assert response.json()["ok"] is False
        return response.json()["error"]

    assert await refused(bot, thread_ts="1700000000.000001") == "thread_not_found"
    assert await refused(bot, thread_ts=reply["ts"]) == "thread_not_found"  # a reply is no thread
    assert await refused(bot, thread_ts="yesterday") == "invalid_thread_ts"
    assert await refused(bearer("xoxb-1-2-wrong")) == "invalid_auth"
    assert await refused({}) == "not_authed"
    assert await refused(bot, channel="#general") == "channel_not_found"
    assert await refused(bot, text="") == "no_text"
    assert await refused(bot, text="x" * 40_001) == "msg_too_long"
    assert await refused(bot, reply_broadcast="yes", thread_ts=thread) == "invalid_arguments"
    too_long = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    answer = (await client.post(POST_MESSAGE, headers=bot, json={"channel": "#incidents", "text": "x", "blocks": too_long})).json()
    assert answer["error"] == "invalid_blocks"
    assert answer["errors"] == ["must be less than 3001 characters [json-pointer:/blocks/0/text/text]"]
    assert await refused(bot, blocks=[{"type": "divider"}] * 51) == "invalid_blocks"
    assert await refused(bot, blocks=[{"type": "banner"}]) == "invalid_blocks"

    recorded = await records(client, server, "slack_api")
    assert [r["ok"] for r in recorded[:3]] == [True, True, True]
    assert [r["ts"] for r in recorded[:3]] == [thread, reply["ts"], resolve["ts"]]
    assert [r["thread_ts"] for r in recorded[:3]] == [None, thread, thread]
    assert [r["reply_broadcast"] for r in recorded[:3]] == [False, False, True]
    assert recorded[3]["accepted"] is False and recorded[3]["error"] == "thread_not_found" and recorded[3]["status"] == 200
    assert len({r["ts"] for r in recorded[:3]}) == 3
    assert all(server.settings.slack_bot_token not in str(r) for r in recorded)
    assert await records(client, server, "slack") == []  # the incoming webhook's sink is another


async def test_chat_post_message_rate_limited_and_form_encoded(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    token = server.settings.slack_bot_token
    fault = {"sink": "slack_api", "status": 429, "retry_after": 3}
    assert (await client.post("/_sandbox/sinks/faults", json=fault, headers=admin(server))).status_code == 200
    limited = await client.post(POST_MESSAGE, headers=bearer(token), json={"channel": "#incidents", "text": "hi"})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.json() == {"ok": False, "error": "ratelimited"}
    # A form body may carry the token itself; it is never recorded.
    form = await client.post(POST_MESSAGE, data={"token": token, "channel": "incidents", "text": "hi"})
    assert form.json()["ok"] is True
    recorded = await records(client, server, "slack_api")
    assert [r["status"] for r in recorded] == [429, 200] and "token" not in recorded[1]["body"]
    assert recorded[0]["error"] == "ratelimited" and recorded[0]["ts"] is None and not recorded[0]["accepted"]
    unknown = await client.post("/sinks/slack-api/chat.delete", headers=bearer(token), json={})
    assert unknown.status_code == 200 and unknown.json() == {"ok": False, "error": "unknown_method"}


# -- Statuspage ----------------------------------------------------------------------------


async def test_statuspage_incident_from_rollback_to_resolved(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    key = {"Authorization": f"OAuth {server.settings.statuspage_api_key}"}
    components = (await client.get(f"{PAGE}/components", headers=key)).json()
    by_name = {c["name"]: c for c in components}
    assert set(by_name) == {"Fudo integration", "MaxiRest integration", "BistrSoft integration", "API"}
    fudo = by_name["Fudo integration"]["id"]
    assert all(c["status"] == "operational" and c["page_id"] == STATUSPAGE_PAGE_ID for c in components)

    created = await client.post(f"{PAGE}/incidents", headers=key, json={"incident": {
        "name": "Fudo integration degraded: rolling back to v2.14.0", "status": "investigating",
        "body": "We are rolling back a release that broke the Fudo integration.",
        "component_ids": [fudo], "components": {fudo: "major_outage"}, "deliver_notifications": True}})
    assert created.status_code == 201, created.text
    incident = created.json()
    assert re.match(r"^[a-z0-9]{12}$", incident["id"]) and incident["status"] == "investigating"
    assert incident["impact"] == "critical" and incident["shortlink"].startswith("https://")
    assert [c["id"] for c in incident["components"]] == [fudo] and incident["components"][0]["status"] == "major_outage"
    (update,) = incident["incident_updates"]
    assert update["affected_components"] == [{"code": fudo, "name": "Fudo integration", "old_status": "operational",
                                              "new_status": "major_outage"}]
    assert {c["id"]: c["status"] for c in (await client.get(f"{PAGE}/components", headers=key)).json()}[fudo] == "major_outage"

    incident_url = f"{PAGE}/incidents/{incident['id']}"
    for status, component in (("identified", "partial_outage"), ("monitoring", "degraded_performance")):
        patched = await client.patch(incident_url, headers=key, json={"incident": {
            "status": status, "body": f"Rollback {status}.", "components": {fudo: component}}})
        assert patched.status_code == 200 and patched.json()["status"] == status
    resolved = await client.put(incident_url, headers=key, json={"incident": {
        "status": "resolved", "body": "Rollback verified.", "components": {fudo: "operational"}}})
    assert resolved.status_code == 200
    done = resolved.json()
    assert done["status"] == "resolved" and done["resolved_at"] and done["monitoring_at"] and done["impact"] == "none"
    assert [u["status"] for u in done["incident_updates"]] == ["resolved", "monitoring", "identified", "investigating"]
    assert (await client.get(incident_url, headers=key)).json() == done
    assert [i["id"] for i in (await client.get(f"{PAGE}/incidents", headers=key)).json()][0] == incident["id"]

    minimal = {"incident": {"name": "x"}}
    assert (await client.post(f"{PAGE}/incidents", json=minimal)).status_code == 401
    assert (await client.post(f"{PAGE}/incidents", json=minimal, headers=bearer(server.settings.statuspage_api_key))).status_code == 401
    assert (await client.post(f"{PAGE}/incidents", json=minimal, headers={"Authorization": "OAuth wrong"})).json() == \
        {"message": "Could not authenticate"}
    assert (await client.post("/sinks/statuspage/v1/pages/nosuchpage01/incidents", json=minimal, headers=key)).status_code == 404
    assert (await client.get(f"{PAGE}/incidents/nosuchincid1", headers=key)).status_code == 404
    for why, fields in {
        "invalid status": {"name": "x", "status": "on_fire"},
        "unknown component": {"name": "x", "components": {"cmpnosuch001": "major_outage"}},
        "invalid component status": {"name": "x", "components": {fudo: "down"}},
        "no name": {"status": "investigating"},
    }.items():
        answer = await client.post(f"{PAGE}/incidents", headers=key, json={"incident": fields})
        assert answer.status_code == 422 and answer.json()["message"], why
    assert (await client.post(f"{PAGE}/incidents", headers=key, json={"name": "not wrapped"})).status_code == 400

    recorded = await records(client, server, "statuspage")
    assert [(r["method"], r["status"]) for r in recorded[:6]] == [
        ("GET", 200), ("POST", 201), ("GET", 200), ("PATCH", 200), ("PATCH", 200), ("PUT", 200)]
    assert [r["incident_id"] for r in recorded[1:7]] == [incident["id"], None, *[incident["id"]] * 4]
    assert recorded[1]["body"]["incident"]["components"] == {fudo: "major_outage"}
    assert all(server.settings.statuspage_api_key not in str(r) for r in recorded)


# -- faults --------------------------------------------------------------------------------


async def test_a_sink_that_refuses_for_a_while_then_accepts(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    for sink in SINKS:  # every sink takes faults
        fault = {"sink": sink, "status": 503, "for_s": 60}
        answer = await client.post("/_sandbox/sinks/faults", json=fault, headers=admin(server))
        assert answer.status_code == 200 and answer.json()["for_s"] == 60, sink
    await client.delete("/_sandbox/sinks", headers=admin(server))
    fault = {"sink": "pagerduty_change", "status": 429, "for_s": 1.0, "retry_after": 120}
    assert (await client.post("/_sandbox/sinks/faults", json=fault, headers=admin(server))).status_code == 200
    event = change_event(server.settings.pagerduty_routing_key, event="rollback_started")
    started = time.monotonic()
    refused = 0
    while True:
        response = await client.post(CHANGE, json=event)
        if response.status_code == 202:
            break
        assert response.status_code == 429 and response.headers["retry-after"] == "120"
        refused += 1
        await asyncio.sleep(0.1)
    assert time.monotonic() - started >= 1.0 and refused >= 5  # every request while it lasted
    recorded = await records(client, server, "pagerduty_change")
    assert [r["status"] for r in recorded] == [429] * refused + [202]
    for bad in ({"sink": "email", "status": 500}, {"sink": "slack", "status": 500, "count": 2, "for_s": 5},
                {"sink": "slack", "status": 500, "for_s": 0}, {"sink": "slack", "status": 200}):
        assert (await client.post("/_sandbox/sinks/faults", json=bad, headers=admin(server))).status_code == 400, bad


# -- fudo-outage-watch ---------------------------------------------------------------------


async def test_fudo_fails_during_the_watch_after_the_deploy_finished(pg: EmbeddedPostgres) -> None:
    settings = HttpSettings(dsn=await create_database(pg), scenario="fudo-outage-watch", rate_limit=10_000,
                            watch_failure_delay_s=0.5)
    server = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5, headers=bearer(settings.anon_key)) as http:
            await _watch_story(http, server)
    finally:
        server.stop()


async def _watch_story(http: httpx.AsyncClient, server: HttpServerProcess) -> None:
    key, control = server.settings.pagerduty_routing_key, admin(server)

    async def fudo() -> int:
        return (await http.get("/functions/v1/pos-fudo/validate")).status_code

    async def state() -> dict[str, Any]:
        return (await http.get("/_sandbox/state", headers=control)).json()

    deployed = await http.post("/_sandbox/deploy", json={"version": "v2.15.0"}, headers=control)
    assert deployed.json() == {"deployed_version": "v2.15.0", "failing_providers": []}  # healthy through the deploy
    assert await fudo() == 200
    for details in ({"event": "deploy_started"}, {"outcome": "failed"}, {"outcome": "aborted"}):
        assert (await http.post(CHANGE, json=change_event(key, **details))).status_code == 202
    assert (await state())["pending_failure"] is None

    finished = time.monotonic()
    assert (await http.post(CHANGE, json=change_event(key))).status_code == 202
    pending = (await state())["pending_failure"]
    assert pending["providers"] == ["fudo"] and pending["at"] > time.time()
    assert (await http.post(CHANGE, json=change_event(key))).status_code == 202  # a resend schedules nothing more
    assert await fudo() == 200  # not yet: the watch has just started
    while await fudo() == 200:
        assert time.monotonic() - finished < 5, "Fudo never failed"
        await asyncio.sleep(0.05)
    assert time.monotonic() - finished >= 0.5
    assert await fudo() == 503 and (await state())["failing_providers"] == ["fudo"]
    assert (await http.get("/functions/v1/pos-maxirest/validate")).status_code == 200

    rolled = await http.post("/_sandbox/rollback", json={"version": "v2.14.0"}, headers=control)
    assert rolled.json()["failing_providers"] == [] and await fudo() == 200

    # A rollback before the failure strikes cancels it.
    assert (await http.post(CHANGE, json=change_event(key))).status_code == 202
    await http.post("/_sandbox/rollback", json={"version": "v2.14.0"}, headers=control)
    await asyncio.sleep(1.0)
    assert await fudo() == 200 and (await state())["pending_failure"] is None

    # Tests and docs make a provider fail at once.
    failed = await http.post("/_sandbox/fail", json={"providers": ["fudo", "bistrsoft"]}, headers=control)
    assert failed.json() == {"failing_providers": ["bistrsoft", "fudo"]} and await fudo() == 503
    for bad in ({"providers": []}, {"providers": ["toast"]}, {"providers": "fudo"}, {}):
        assert (await http.post("/_sandbox/fail", json=bad, headers=control)).status_code == 400
    assert (await http.post("/_sandbox/fail", json={"providers": ["fudo"]})).status_code == 401
    await http.post("/_sandbox/rollback", json={"version": "v2.14.0"}, headers=control)
    assert await fudo() == 200


async def test_the_sandbox_config_points_at_every_sink() -> None:
    """What `controlroom sandbox --scenario fudo-outage-watch` writes: the urls and secrets a
    control room needs for change events, Slack's Web API and Statuspage, and a watch delay
    that reaches the server."""
    async with Sandbox("fudo-outage-watch", locations=20, simulate=False, watch_failure_delay_s=0.2) as sandbox:
        loaded = load_config(sandbox.config_path, environ={})
        urls, secrets = loaded.environment.urls, loaded.secrets
        assert urls["pagerduty_api"] == f"{sandbox.base_url}/sinks/pagerduty-api"
        assert urls["statuspage_page"] == f"{sandbox.base_url}{PAGE}"
        assert secrets.get("slack_bot_token").startswith("xoxb-")
        assert secrets.variable("statuspage_api_key") == "CONTROLROOM_SANDBOX_STATUSPAGE_API_KEY"
        async with httpx.AsyncClient(timeout=5) as http:
            posted = await http.post(f"{urls['slack_api']}/chat.postMessage", json={"channel": "#incidents", "text": "hi"},
                                     headers=bearer(secrets.get("slack_bot_token")))
            assert posted.json()["ok"] is True
            components = await http.get(f"{urls['statuspage_page']}/components",
                                        headers={"Authorization": f"OAuth {secrets.get('statuspage_api_key')}"})
            assert components.status_code == 200 and len(components.json()) == 4
            event = change_event(secrets.get("pagerduty_routing_key"))
            assert (await http.post(f"{urls['pagerduty']}/v2/change/enqueue", json=event)).status_code == 202
            validate = f"{sandbox.base_url}/functions/v1/pos-fudo/validate"
            anon = bearer(sandbox.settings.anon_key)
            started = time.monotonic()
            while (await http.get(validate, headers=anon)).status_code == 200:
                assert time.monotonic() - started < 5, "Fudo never failed"
                await asyncio.sleep(0.05)
