"""The pagerduty_oncall probe against a real local PagerDuty-shaped server over a socket:
coverage per level, gaps, pagination, a refused key, a dead or slow API — every failure an
`error` or a `fail` with evidence, never an exception, and the key never in the text."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlroom.checks import ProbeContext, run_probe
from controlroom.checks.oncall import Shift, judge
from controlroom.checks.run import AttestationError, attestable_ids, run_checklist
from controlroom.config.loader import load_config
from controlroom.config.models import PagerDutyOncallItem
from controlroom.errors import ConfigError
from controlroom.release.engine import ReleaseEngine

from probe_support import closed_port, make_loaded, serve

pytestmark = pytest.mark.timeout(60)

TOKEN = "u+Pd7TqZ4xWbS9kLmNoQ"
POLICY = "PTESTEP"


def at(minutes: float) -> str:
    """An ISO 8601 time `minutes` from now, with an offset as PagerDuty writes them."""
    moment = datetime.now(timezone.utc) + timedelta(minutes=minutes)
    return moment.astimezone(timezone(timedelta(hours=-3))).isoformat(timespec="seconds")


def clocks(minutes: float, began: datetime) -> set[str]:
    """HH:MM of `minutes` after the test began or after now: the probe's clock is in between."""
    return {(moment + timedelta(minutes=minutes)).strftime("%H:%M") for moment in (began, datetime.now(timezone.utc))}


def entry(level: int, who: str, start: float | None, end: float | None) -> dict[str, Any]:
    return {
        "escalation_policy": {"id": POLICY, "type": "escalation_policy_reference", "summary": "Test policy"},
        "escalation_level": level,
        "schedule": {"id": f"PSCH{level}", "type": "schedule_reference", "summary": f"Level {level}"},
        "user": {"id": "P" + who.replace(" ", "").upper()[:6], "type": "user_reference", "summary": who},
        "start": None if start is None else at(start),
        "end": None if end is None else at(end),
    }


def full() -> list[dict[str, Any]]:
    """Every level covered for hours from now (times from now: made when a test asks)."""
    return [
        entry(1, "Ana Ruiz", -120, 240),
        entry(2, "Ben Okafor", -600, 60), entry(2, "Chen Wei", 60, 720),
        entry(3, "Dana Kim", -30, 1440),
        entry(4, "Hiro Tanaka", None, None),
    ]


class FakePagerDuty:
    """GET /oncalls as PagerDuty answers it, from a roster the test sets; pages of `page_size`
    whatever `limit` asks, so that `more` must be followed."""

    def __init__(self) -> None:
        self.roster: list[dict[str, Any]] = []
        self.page_size = 100
        self.delay_s = 0.0
        self.requests: list[Request] = []

    async def oncalls(self, request: Request) -> Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Token token={TOKEN}":
            # A careless server that says which key it refused.
            shown = request.headers.get("authorization", "")
            return JSONResponse({"error": {"message": f"Authentication failed for {shown}", "code": 2006}}, status_code=401)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        offset = int(request.query_params.get("offset", "0"))
        page = self.roster[offset:offset + self.page_size]
        return JSONResponse({"oncalls": page, "limit": self.page_size, "offset": offset,
                             "more": offset + self.page_size < len(self.roster), "total": None})


FAKE = FakePagerDuty()


async def html(request: Request) -> Response:
    return Response("<html>maintenance</html>", status_code=200, media_type="text/html")


async def throttled(request: Request) -> Response:
    return JSONResponse({"error": {"message": "Rate Limit Exceeded", "code": 2020}}, status_code=429,
                        headers={"Retry-After": "30"})


@pytest.fixture(scope="module")
async def base_url() -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/oncalls", FAKE.oncalls), Route("/html", html), Route("/throttled", throttled)])
    async with serve(app) as url:
        yield url


@pytest.fixture(autouse=True)
def fresh_fake() -> None:
    FAKE.roster, FAKE.page_size, FAKE.delay_s = full(), 100, 0.0
    FAKE.requests.clear()


def oncall_item(**extra: Any) -> dict[str, Any]:
    return {"id": "on-call", "title": "On-call team available", "kind": "pagerduty_oncall",
            "criterion": "Insufficient on-call coverage", "url": "{urls.pd_oncalls}",
            "token_secret": "pd_token", **extra}


