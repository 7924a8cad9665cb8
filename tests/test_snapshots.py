"""Snapshots of every screen at 60×20, 80×24, 120×40 and 200×60, with frozen clocks and fixed
data; at every size the header keeps the verdict and the deploy clock and the key bar every
key (never cut with "…"), and from 120 columns the checklist shows every title whole.

Compared against tests/snapshots/<screen>-<size>.{svg,txt} (see tests/snapshot_support.py for
why not pytest-textual-snapshot); `CONTROLROOM_UPDATE_SNAPSHOTS=1` rewrites them — review the
.txt diff and open the .svg before committing. No sandbox, no network, no subprocess: a guard
records any attempt and the test fails on it.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, TextArea

from controlroom.config.loader import LoadedConfig
from controlroom.screens.app import ControlRoomApp, make_app
from controlroom.release.engine import ReleaseEngine
from controlroom.widgets.key_bar import KeyBar
from controlroom.widgets.kpi_row import KpiRow
from controlroom.widgets.status_bar import StatusBar

from snapshot_support import (
    ESCAPE_NAME,
    KPI_HISTORY,
    MARKUP_NAME,
    READ_AT,
    WALL_NOW,
    FrozenDatetime,
    Shot,
    WallClock,
    capture,
    check_report,
    check_results,
    compare,
    deliver_sources,
    make_config,
    monotonic,
)

SIZES = [pytest.param((60, 20), id="60x20"), pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40"),
         pytest.param((200, 60), id="200x60")]
Setup = Callable[[Any], Awaitable[None]]


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Freeze the wall clock the screens read directly, and refuse (and record) any
    connection, name lookup or subprocess."""
    monkeypatch.setattr("controlroom.screens.checklist.datetime", FrozenDatetime)
    monkeypatch.setattr("controlroom.screens.breakers.datetime", FrozenDatetime)
    seen: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def blocked(*args: Any, **kwargs: Any) -> Any:
            seen.append(f"{what} {args[1:2] or args[:1]}")
            raise OSError(f"snapshot tests must not use the network or subprocesses ({what})")
        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(asyncio, "create_subprocess_exec", refuse("create_subprocess_exec"))
    monkeypatch.setattr(asyncio, "create_subprocess_shell", refuse("create_subprocess_shell"))
    monkeypatch.setattr(subprocess, "Popen", refuse("Popen"))

    async def no_git(self: ReleaseEngine, version: str = "") -> str:
        return "0f3c9a1e"

    monkeypatch.setattr(ReleaseEngine, "_git_sha", no_git)
    yield seen
    assert seen == [], f"something tried to reach out: {seen}"


def build(tmp_path: Path, *, write: bool = False, name: str = "staging", production: bool = False,
          wall: WallClock | None = None) -> ControlRoomApp:
    config = make_config(tmp_path, name=name, production=production)
    return make_app(config, write=write, clock=monotonic, now=wall or WallClock(), start_polling=False,
                    journal_dir=tmp_path / "journal", check_on_start=False, offer_resume=False)


async def feed_checks(app: ControlRoomApp, monkeypatch: pytest.MonkeyPatch, results: dict[str, Any]) -> None:
    """The session runs its checklist, which answers with a fixed report (journaled, verdict
    decided, exactly as a real run), and the screen follows."""
    report = check_report(app.config, results)

    async def fixed_run_checklist(loaded: LoadedConfig, attested: Any = (), *, environ: Any = None,
                                  on_result: Any = None) -> Any:
        return report

    monkeypatch.setattr("controlroom.release.engine.run_checklist", fixed_run_checklist)
    assert app.session is not None
    await app.session.run_checks()
    app.session_changed()


