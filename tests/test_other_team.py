"""A second, independent environment: another team's schema (tests/other_team/schema.sql), its
own HTTP API (tests/other_team_server.py, stdlib) and its own runbook written from the docs
(tests/other_team/runbook.toml). `controlroom check` (the real CLI, over real sockets and a
real Postgres) gives the expected verdict in each situation, the TUI's views show the team's
data, and a runbook without views shows no Breakers or POS screen."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from controlroom.config.loader import load_config
from controlroom.release.engine import ReleaseEngine
from controlroom.report.render import render_report
from controlroom.screens.app import make_app
from controlroom.screens.breakers import BreakersScreen
from controlroom.screens.checklist import ChecklistScreen
from controlroom.screens.pos_health import PosHealthScreen
from controlroom.sandbox.pg.postgres import EmbeddedPostgres
from controlroom.widgets.breaker_table import BreakerTable
from controlroom.widgets.key_bar import LAYOUTS, KeyBar
from other_team_server import API_KEY, OtherTeamServer
from pilot_support import wait_for

HERE = Path(__file__).parent / "other_team"
SCHEMA = (HERE / "schema.sql").read_text()
RUNBOOK = HERE / "runbook.toml"
HEALTHY = """
INSERT INTO sites (site_code, site_label, vendor, link_up) VALUES
  ('ber-1', 'Berlin North', 'acme-bots', true), ('ber-2', 'Berlin South', 'acme-bots', true),
  ('lis-1', 'Lisbon Docks', 'robo-co', true);
INSERT INTO link_breakers (site_code, errors) VALUES ('ber-1', 0), ('ber-2', 1), ('lis-1', 0);
INSERT INTO outages (vendor, began, fixed) VALUES
  ('acme-bots', now() - interval '3 days', now() - interval '3 days' + interval '40 minutes');
"""
# situation -> (SQL on top of the healthy rows, server behaviour, verdict, item ids the reasons name)
SITUATIONS: dict[str, tuple[str, dict[str, Any], str, set[str]]] = {
    "healthy": ("", {}, "GO", set()),
    "breaker open": ("UPDATE link_breakers SET phase = 'open', errors = 9 WHERE site_code = 'lis-1'", {},
                     "NO-GO", {"links-open"}),
    "mttr red": ("INSERT INTO outages (vendor, began, fixed) VALUES ('robo-co', now() - interval '1 day', now())", {},
                 "NO-GO", {"outage-mttr"}),
    "slow api": ("", {"health_delay_s": 0.45}, "DELAYED", {"api-health"}),
    "site broken 5 h": ("UPDATE sites SET link_up = false, broken_since = now() - interval '5 hours' WHERE site_code = 'lis-1'",
                        {}, "DELAYED", {"long-broken"}),
    "stale key accepted": ("", {"accept_swapped_keys": True}, "NO-GO", {"stale-key"}),
}
EXIT = {"GO": 0, "DELAYED": 3, "NO-GO": 4, "PENDING": 5}
_numbers = itertools.count(1)


async def team_database(pg: EmbeddedPostgres, extra_sql: str) -> str:
    name = f"robots_{next(_numbers)}"
    admin = await asyncpg.connect(pg.dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = pg.dsn.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(SCHEMA)
        await conn.execute(HEALTHY)
        if extra_sql:
            await conn.execute(extra_sql)
    finally:
        await conn.close()
    return dsn


def write_config(directory: Path, api_url: str, runbook: Path = RUNBOOK) -> Path:
    path = directory / "robots.toml"
    path.write_text(f"""\
runbook = "{runbook}"