async def probe(base_url: str, path: str = "/oncalls", *, token: str = TOKEN, **extra: Any):  # noqa: ANN201
    url = f"{base_url}{path}?escalation_policy_ids[]={POLICY}"
    loaded = make_loaded([oncall_item(**extra)], urls={"pd_oncalls": url}, secrets={"pd_token": token})
    async with ProbeContext(loaded) as ctx:
        return await run_probe(loaded.runbook.items()[0][1], ctx)


async def test_full_coverage_passes_naming_who_is_on_call_per_level(base_url: str) -> None:
    began = datetime.now(timezone.utc)
    result = await probe(base_url)
    assert result.status == "pass", result.evidence
    evidence = result.evidence
    levels = evidence.split(" — ")[0].split(" · ")
    assert [text.split(" ")[0] for text in levels] == ["L1", "L2", "L3", "L4"], evidence
    assert levels[0].startswith("L1 Ana Ruiz until ")
    assert levels[1].startswith("L2 Ben Okafor until ") and levels[1].endswith(", then Chen Wei")  # on past the window
    assert levels[2].startswith("L3 Dana Kim until ")
    assert levels[3] == "L4 Hiro Tanaka always"
    assert evidence.endswith(" — covered 2 h"), evidence
    assert len(evidence) <= 150  # two lines of the checklist's detail on an 80-column screen
    # The end of Ana's shift, in UTC, as the operator reads it.
    assert levels[0] in {f"L1 Ana Ruiz until {clock} UTC" for clock in clocks(240, began)}, levels[0]
    assert result.measured["uncovered"] == [] and result.measured["pages"] == 1 and result.measured["entries"] == 5
    # The request PagerDuty's API expects.
    request = FAKE.requests[0]
    assert request.headers["accept"] == "application/vnd.pagerduty+json;version=2"
    params = request.query_params
    assert params.getlist("escalation_policy_ids[]") == [POLICY]
    since = datetime.fromisoformat(params["since"])
    until = datetime.fromisoformat(params["until"])
    assert until - since == timedelta(hours=2) and abs(since - datetime.now(timezone.utc)) < timedelta(seconds=30)
    assert params["limit"] == "100" and params["offset"] == "0" and params["time_zone"] == "UTC"
    assert "earliest" not in params  # it would hide a user's later shift


async def test_an_l2_gap_fails_naming_the_level_and_the_window(base_url: str) -> None:
    FAKE.roster = [e for e in full() if e["escalation_level"] != 2] + [entry(2, "Ben Okafor", -600, 40),
                                                                      entry(2, "Chen Wei", 70, 720)]
    began = datetime.now(timezone.utc)
    result = await probe(base_url)
    assert result.status == "fail", result.evidence
    head, *others = result.evidence.split(" · ")
    windows = {f"L2 uncovered {a}–{b} UTC (Ben Okafor until {a}, then Chen Wei)" for a in clocks(40, began)
               for b in clocks(70, began)}
    assert head in windows, result.evidence
    assert [text.split(" ")[0] for text in others] == ["L1", "L3", "L4"]  # the covered levels follow
    assert result.measured["uncovered"] == [2]


async def test_coverage_ending_within_the_hours_fails(base_url: str) -> None:
    FAKE.roster = [e for e in full() if e["escalation_level"] != 3] + [entry(3, "Dana Kim", -30, 50)]
    began = datetime.now(timezone.utc)
    result = await probe(base_url)
    assert result.status == "fail", result.evidence
    head = result.evidence.split(" · ")[0]  # from the end of Dana's shift to the end of the window
    assert head in {f"L3 uncovered {a}–{b} UTC (Dana Kim until {a})" for a in clocks(50, began)
                    for b in clocks(120, began)}, result.evidence
    # The same roster is enough for a shorter horizon.
    assert (await probe(base_url, hours=0.5)).status == "pass"


async def test_a_level_nobody_covers_and_levels_not_asked_for(base_url: str) -> None:
    FAKE.roster = [e for e in full() if e["escalation_level"] != 4]
    result = await probe(base_url)
    assert result.status == "fail"
    assert result.evidence.startswith("L4 uncovered for the whole next 2 h (nobody on call) · L1 Ana Ruiz until ")
    only = await probe(base_url, levels=[1, 2])
    assert only.status == "pass" and "L3" not in only.evidence and "covered 2 h" in only.evidence


