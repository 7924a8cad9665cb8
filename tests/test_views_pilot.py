"""Issue 14 at 80×24 against a real sandbox: the KPI detail (a real plot of the last hour,
its thresholds and the deployment's marks), `/` on the checklist, deploy steps, KPIs and POS
health ("N matching of M", esc clears), and the step output's scroll-back and wrapping."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from textual.widgets import DataTable

from controlroom.config.loader import load_config
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app
from controlroom.screens.checklist import ChecklistScreen
from controlroom.screens.deploy import DeployScreen
from controlroom.screens.dialogs import ReasonDialog
from controlroom.screens.kpi_detail import KpiDetailScreen
from controlroom.screens.kpis import KpisScreen
from controlroom.screens.pos_health import PosHealthScreen
from controlroom.widgets.kpi_plot import KpiPlot
from controlroom.widgets.kpi_row import KpiRow
from controlroom.widgets.step_log import StepLog
from pilot_support import wait_for
from snapshot_support import capture

SCALE = 0.1


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=40, simulate=False) as running:
        yield running


def screen_text(app) -> str:  # type: ignore[no-untyped-def]
    return capture(app).text


async def start_deploy(app, pilot) -> None:  # type: ignore[no-untyped-def]
    await pilot.press("d")
    await pilot.press("s", *"v2.15.0", "enter")
    assert isinstance(app.screen, ReasonDialog)  # not GO: an override with a reason
    await pilot.press(*"lead approved the hotfix", "enter")
    await wait_for(lambda: app.session.state.in_progress, pilot, what="the deployment started")


async def test_enter_on_a_kpi_opens_its_plot_with_thresholds_and_the_deploy_marks(sandbox: Sandbox, tmp_path: Path) -> None:
    app = make_app(load_config(sandbox.config_path), write=True, poll_scale=SCALE, check_on_start=False,
                   journal_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        await start_deploy(app, pilot)
        await pilot.press("k")
        kpis = app.screen
        assert isinstance(kpis, KpisScreen)
        await wait_for(lambda: all(r.state is not None for r in kpis.query(KpiRow)), pilot, what="every KPI read")
        assert kpis.selected_row().kpi.id == "rotation-success"  # the first, selected from the start
        await pilot.press("down")
        assert kpis.selected_row().kpi.id == "api-latency-p95" and kpis.selected_row().has_class("-selected")

        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, KpiDetailScreen) and detail.kpi.id == "api-latency-p95"
        plot = detail.query_one(KpiPlot)
        # A Prometheus KPI: the app reads the hour with query_range (a worker, a deadline).
        await wait_for(lambda: "Prometheus" in detail.history_note, pilot, what="the hour read")
        drawn = plot.drawn
        assert drawn.thresholds == {"green": 500.0, "red": 1000.0}
        assert len(drawn.xs) > 10 and all(-60 <= x <= 0 for x in drawn.xs)
        assert drawn.y_range[0] < 500 and drawn.y_range[1] > 1000  # both lines inside the plot
        assert list(drawn.marks) == ["deploy start"] and -1 < drawn.marks["deploy start"] <= 0
        text = screen_text(app)
        assert "green < 500" in text and "red > 1000" in text and "minutes before now" in text
        assert "deploy start" in text  # the mark's label, and in words under the plot
        print(f"\nKPI detail: {len(drawn.xs)} readings plotted over the last hour")

        # The finish is a second mark.
        app.session.finish_deploy()
        detail.redraw()
        assert list(plot.drawn.marks) == ["deploy start", "deploy finish"]

        await pilot.press("escape")
        assert app.screen is kpis

        # An SQL KPI: only what was polled since start.
        await pilot.press("up", "enter")
        detail = app.screen
        assert isinstance(detail, KpiDetailScreen) and detail.kpi.id == "rotation-success"
        await wait_for(lambda: "polled since" in detail.history_note, pilot)
        assert detail.query_one(KpiPlot).drawn.thresholds == {"green": 98.0, "red": 95.0}
        assert len(detail.query_one(KpiPlot).drawn.xs) >= 1
        await pilot.press("escape")
        assert app.screen is kpis

        # / on the KPIs: by title or id.
        await pilot.press("slash", *"error", "enter")
        shown = [row.kpi.id for row in kpis.shown_rows()]
        assert shown == ["error-rate"]
        total = len(app.config.runbook.kpis)
        assert f"1 matching of {total} KPIs" in screen_text(app)
        await pilot.press("enter")
        assert isinstance(app.screen, KpiDetailScreen) and app.screen.kpi.id == "error-rate"
        await pilot.press("escape", "escape")
        assert len(kpis.shown_rows()) == total and "matching of" not in screen_text(app)


async def test_slash_filters_the_checklist_deploy_steps_and_pos_health(sandbox: Sandbox, tmp_path: Path) -> None:
    app = make_app(load_config(sandbox.config_path), poll_scale=SCALE, check_on_start=False, journal_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ChecklistScreen)
        await wait_for(lambda: app.session is not None, pilot)
        table = screen.query_one("#checklist-table", DataTable)
        every = table.row_count
        items = sum(1 for _ in app.config.runbook.items())
        await pilot.press("slash", *"token", "enter")
        keys = [table.coordinate_to_cell_key((row, 0)).row_key.value for row in range(table.row_count)]
        assert "token-zombie" in keys and len(keys) < every
        assert all(key.startswith("section:") or "token" in key
                   or "token" in next(i.title for _, i in app.config.runbook.items() if i.id == key).lower()
                   for key in keys)
        matched = sum(1 for key in keys if not key.startswith("section:"))
        assert f"{matched} matching of {items} items" in screen_text(app)
        assert screen.selected_item() is not None  # the cursor is on a row shown
        await pilot.press("escape")
        assert table.row_count == every and "matching of" not in screen_text(app)

        # A status filters too; a cell written while its row is filtered out shows when it is back.
        await pilot.press("slash", *"not run", "enter")
        assert table.row_count == every  # nothing run yet: every item "not run"
        await pilot.press("escape")

        await pilot.press("d")
        deploy = app.screen
        assert isinstance(deploy, DeployScreen)
        steps = deploy.query_one("#deploy-steps", DataTable)
        all_steps = steps.row_count
        await pilot.press("slash", *"smoke", "enter")
        assert [steps.coordinate_to_cell_key((r, 0)).row_key.value for r in range(steps.row_count)] == [
            "phase:deploy", "smoke-tests"]
        assert "1 matching of" in screen_text(app)
        await pilot.press("escape")
        assert steps.row_count == all_steps

        await pilot.press("p")
        health = app.screen
        assert isinstance(health, PosHealthScreen)
        providers = health.query_one("#health-table", DataTable)
        await wait_for(lambda: providers.row_count == 3, pilot)
        await pilot.press("slash", *"fudo", "enter")
        assert providers.row_count == 1 and "1 matching of 3 providers" in screen_text(app)
        await pilot.pause(0.6)  # a poll or more while filtered: still one row
        assert providers.row_count == 1
        await pilot.press("escape")
        assert providers.row_count == 3


LONG_ARGUMENT = "--an-argument-long-enough-to-need-a-second-row-of-the-pane-" + "x" * 40 + "-DRY-END"


def runbook_with_a_chatty_step(tmp_path: Path, config_path: Path) -> Path:
    """The sandbox's config with a runbook whose first step prints 200 numbered lines and one
    line of 200 characters ending in "TAIL-END"."""
    default = Path(__file__).resolve().parent.parent / "controlroom" / "config" / "default_runbook.toml"
    script = "for i in range(200): print(f'line {i:03}')\nprint('x' * 192 + 'TAIL-END')\n"
    (tmp_path / "chatty.py").write_text(script)
    step = ('[[deployment.phases.steps]]\nid = "chatty"\ntitle = "Print a lot"\n'
            f'action = {{ kind = "command", run = "{sys.executable} {tmp_path / "chatty.py"} {LONG_ARGUMENT}", '
            'modifying = false }\n\n')
    text = default.read_text()
    first = text.index('[[deployment.phases.steps]]\nid = "env-health"')
    (tmp_path / "runbook.toml").write_text(text[:first] + step + text[first:])
    config = config_path.read_text()
    config = re.sub(r'^runbook = .*$', f'runbook = "{tmp_path / "runbook.toml"}"', config, count=1, flags=re.M)
    env = config_path.parent / "sandbox.env"
    config = config.replace('env_file = "sandbox.env"', f'env_file = "{env}"')
    path = tmp_path / "controlroom.toml"
    path.write_text(config)
    return path


async def test_step_output_scrolls_back_follows_and_wraps(sandbox: Sandbox, tmp_path: Path) -> None:
    config = load_config(runbook_with_a_chatty_step(tmp_path, Path(sandbox.config_path)))
    app = make_app(config, write=True, start_polling=False, check_on_start=False, journal_dir=tmp_path / "journal")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        await start_deploy(app, pilot)
        deploy = app.screen
        assert isinstance(deploy, DeployScreen) and deploy.selected_step() == "chatty"
        log = deploy.query_one(StepLog)
        await pilot.press("x")
        await wait_for(lambda: any("TAIL-END" in line for line in log.lines), pilot, what="the step's output")
        await pilot.pause(0.2)
        assert sum(1 for line in log.lines if line.startswith("line ")) == 200  # every line kept
        assert log.following and log.scroll_y == log.max_scroll_y
        # The long line wraps: its tail is on screen at 80 columns, not cut off.
        assert "TAIL-END" in screen_text(app)

        await pilot.press(*["shift+pageup"] * 10)  # a page is the pane's 5 rows
        await pilot.pause(0.1)
        assert not log.following and log.scroll_y < log.max_scroll_y
        text = screen_text(app)
        assert "TAIL-END" not in text
        earlier = [int(n) for n in re.findall(r"line (\d{3})", text)]
        assert earlier and max(earlier) < 160  # earlier lines are shown

        # New output does not pull the pane down while reading back…
        at = log.scroll_y
        deploy.log_line("one more line")
        await pilot.pause(0.1)
        assert log.scroll_y == at
        # …G goes to the end and follows again.
        await pilot.press("G")
        await pilot.pause(0.1)
        assert log.following and log.scroll_y == log.max_scroll_y and "one more line" in screen_text(app)
        deploy.log_line("and another")
        await pilot.pause(0.1)
        assert log.scroll_y == log.max_scroll_y and "and another" in screen_text(app)

        # PgUp / PgDn scroll the pane when it has the focus; on the table they move its cursor.
        log.focus()
        await pilot.press("pageup")
        await pilot.pause(0.1)
        assert log.scroll_y < log.max_scroll_y and not log.following
        await pilot.press("pagedown", "pagedown", "pagedown")
        await pilot.pause(0.1)
        assert log.scroll_y == log.max_scroll_y and log.following

        # A dry run's command line wraps too: its end is on screen, not cut at 80 columns.
        deploy.query_one("#deploy-steps", DataTable).focus()
        deploy._select_row("chatty")
        await pilot.press("t")
        await wait_for(lambda: any("DRY-END" in line for line in log.lines), pilot, what="the dry run")
        await pilot.pause(0.1)
        command = next(line for line in log.lines if "DRY-END" in line)
        assert len(command) > 80
        # On screen: continued on rows that start with two spaces, its end among them.
        assert "DRY-END" in re.sub(r"\n  ", "", screen_text(app))