[environment]
name = "robots staging"
urls = {{ api = "{api_url}" }}
secrets = {{ ops_dsn = "ROBOTS_OPS_DSN", api_key = "ROBOTS_API_KEY" }}
""")
    return path


def run_check(dsn: str, server: OtherTeamServer, directory: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`controlroom check --json` (the real CLI) on the team's config; its run and report."""
    config = write_config(directory, server.url)
    env = {**os.environ, "ROBOTS_OPS_DSN": dsn, "ROBOTS_API_KEY": API_KEY}
    result = subprocess.run([sys.executable, "-m", "controlroom", "check", "--config", str(config), "--json"],
                            capture_output=True, text=True, timeout=60, env=env, cwd=directory)
    assert "Traceback" not in result.stderr, result.stderr
    return result, json.loads(result.stdout)


@pytest.fixture
def server_for() -> Iterator[Any]:
    servers: list[OtherTeamServer] = []

    def start(dsn: str, **behaviour: Any) -> OtherTeamServer:
        server = OtherTeamServer(dsn).__enter__()
        for key, value in behaviour.items():
            setattr(server.behaviour, key, value)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


@pytest.mark.parametrize("situation", list(SITUATIONS))
async def test_check_gives_the_verdict_on_another_teams_platform(situation: str, pg: EmbeddedPostgres, server_for: Any,
                                                                 tmp_path: Path) -> None:
    extra_sql, behaviour, verdict, named = SITUATIONS[situation]
    dsn = await team_database(pg, extra_sql)
    result, report = run_check(dsn, server_for(dsn, **behaviour), tmp_path)
    checks = {check["id"]: check for check in report["checks"]}
    assert report["verdict"] == verdict, report["reasons"]
    assert result.returncode == EXIT[verdict]
    blamed = {reason.split(" — ", 1)[1].split(":", 1)[0] for reason in report["reasons"] if " — " in reason}
    assert blamed == named, report["reasons"]
    # Measured, not assumed: the evidence carries the team's own values.
    assert checks["stale-key"]["measured"]["location_id"] == "ber-1"
    if situation == "stale key accepted":
        assert "200 (accepted!)" in checks["stale-key"]["evidence"]
        assert "rotation recorded with the zombie token" in checks["stale-key"]["evidence"]
    else:
        assert checks["stale-key"]["status"] == "pass", checks["stale-key"]["evidence"]
    if situation == "mttr red":
        assert checks["outage-mttr"]["measured"]["value"] == pytest.approx((40 + 24 * 60) / 2, abs=0.2)
    if situation == "slow api":
        assert checks["api-health"]["status"] == "warn" and checks["api-health"]["measured"]["latency_ms"] > 300
    assert API_KEY not in result.stdout and dsn.split("@")[0] not in result.stdout


async def test_a_gateways_401_without_the_services_mark_is_an_error(pg: EmbeddedPostgres, server_for: Any,
                                                                    tmp_path: Path) -> None:
    """The runbook's function_marker (x-robots-keys): a 401 a proxy gives in front of the key
    service looks like a pass, but the service never judged the key: an error, not a pass."""
    dsn = await team_database(pg, "")
    _, report = run_check(dsn, server_for(dsn, gateway_refuses_swapped=True), tmp_path)
    stale = {check["id"]: check for check in report["checks"]}["stale-key"]
    assert stale["status"] == "error", stale
    assert "the gateway refused the request; the function was never reached" in stale["evidence"]
    assert stale["measured"]["http_status"] == 401 and stale["measured"]["function_reached"] is False
    assert report["verdict"] != "GO"


