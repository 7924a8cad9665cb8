"""A KPI's readings over the last hour, with the time of each: what the KPI detail view plots.

The app adds every polled reading, and the hour a Prometheus source answers `query_range`
with when the detail opens (with the samples' own times); this keeps them in time order, one value per moment,
and drops what is older than the window. Pure: no I/O, no Textual.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from controlroom.live.polling import PollState
from controlroom.live.sources import KpiReading

HOUR_S = 3600.0


class KpiHistory:
    def __init__(self, window_s: float = HOUR_S) -> None:
        self.window_s = window_s
        self.times: list[float] = []  # wall-clock seconds, ascending
        self.values: list[float] = []

    def __len__(self) -> int:
        return len(self.times)

    def add(self, at: float, value: float | None) -> None:
        if value is None:
            return
        index = bisect_left(self.times, at)
        if index < len(self.times) and self.times[index] == at:
            self.values[index] = value  # the same moment again: the newer answer wins
        else:
            self.times.insert(index, at)
            self.values.insert(index, value)
        self._trim(self.times[-1])

    def merge(self, points: Iterable[tuple[float, float]]) -> None:
        for at, value in points:
            self.add(at, value)

    def _trim(self, newest: float) -> None:
        cut = bisect_left(self.times, newest - self.window_s)
        if cut:
            del self.times[:cut]
            del self.values[:cut]

    def points(self, now: float) -> list[tuple[float, float]]:
        """(time, value) pairs within the window before `now`, oldest first."""
        start = bisect_left(self.times, now - self.window_s)
        return list(zip(self.times[start:], self.values[start:]))


def remember_reading(histories: dict[str, KpiHistory], source: str, state: PollState[Any]) -> None:
    """A polled state of `source`: if it is a KPI's new reading, into that KPI's history. (A
    Prometheus reading's sparkline backfill has no times; the detail asks for the hour with
    them when it opens.)"""
    reading = state.value
    if not source.startswith("kpi:") or not isinstance(reading, KpiReading):
        return
    histories.setdefault(reading.kpi_id, KpiHistory()).add(reading.read_at, reading.value)
