"""KPI bars scaled to the KPI's thresholds: the height says where a reading stands against
green and red, whatever the KPI's direction, and readings that stay within one bar height
draw the same line (so they cost no repaint)."""

from __future__ import annotations

from controlroom.config.loader import load_default_runbook
from controlroom.widgets.threshold_sparkline import BARS, buckets, height, threshold_bars

KPIS = {kpi.id: kpi for kpi in load_default_runbook().kpis}


def test_lower_is_better_runs_from_zero_through_green_to_red() -> None:
    error_rate = KPIS["error-rate"]  # green < 0.1 %, red > 1 %
    assert [height(error_rate, v) for v in (0.0, 0.05, 0.1, 0.5, 1.0, 7.0)] == [0, 2, 4, 5, 7, 7]
    latency = KPIS["api-latency-p95"]  # green < 500 ms, red > 1000 ms
    assert [height(latency, v) for v in (0, 140, 500, 750, 1000)] == [0, 1, 4, 5, 7]


def test_higher_is_better_is_the_same_picture_mirrored() -> None:
    sync = KPIS["pos-sync-success"]  # green > 95 %, red < 90 %
    assert [height(sync, v) for v in (100.0, 97.5, 95.0, 92.5, 90.0, 40.0)] == [0, 2, 4, 5, 7, 7]


def test_a_met_or_not_kpi_is_the_lowest_bar_or_the_highest() -> None:
    incidents = KPIS["security-incidents"]  # green == 0, red >= 1
    assert (height(incidents, 0), height(incidents, 1), height(incidents, 3)) == (0, 7, 7)


def test_each_cell_is_its_buckets_worst_reading_coloured_by_its_zone() -> None:
    error_rate = KPIS["error-rate"]
    line = threshold_bars(error_rate, [0.0] * 30 + [2.0] + [0.0] * 29, 16)
    assert len(line.plain) == 16
    assert line.plain.count(BARS[-1]) == 1 and line.plain.replace(BARS[-1], "") == BARS[0] * 15
    red = [str(span.style) for span in line.spans if line.plain[span.start] == BARS[-1]]
    assert red == ["bold red"]
    assert {str(span.style) for span in line.spans if line.plain[span.start] == BARS[0]} == {"green"}


def test_readings_within_one_bar_draw_the_same_line() -> None:
    latency = KPIS["api-latency-p95"]
    assert threshold_bars(latency, [139.9, 140.1] * 30, 16).plain == threshold_bars(latency, [140.0] * 60, 16).plain


def test_the_line_grows_from_the_left_until_it_is_full() -> None:
    assert [len(group) for group in buckets([1.0] * 5, 16)] == [1] * 5
    full = buckets(list(range(60)), 16)
    assert len(full) == 16 and {len(group) for group in full} == {3, 4}
    assert [value for group in full for value in group] == list(range(60))  # every reading, in order
    assert buckets([], 16) == []