async def shoot(app: ControlRoomApp, size: tuple[int, int], setup: Setup, press: tuple[str, ...] = ()) -> Shot:
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await setup(pilot)
        # The once-a-second refresh (ages, header's stale count), run here rather than left to
        # the timer; with frozen clocks it is idempotent, so a real tick changes nothing. Once
        # before the keys too: a modal on top stops the screen below from being ticked.
        app._tick()
        await pilot.pause()
        await pilot.press(*press)
        await pilot.pause()
        for field in [*app.screen.query(Input), *app.screen.query(TextArea)]:
            field.cursor_blink = False
        app._tick()
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        bars = app.screen.query(StatusBar), app.screen.query(KeyBar)
        if bars[0] and bars[1]:  # the header and the key bar as drawn, for assert_essentials
            SHOWN[app] = (str(bars[0].first().render()), bars[1].first().shown.plain)
        return capture(app)


SHOWN: dict[ControlRoomApp, tuple[str, str]] = {}  # app -> (header, key bar) at its snapshot


def assert_essentials(app: ControlRoomApp, shot: Shot, verdict: str, clock: str) -> None:
    """What an operator needs at any size: the verdict and the deploy clock in the header (the
    header drops less important parts first), and the key bar whole, quit included."""
    header, keys = SHOWN.pop(app)
    assert verdict in header and clock in header, header
    assert header in shot.text
    assert "q quit" in keys and "? help" in keys and "…" not in keys, keys
    for line in keys.splitlines():
        assert line.rstrip() in shot.text and len(line) <= app.size.width, (line, shot.text)


def name_of(screen: str, size: tuple[int, int]) -> str:
    return f"{screen}-{size[0]}x{size[1]}"


# -- the screens -------------------------------------------------------------------------

NO_GO_OVERRIDES = {
    "cors": ("fail", "preflight from https://evil.example: Access-Control-Allow-Origin: * (wildcard)"),
    "fudo-rotation": ("warn", "97.1 % of 1,190 rotations in the last hour (< 98 %)"),
    "rate-limits": ("error", "timed out after 10 s: no answer from https://example.supabase.co"),
}


