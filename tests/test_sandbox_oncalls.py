"""The sandbox's PagerDuty REST API (GET /sinks/pagerduty-api/oncalls), over a real socket
from the sandbox's own server process: PagerDuty's auth, Accept, time range, filters and
pages, a roster that covers every level, and the oncall-gap scenario's hole at L2."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from controlroom.sandbox.http.pagerduty_api import POLICY_ID, roster
from controlroom.sandbox.http.server import HttpServerProcess, HttpSettings

from http_fixtures import server, shared_dsn, start_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(60)

PATH = "/sinks/pagerduty-api/oncalls"
ACCEPT = "application/vnd.pagerduty+json;version=2"


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def auth(settings: HttpSettings) -> dict[str, str]:
    return {"Authorization": f"Token token={settings.pagerduty_api_token}", "Accept": ACCEPT}


@pytest.fixture
async def client(server: HttpServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5, headers=auth(server.settings)) as http:
        yield http


@pytest.fixture(scope="module")
async def gap_server(shared_dsn: str) -> AsyncIterator[HttpServerProcess]:
    process = await start_server(HttpSettings(dsn=shared_dsn, scenario="oncall-gap", rate_limit=10_000))
    yield process
    process.stop()


async def test_the_key_is_checked_as_pagerduty_does(server: HttpServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
        for headers in ({}, {"Authorization": "Token token=not-the-key"},
                        {"Authorization": f"Bearer {server.settings.pagerduty_api_token}"}):
            response = await http.get(PATH, headers=headers)
            assert response.status_code == 401, headers
            assert response.json() == {"error": {"message": "Authentication failed", "code": 2006}}
        plain = await http.get(PATH, headers={"Authorization": f"Token token={server.settings.pagerduty_api_token}"})
        assert plain.status_code == 200  # no Accept: the key's own version (2) answers


async def test_accept_names_version_2_or_json(client: httpx.AsyncClient) -> None:
    for accept in ("application/vnd.pagerduty+json;version=2", "application/json", "*/*"):
        assert (await client.get(PATH, headers={"Accept": accept})).status_code == 200, accept
    for accept in ("application/vnd.pagerduty+json;version=1", "text/html"):
        response = await client.get(PATH, headers={"Accept": accept})
        assert response.status_code == 406 and "error" in response.json(), accept


async def test_every_level_is_covered_for_the_next_24_hours(client: httpx.AsyncClient) -> None:
    now = datetime.now(timezone.utc)
    until = now + timedelta(hours=24)
    response = await client.get(PATH, params={"escalation_policy_ids[]": POLICY_ID, "since": iso(now),
                                              "until": iso(until), "limit": 100, "time_zone": "UTC"})
    body = response.json()
    assert response.status_code == 200 and body["more"] is False and body["total"] is None
    entries = body["oncalls"]
    assert {e["escalation_level"] for e in entries} == {1, 2, 3, 4}
    for level in (1, 2, 3, 4):
        mine = sorted((e for e in entries if e["escalation_level"] == level), key=lambda e: e["start"] or "")
        covered_to = now
        for e in mine:
            start = datetime.fromisoformat(e["start"]) if e["start"] else None
            end = datetime.fromisoformat(e["end"]) if e["end"] else None
            assert start is None or start <= covered_to, (level, e)  # no hole
            covered_to = max(covered_to, end) if end else until
            assert e["user"]["type"] == "user_reference" and e["user"]["summary"]
            assert e["escalation_policy"]["id"] == POLICY_ID
        assert covered_to >= until, level
    permanent = [e for e in entries if e["escalation_level"] == 4]
    assert permanent and permanent[0]["start"] is None and permanent[0]["end"] is None and permanent[0]["schedule"] is None
    other_policy = await client.get(PATH, params={"escalation_policy_ids[]": "PNOTOURS"})
    assert other_policy.json()["oncalls"] == []


async def test_pages_filters_and_time_zone(client: httpx.AsyncClient) -> None:
    now = datetime.now(timezone.utc)
    window = {"since": iso(now), "until": iso(now + timedelta(days=3))}
    everything = (await client.get(PATH, params={**window, "limit": 100, "total": "true"})).json()
    total = everything["total"]
    assert total == len(everything["oncalls"]) > 5
    seen, offset = [], 0
    while True:
        page = (await client.get(PATH, params={**window, "limit": 2, "offset": offset})).json()
        assert page["limit"] == 2 and page["offset"] == offset and len(page["oncalls"]) <= 2
        seen += page["oncalls"]
        if not page["more"]:
            break
        offset += len(page["oncalls"])
    assert seen == everything["oncalls"]
    earliest = (await client.get(PATH, params={**window, "earliest": "true", "limit": 100})).json()["oncalls"]
    assert len({(e["escalation_level"], e["user"]["id"]) for e in earliest}) == len(earliest) < total
    level_1 = everything["oncalls"][0]
    assert level_1["escalation_level"] == 1
    only = (await client.get(PATH, params={**window, "user_ids[]": level_1["user"]["id"], "limit": 100})).json()["oncalls"]
    assert only and all(e["user"]["id"] == level_1["user"]["id"] for e in only)
    zoned = (await client.get(PATH, params={**window, "time_zone": "America/Argentina/Buenos_Aires"})).json()
    assert zoned["oncalls"][0]["start"].endswith("-03:00")
    current = (await client.get(PATH)).json()["oncalls"]  # no range: who is on call now
    assert sorted(e["escalation_level"] for e in current) == [1, 2, 3, 4]


async def test_bad_ranges_and_parameters_are_400(client: httpx.AsyncClient) -> None:
    now = datetime.now(timezone.utc)
    for params in ({"since": "yesterday"}, {"since": iso(now), "until": iso(now - timedelta(hours=1))},
                   {"since": iso(now), "until": iso(now + timedelta(days=91))}, {"limit": "0"},
                   {"time_zone": "Mars/Olympus_Mons"}):
        response = await client.get(PATH, params=params)
        assert response.status_code == 400, params
        assert response.json()["error"]["message"] == "Invalid Input Provided" and response.json()["error"]["errors"]


async def test_the_gap_scenario_leaves_l2_uncovered_for_an_hour(gap_server: HttpServerProcess) -> None:
    now = datetime.now(timezone.utc)
    async with httpx.AsyncClient(base_url=gap_server.base_url, timeout=5, headers=auth(gap_server.settings)) as http:
        body = (await http.get(PATH, params={"since": iso(now), "until": iso(now + timedelta(hours=2)),
                                             "limit": 100})).json()
    level_2 = sorted((e for e in body["oncalls"] if e["escalation_level"] == 2), key=lambda e: e["start"])
    ends = [datetime.fromisoformat(e["end"]) for e in level_2]
    starts = [datetime.fromisoformat(e["start"]) for e in level_2]
    hole = [(end, start) for end, start in zip(ends, starts[1:]) if start > end]
    assert len(hole) == 1, level_2
    begins, stops = hole[0]
    assert stops - begins == timedelta(hours=1)
    assert timedelta(minutes=25) < begins - now < timedelta(minutes=31)  # 30 min after the server started
    other_levels = {e["escalation_level"] for e in body["oncalls"]}
    assert other_levels == {1, 2, 3, 4}


def test_the_roster_is_fixed_in_time() -> None:
    """Two questions about overlapping windows agree: the roster does not move with the asker."""
    start = time.time()
    first = roster(start, start + 6 * 3600)
    later = roster(start + 3600, start + 6 * 3600)
    assert [e for e in first if e.overlaps(start + 3600, start + 6 * 3600)] == later
    assert all(e.start is None or e.start % 3600 == 0 for e in first)  # handovers at whole hours