async def test_pages_are_followed_while_more_is_true(base_url: str) -> None:
    FAKE.page_size = 2
    result = await probe(base_url)
    assert result.status == "pass", result.evidence
    assert [r.query_params["offset"] for r in FAKE.requests] == ["0", "2", "4"]
    assert all(r.query_params.getlist("escalation_policy_ids[]") == [POLICY] for r in FAKE.requests)
    assert len({r.query_params["since"] for r in FAKE.requests}) == 1  # one window for every page
    assert result.measured["pages"] == 3 and result.measured["entries"] == 5
    assert result.evidence.endswith(" — covered 2 h (3 pages)") and "L4 Hiro Tanaka always" in result.evidence


async def test_a_refused_key_is_an_error_that_never_shows_it(base_url: str) -> None:
    wrong = "wrong-key-0123456789abc"
    result = await probe(base_url, token=wrong)
    assert result.status == "error"
    assert "HTTP 401" in result.evidence and "Authentication failed" in result.evidence
    assert "check the secret 'pd_token'" in result.evidence
    assert wrong not in result.evidence and TOKEN not in result.evidence
    assert "[redacted]" in result.evidence  # the server echoed it; the evidence did not


async def test_the_key_is_in_nothing_the_check_prints(base_url: str) -> None:
    url = f"{base_url}/oncalls?escalation_policy_ids[]={POLICY}"
    for token in (TOKEN, "refused-key-abcdef0123"):
        loaded = make_loaded([oncall_item()], urls={"pd_oncalls": url}, secrets={"pd_token": token})
        report = await run_checklist(loaded)
        text = json.dumps(report.to_json())
        assert token not in text and report.results["on-call"].status in ("pass", "error")


async def test_a_deadline_exceeded_is_an_error(base_url: str) -> None:
    FAKE.delay_s = 3.0
    result = await probe(base_url, timeout_s=0.5)
    assert result.status == "error"
    assert "timeout" in result.evidence and "/oncalls" in result.evidence
    assert result.duration_ms < 2000
    assert "escalation_policy_ids" not in result.evidence  # the URL is shown bare


async def test_the_deadline_covers_every_page(base_url: str) -> None:
    FAKE.page_size, FAKE.delay_s = 1, 0.2
    result = await probe(base_url, timeout_s=0.5)  # five pages of 0.2 s do not fit in 0.5 s
    assert result.status == "error" and "timeout" in result.evidence, result.evidence
    assert result.duration_ms < 2000


async def test_a_dead_api_is_an_error() -> None:
    url = f"http://127.0.0.1:{closed_port()}/oncalls?escalation_policy_ids[]={POLICY}"
    loaded = make_loaded([oncall_item()], urls={"pd_oncalls": url}, secrets={"pd_token": TOKEN})
    async with ProbeContext(loaded) as ctx:
        result = await run_probe(loaded.runbook.items()[0][1], ctx)
    assert result.status == "error" and "cannot connect" in result.evidence


async def test_an_answer_that_is_not_pagerdutys_is_an_error(base_url: str) -> None:
    result = await probe(base_url, "/html")
    assert result.status == "error" and "not an on-calls answer" in result.evidence and "maintenance" in result.evidence
    limited = await probe(base_url, "/throttled")
    assert limited.status == "error" and "HTTP 429" in limited.evidence and "Retry-After 30 s" in limited.evidence


async def test_a_missing_secret_value_is_an_error_naming_the_variable(base_url: str) -> None:
    url = f"{base_url}/oncalls"
    loaded = make_loaded([oncall_item()], urls={"pd_oncalls": url}, secrets={"pd_token": ""})
    async with ProbeContext(loaded) as ctx:
        result = await run_probe(loaded.runbook.items()[0][1], ctx)
    assert result.status == "error" and "TEST_PD_TOKEN" in result.evidence


# -- not configured: attested instead ------------------------------------------------------


RUNBOOK = """\
name = "r"
deployment = { phases = [{ id = "p", title = "P", minutes = 5, steps = [{ id = "s", title = "S", action = { kind = "manual" } }] }] }
rollback = { plans = [{ id = "r", title = "R", target_minutes = 5, steps = [{ id = "b", title = "B", action = { kind = "manual" } }] }] }
escalation = { levels = [{ level = 1, title = "L1", from_minutes = 0, contacts = ["x"] }] }

[[checklist.sections]]
id = "s"
title = "S"
items = [{ id = "on-call", title = "On-call", kind = "pagerduty_oncall", url = "{urls.pd_oncalls}", token_secret = "pd_token" }]
"""