@pytest.mark.parametrize("size", SIZES)
async def test_checklist(size: tuple[int, int], tmp_path: Path, attempts: list[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    app = build(tmp_path)

    async def setup(pilot: Any) -> None:
        await deliver_sources(pilot, app.config)
        await feed_checks(app, monkeypatch, check_results(app.config, NO_GO_OVERRIDES, attested=False))

    shot = await shoot(app, size, setup)
    assert app.session is not None and app.session.verdict_name == "NO-GO"
    assert "NO-GO" in shot.text and "CORS Configuration" in shot.text
    assert_essentials(app, shot, "NO-GO", "deploy —")
    longest = "Secret Scanning: no secrets in code, environment variables secure"  # the runbook's longest title
    if size[0] >= 120:
        assert longest in shot.text
    # The selected item (the first) in full under the table, title and evidence, at any size.
    assert "Token Zombie Test (token-zombie): revoked token answered 401" in shot.text.replace("\n ", " ")
    compare(name_of("checklist", size), shot, tmp_path / "failed")


@pytest.mark.parametrize("size", SIZES)
async def test_help(size: tuple[int, int], tmp_path: Path, attempts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    app = build(tmp_path)

    async def setup(pilot: Any) -> None:
        await deliver_sources(pilot, app.config)
        await feed_checks(app, monkeypatch, check_results(app.config, NO_GO_OVERRIDES, attested=False))

    shot = await shoot(app, size, setup, press=("question_mark",))
    assert "Help — Checklist" in shot.text
    compare(name_of("help", size), shot, tmp_path / "failed")


@pytest.mark.parametrize("size", SIZES)
async def test_deploy(size: tuple[int, int], tmp_path: Path, attempts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Production, WRITE mode, GO; phase 1 done, phase 2 overrunning (amber), one step skipped."""
    wall = WallClock(WALL_NOW - timedelta(minutes=10, seconds=30))
    app = build(tmp_path, write=True, name="production-ar", production=True, wall=wall)

    def at(minutes: float) -> None:
        wall.at = WALL_NOW - timedelta(minutes=10, seconds=30) + timedelta(minutes=minutes)

    async def setup(pilot: Any) -> None:
        await pilot.press("d")
        await deliver_sources(pilot, app.config)
        await feed_checks(app, monkeypatch, check_results(app.config))
        session = app.session
        assert session is not None and session.verdict_name == "GO"
        await session.start_deploy("v2.15.0")
        for minutes, step in ((1.2, "env-health"), (2.1, "breaker-status"), (3.6, "rotation-capability")):
            at(minutes)
            session.mark_done(step)
        at(4.2)
        session.next_phase()
        at(6.0)
        session.mark_done("deploy-code")
        at(7.25)
        session.skip_step("verify-edge-functions", "checked by hand in the Supabase dashboard")
        wall.at = WALL_NOW
        app.session_changed()
        # At 60x20 the step list scrolls, and where it stopped depends on how far the cursor
        # travelled while the steps were journaled (timing): the list is taken back to its top,
        # where the cursor (the first step) is, so that the picture does not depend on that.
        await pilot.pause()
        app.screen.query_one("#deploy-steps").scroll_home(animate=False, immediate=True)

    shot = await shoot(app, size, setup)
    assert "PRODUCTION" in shot.text and "v2.15.0" in shot.text
    assert_essentials(app, shot, "GO", "deploy 10:30/15:00")
    compare(name_of("deploy", size), shot, tmp_path / "failed")


@pytest.mark.parametrize("size", SIZES)
async def test_kpis(size: tuple[int, int], tmp_path: Path, attempts: list[str]) -> None:
    app = build(tmp_path)

    async def setup(pilot: Any) -> None:
        await pilot.press("k")
        await deliver_sources(pilot, app.config)
        for row in app.screen.query(KpiRow):  # every round landed: the sparklines are complete
            assert len(row.history) == len(KPI_HISTORY[row.kpi.id])

    shot = await shoot(app, size, setup)
    assert "STALE" in shot.text and "Connection refused" in shot.text
    assert_essentials(app, shot, "verdict —", "deploy —")
    compare(name_of("kpis", size), shot, tmp_path / "failed")


@pytest.mark.parametrize("size", SIZES)
async def test_kpi_detail(size: tuple[int, int], tmp_path: Path, attempts: list[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """API latency's detail: its readings, the green and red lines, the deployment's start
    20 minutes ago marked; the value, thresholds and age in words."""
    monkeypatch.setattr("controlroom.screens.kpi_detail.wall_clock", lambda: READ_AT)
    wall = WallClock(WALL_NOW - timedelta(minutes=20))
    app = build(tmp_path, write=True, wall=wall)

    async def setup(pilot: Any) -> None:
        await pilot.press("k")
        await deliver_sources(pilot, app.config)
        await feed_checks(app, monkeypatch, check_results(app.config))
        assert app.session is not None
        await app.session.start_deploy("v2.15.0")
        wall.at = WALL_NOW
        app.session_changed()
        await pilot.press("down", "enter")
        await pilot.pause()

    shot = await shoot(app, size, setup)
    assert "deploy start" in shot.text and "green < 500" in shot.text
    compare(name_of("kpi-detail", size), shot, tmp_path / "failed")


@pytest.mark.parametrize("size", SIZES)
async def test_breakers(size: tuple[int, int], tmp_path: Path, attempts: list[str]) -> None:
    """Location names from the data render literally: Rich markup stays text, and an ANSI
    escape is shown as `\\x1b`, never sent to the terminal."""
    app = build(tmp_path)

    async def setup(pilot: Any) -> None:
        await pilot.press("b")
        await deliver_sources(pilot, app.config)

    shot = await shoot(app, size, setup)
    assert MARKUP_NAME in shot.text
    assert ESCAPE_NAME.replace("\x1b", "\\x1b") in shot.text
    assert "\x1b" not in shot.text and "\x1b" not in shot.svg
    assert "[red]x[/red]" in shot.svg.replace("&#160;", " ")
    assert_essentials(app, shot, "verdict —", "deploy —")
    if size[0] >= 120:  # the location column takes the room there is
        assert "Parrilla Don Julio — Palermo Soho (sucursal 2)" in shot.text
    compare(name_of("breakers", size), shot, tmp_path / "failed")


@pytest.mark.parametrize("size", SIZES)
async def test_pos_health(size: tuple[int, int], tmp_path: Path, attempts: list[str]) -> None:
    app = build(tmp_path)

    async def setup(pilot: Any) -> None:
        await pilot.press("p")
        await deliver_sources(pilot, app.config)

    shot = await shoot(app, size, setup)
    assert "maxirest" in shot.text and "88.4%" in shot.text
    assert_essentials(app, shot, "verdict —", "deploy —")
    compare(name_of("pos", size), shot, tmp_path / "failed")


@pytest.mark.parametrize("size", SIZES)
async def test_rollback(size: tuple[int, int], tmp_path: Path, attempts: list[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An emergency rollback 3:10 in, its first step done, escalation at L1."""
    wall = WallClock(WALL_NOW - timedelta(minutes=9))
    app = build(tmp_path, write=True, wall=wall)

    async def trigger_sent(self: Any, plan: Any, values: Any, reason: str = "") -> list[str]:
        return []  # the incident's trigger as the rollback starts: no network here

    monkeypatch.setattr("controlroom.release.incident.Incident.trigger", trigger_sent)

    async def setup(pilot: Any) -> None:
        await pilot.press("R")
        await deliver_sources(pilot, app.config)
        await feed_checks(app, monkeypatch, check_results(app.config))
        session = app.session
        assert session is not None
        await session.start_deploy("v2.15.0")
        for seconds, step in ((60, "env-health"), (120, "breaker-status"), (180, "rotation-capability")):
            wall.at = WALL_NOW - timedelta(minutes=9) + timedelta(seconds=seconds)
            session.mark_done(step)
        wall.at = WALL_NOW - timedelta(minutes=5, seconds=30)
        session.next_phase()
        wall.at = WALL_NOW - timedelta(minutes=4)
        session.mark_done("deploy-code")
        wall.at = WALL_NOW - timedelta(minutes=3, seconds=10)
        await session.start_rollback("emergency", "Smoke tests: Fudo answers 502 after v2.15.0", "fudo", version="v2.14.3")
        wall.at = WALL_NOW - timedelta(minutes=1, seconds=45)
        session.mark_rollback_step_done("switch-version")
        wall.at = WALL_NOW
        app.session_changed()

    shot = await shoot(app, size, setup)
    assert "v2.14.3" in shot.text and "ESCALATION" in shot.text
    assert_essentials(app, shot, "GO", "deploy 9:00/15:00")
    compare(name_of("rollback", size), shot, tmp_path / "failed")


async def test_layout_follows_a_resize(tmp_path: Path, attempts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal resized while the control room runs (tmux resize-window): the checklist's
    columns, the header and the key bar follow, both ways."""
    app = build(tmp_path)
    longest = "Secret Scanning: no secrets in code, environment variables secure"
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await deliver_sources(pilot, app.config)
        await feed_checks(app, monkeypatch, check_results(app.config, NO_GO_OVERRIDES, attested=False))
        await pilot.pause()
        assert longest not in capture(app).text
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        await pilot.pause()
        assert app.has_class("-wide") and longest in capture(app).text
        await pilot.resize_terminal(60, 20)
        await pilot.pause()
        await pilot.pause()
        text = capture(app).text
        keys = app.screen.query_one(KeyBar).shown.plain
        assert app.has_class("-narrow") and len(keys.splitlines()) == 2 and "q quit" in text, (keys, text)
        header = str(app.screen.query_one(StatusBar).render())
        assert "NO-GO" in header and "deploy —" in header and header in text
        assert "Token Zombie Test" in text
