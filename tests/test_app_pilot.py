"""The control room driven by keyboard at 80×24 against a real sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from controlroom.screens.app import make_app
from controlroom.config.loader import load_config
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.breakers import BreakersScreen
from controlroom.screens.checklist import ChecklistScreen
from controlroom.screens.deploy import DeployScreen
from controlroom.screens.help import HelpScreen
from controlroom.screens.kpis import KpisScreen
from controlroom.screens.pos_health import PosHealthScreen
from controlroom.widgets.breaker_table import BreakerTable
from controlroom.widgets.kpi_row import KpiRow
from pilot_support import wait_for

SCALE = 0.1  # breakers every 0.5 s, KPIs every 0.5–6 s


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=60, simulate=False) as running:
        yield running




async def test_every_screen_by_keyboard_and_breaker_appears(sandbox: Sandbox, tmp_path) -> None:
    app = make_app(load_config(sandbox.config_path), poll_scale=SCALE, check_on_start=False, journal_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, ChecklistScreen)
        await pilot.press("d")
        assert isinstance(app.screen, DeployScreen)
        await pilot.press("k")
        assert isinstance(app.screen, KpisScreen)
        await wait_for(lambda: all(r.state is not None for r in app.screen.query(KpiRow)), pilot)
        await pilot.press("b")
        assert isinstance(app.screen, BreakersScreen)
        await wait_for(lambda: app.screen.query_one(BreakerTable).row_count > 0, pilot)
        await pilot.press("p")
        assert isinstance(app.screen, PosHealthScreen)
        await wait_for(lambda: app.screen.query_one("#health-table").row_count == 3, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, PosHealthScreen)
        await pilot.press("k")
        assert isinstance(app.screen, KpisScreen)

        # A breaker opened in the database shows within one poll interval (0.5 s here).
        await pilot.press("b")
        target = "[red]x[/red] \x1b[31mEvil"
        conn = await asyncpg.connect(sandbox.dsn)
        try:
            location = await conn.fetchval("SELECT location_id FROM rotation_cb WHERE state = 'closed' ORDER BY location_id DESC LIMIT 1")
            await conn.execute("UPDATE pos_integrations_location SET location_name = $2 WHERE location_id = $1", location, target)
            await conn.execute("UPDATE rotation_cb SET state = 'open', failure_count = 11, opened_at = now(), changed_at = now() WHERE location_id = $1", location)
        finally:
            await conn.close()
        table = app.screen.query_one(BreakerTable)
        await wait_for(lambda: table.shown_ids[:1] == [location], pilot, timeout=2.0)
        row = table.get_row(location)
        assert row[2].plain == "OPEN" and row[3].plain == "11/10"
        # Data text is literal: markup not interpreted, escape shown as text.
        assert row[1].plain == "[red]x[/red] \\x1b[31mEvil"
        svg = app.export_screenshot()
        assert "[red]x[/red]" in svg.replace("&#160;", " ") and "\x1b" not in svg

        # Filter with / and clear with esc.
        await pilot.press("slash", *"evil", "enter")
        await wait_for(lambda: table.shown_ids == [location], pilot)
        await pilot.press("escape")
        await wait_for(lambda: len(table.shown_ids) == 60, pilot)
        await pilot.press("q")
    assert app.return_code in (0, None)


async def test_dead_http_marks_prometheus_kpis_stale_and_keys_work(sandbox: Sandbox, tmp_path) -> None:
    app = make_app(load_config(sandbox.config_path), poll_scale=SCALE, check_on_start=False, journal_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("k")
        latency = app.screen.query_one("#kpi-api-latency-p95", KpiRow)
        await wait_for(lambda: latency.state is not None and latency.state.polls > 0, pilot)
        # The sparkline is full from the first poll: backfilled with query_range (a restart
        # does not empty it); a Postgres KPI starts from its first reading.
        assert len(latency.history) == 60
        assert len(app.screen.query_one("#kpi-mttr", KpiRow).history) <= 1
        assert sandbox.http is not None
        await asyncio.to_thread(sandbox.http.stop)
        await wait_for(lambda: latency.state is not None and latency.state.error is not None, pilot, timeout=5)
        await pilot.pause(1.1)  # one tick of the age clock
        assert latency.has_class("-error")
        assert app.poll_states["kpi:api-latency-p95"].stale(app.clock())
        assert not app.poll_states["kpi:mttr"].error  # Postgres-backed KPIs unaffected
        began = asyncio.get_running_loop().time()
        await pilot.press("b")
        assert isinstance(app.screen, BreakersScreen)
        await pilot.press("k")
        assert isinstance(app.screen, KpisScreen)
        assert asyncio.get_running_loop().time() - began < 1.0
        await pilot.press("ctrl+c")


async def test_each_check_row_shows_its_result_as_it_lands(tmp_path) -> None:  # noqa: ANN001
    """The probes start once the first frame is up, and a row shows its result as soon as its
    probe answers: the quick item reads PASS while the slow one still reads RUN and the verdict
    waits for it (an API held until the test lets it answer, over a real socket)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from textual.widgets import DataTable

    from probe_support import make_loaded, serve

    release = asyncio.Event()

    async def quick(request):  # noqa: ANN001, ANN202
        return JSONResponse({"status": "ok"})

    async def slow(request):  # noqa: ANN001, ANN202
        await release.wait()
        return JSONResponse({"status": "ok"})

    async with serve(Starlette(routes=[Route("/quick", quick), Route("/slow", slow)])) as url:
        item = {"title": "HTTP", "kind": "http", "timeout_s": 20}
        loaded = make_loaded([{**item, "id": "slow", "url": "{urls.api}/slow"},
                              {**item, "id": "quick", "url": "{urls.api}/quick"}], urls={"api": url}, config_dir=tmp_path)
        app = make_app(loaded, start_polling=False, journal_dir=tmp_path)
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                table = app.screen.query_one("#checklist-table", DataTable)

                def status(item_id: str) -> str:
                    return str(table.get_cell(item_id, "status"))

                await wait_for(lambda: status("quick") == "PASS", pilot, what="the quick check's row")
                assert status("slow") == "RUN" and app.session is not None and app.session.verdict is None
                release.set()
                await wait_for(lambda: status("slow") == "PASS", pilot, what="the slow check's row")
                await wait_for(lambda: app.session.verdict is not None, pilot, what="the verdict")
        finally:
            release.set()