def write(tmp_path: Path, environment: str) -> Path:
    (tmp_path / "runbook.toml").write_text(RUNBOOK)
    config = tmp_path / "config.toml"
    config.write_text(f'runbook = "runbook.toml"\n[environment]\nname = "staging"\n{environment}')
    return config


async def test_without_pagerduty_configured_it_is_skipped_and_attestable(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, ""), environ={})
    assert attestable_ids(loaded) == ["on-call"]
    report = await run_checklist(loaded)
    result = report.results["on-call"]
    assert result.status == "skipped" and report.verdict.verdict == "PENDING"
    assert "urls.pd_oncalls, secrets.pd_token" in result.evidence and "--attest on-call" in result.evidence
    assert result.evidence == ("not probed: no PagerDuty configured here (urls.pd_oncalls, secrets.pd_token); "
                               "attest that L1-L4 are reachable for the next 2 h (--attest on-call)")
    attested = await run_checklist(loaded, {"on-call"})
    assert attested.results["on-call"].attested and attested.verdict.verdict == "GO", attested.verdict.reasons
    # In the control room: attested with `a` (journaled), or recorded as not met with `A`.
    session = ReleaseEngine.open(loaded, write=True, journal_dir=tmp_path / "journal")
    await session.run_checks()
    assert session.attestable() == ["on-call"] and session.verdict_name == "PENDING"
    session.attest("on-call")
    assert session.verdict_name == "GO" and session.results["on-call"].attested_by
    session.attest_failing("on-call", "the SRE lead is on a plane")
    assert session.verdict_name == "NO-GO" and session.results["on-call"].status == "fail"


async def test_configured_it_is_probed_not_attested(tmp_path: Path, base_url: str) -> None:
    config = write(tmp_path, f'urls = {{ pd_oncalls = "{base_url}/oncalls?escalation_policy_ids[]={POLICY}" }}\n'
                             'secrets = { pd_token = "PD_TOKEN" }\n')
    loaded = load_config(config, environ={"PD_TOKEN": TOKEN})
    assert attestable_ids(loaded) == []
    with pytest.raises(AttestationError, match=r"'on-call' \(probed here: pagerduty_oncall\)"):
        await run_checklist(loaded, {"on-call"})
    report = await run_checklist(loaded)
    assert report.verdict.verdict == "GO" and report.results["on-call"].status == "pass"


def test_half_configured_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment\.secrets\.pd_token.*on-call"):
        load_config(write(tmp_path, 'urls = { pd_oncalls = "https://api.pagerduty.com/oncalls" }\n'), environ={})
    with pytest.raises(ConfigError, match=r"environment\.urls\.pd_oncalls"):
        load_config(write(tmp_path, 'secrets = { pd_token = "PD_TOKEN" }\n'), environ={})


# -- judging, pure -------------------------------------------------------------------------


def test_overlapping_shifts_chain_through_the_longest() -> None:
    now = datetime(2026, 3, 2, 14, 0, tzinfo=timezone.utc)
    item = PagerDutyOncallItem.model_validate({"id": "o", "title": "O", "kind": "pagerduty_oncall",
                                               "url": "https://x.invalid/oncalls", "token_secret": "t", "levels": [1]})
    shifts = [Shift(1, "Ana", now - timedelta(hours=1), now + timedelta(minutes=30)),
              Shift(1, "Ben", now - timedelta(hours=1), now + timedelta(minutes=80)),
              Shift(1, "Chen", now + timedelta(minutes=75), now + timedelta(hours=30)),
              Shift(1, "Zed", now + timedelta(minutes=20), now + timedelta(minutes=10))]  # ends before it starts: ignored
    outcome = judge(item, shifts, now, now + timedelta(hours=2))
    assert outcome.status == "pass"
    assert outcome.evidence == "L1 Ben until 15:20 UTC, then Chen — covered 2 h"
    far = judge(item.model_copy(update={"hours": 40.0}), shifts, now, now + timedelta(hours=40))
    assert far.status == "fail"
    assert far.evidence == "L1 uncovered Tue 20:00–Wed 06:00 UTC (Ben until 15:20, then Chen until Tue 20:00)"
