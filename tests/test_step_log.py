"""The step output pane's history cap and wrapping, and a KPI's history for the detail plot."""

from __future__ import annotations

from textual.app import App, ComposeResult

from controlroom.live.history import KpiHistory
from controlroom.widgets.step_log import MAX_LINES, StepLog, wrap


def test_a_long_line_wraps_into_indented_rows_and_loses_nothing() -> None:
    line = "x" * 100 + "TAIL"
    rows = wrap(line, 40)
    assert rows[0] == "x" * 40 and all(len(row) <= 40 for row in rows)
    assert all(row.startswith("  ") for row in rows[1:])
    assert "".join(row.removeprefix("  ") if n else row for n, row in enumerate(rows)) == line
    assert wrap("short", 40) == ["short"]
    words = wrap("the quick brown fox jumps over the lazy dog " * 3, 30)
    assert all(len(row) <= 30 for row in words) and words[0] == "the quick brown fox jumps "
    assert all(not row.removeprefix("  ").startswith(" ") for row in words[1:])


class OneLog(App[None]):
    def compose(self) -> ComposeResult:
        yield StepLog("nothing yet", id="log")


async def test_past_the_cap_the_oldest_lines_go_and_the_pane_says_how_many() -> None:
    app = OneLog()
    async with app.run_test(size=(80, 12)) as pilot:
        log = app.query_one(StepLog)
        assert list(log.lines) == ["nothing yet"]
        for n in range(MAX_LINES + 1_001):
            log.add_line(f"line {n}")
        await pilot.pause()
        assert log.dropped == 1_001 and len(log.lines) == MAX_LINES
        assert log.lines[0] == "line 1001" and log.lines[-1] == f"line {MAX_LINES + 1_000}"
        assert str(log._lines[0]) == "… 1,001 earlier lines dropped"  # the first row on screen
        assert log.following and log.scroll_y == log.max_scroll_y


def test_a_kpi_history_keeps_one_hour_in_time_order() -> None:
    history = KpiHistory()
    history.merge([(1000.0, 1.0), (300.0, 0.5), (4000.0, 2.0)])
    assert history.points(4000.0) == [(1000.0, 1.0), (4000.0, 2.0)]  # 300 is more than an hour before 4000
    history.add(1000.0, 3.0)  # the same moment again: the newer answer
    history.add(2000.0, None)  # no number: nothing to plot
    assert history.points(4000.0) == [(1000.0, 3.0), (4000.0, 2.0)]
    assert history.points(4700.0) == [(4000.0, 2.0)]