async def test_the_views_show_the_teams_data(pg: EmbeddedPostgres, server_for: Any, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = await team_database(pg, "UPDATE link_breakers SET phase = 'open', errors = 9 WHERE site_code = 'lis-1';"
                                  "UPDATE sites SET link_up = false, broken_since = now() - interval '5 hours' "
                                  "WHERE site_code = 'lis-1'")
    server = server_for(dsn)
    monkeypatch.setenv("ROBOTS_OPS_DSN", dsn)
    monkeypatch.setenv("ROBOTS_API_KEY", API_KEY)
    app = make_app(load_config(write_config(tmp_path, server.url)), poll_scale=0.1, check_on_start=False,
                   journal_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("b")
        assert isinstance(app.screen, BreakersScreen)
        table = app.screen.query_one(BreakerTable)
        await wait_for(lambda: table.row_count == 3, pilot, what="the team's three breakers")
        first = [str(cell) for cell in table.get_row_at(0)]
        assert first[:4] == ["robo-co", "Lisbon Docks", "OPEN", "9/8"], first  # open first, its own threshold
        assert first[4] == "—"  # the team's query has no window column
        await pilot.press("p")
        assert isinstance(app.screen, PosHealthScreen)
        health = app.screen.query_one("#health-table")
        await wait_for(lambda: health.row_count == 2, pilot, what="the team's two vendors")
        rows = {str(health.get_row_at(n)[0]): [str(c) for c in health.get_row_at(n)] for n in range(2)}
        assert rows["acme-bots"][1:5] == ["2", "2", "0", "0"] and rows["robo-co"][1:5] == ["1", "0", "1", "1"]
        assert rows["robo-co"][5:] == ["—", "—"]  # no sync or MTTR column in the team's query
        assert [str(c.label) for c in health.columns.values()][4] == "Broken>4h"


async def test_a_runbook_without_views_shows_no_breakers_or_pos_screen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = RUNBOOK.read_text()
    bare = tmp_path / "bare.toml"
    bare.write_text(text.split("[views.breakers]")[0] + "[[rollback.plans]]" + text.split("[[rollback.plans]]", 1)[1])
    monkeypatch.setenv("ROBOTS_OPS_DSN", "postgresql://nobody:pw@127.0.0.1:1/none")
    app = make_app(load_config(write_config(tmp_path, "http://127.0.0.1:1", bare)), start_polling=False,
                   check_on_start=False, journal_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("b", "p")
        assert isinstance(app.screen, ChecklistScreen)  # the keys do nothing
        shown = app.screen.query_one(KeyBar).render_keys(LAYOUTS[0]).plain
        assert shown.split(" screens")[0].rsplit("   ", 1)[-1] == "c d k R", shown
        assert not [key for key, _ in app.key_list() if key in ("b", "p")]
        commands = [command.title for command in app.get_system_commands(app.screen)]
        assert not [title for title in commands if title.startswith(("Breakers", "POS"))], commands


async def test_the_report_of_a_release_on_another_teams_platform(pg: EmbeddedPostgres, server_for: Any,
                                                                  tmp_path: Path) -> None:
    """Checked GO, deployed, the smoke test run, finished: the report's Metrics come from the
    team's own items and its fleet line from its [views.health]."""
    dsn = await team_database(pg, "")
    server = server_for(dsn)
    env = {**os.environ, "ROBOTS_OPS_DSN": dsn, "ROBOTS_API_KEY": API_KEY}
    loaded = load_config(write_config(tmp_path, server.url), environ=env)
    session = ReleaseEngine.open(loaded, write=True, journal_dir=tmp_path, environ=env)
    try:
        await session.run_checks()
        assert session.verdict_name == "GO", session.verdict.reasons
        await session.start_deploy("r42")
        outcome = await session.run_step("smoke")
        assert outcome.status == "done", outcome.summary
        session.next_phase()
        await session.measure_pos_health()
        session.finish_deploy()
        text = render_report(session.journal.records, loaded.runbook, source=session.journal.path)
    finally:
        session.close()
    lines = text.splitlines()
    assert "- **Outage MTTR**: 40 minutes ✅" in lines, text
    assert "- **Vendor link breakers**: 0 open ✅" in lines, text
    health = next(line for line in lines if line.startswith("- **POS Integration Health**"))
    assert "100% ✅ (3 of 3 locations connected" in health and "acme-bots 2/2 connected" in health, health
    zombie = next(line for line in lines if line.startswith("- **A swapped-out robot key is refused**"))
    assert "401" in zombie and "no rotation" in zombie, zombie
