"""A KPI's readings over the last hour, with the time of each: what the KPI detail view plots.

The app adds every polled reading (and a Prometheus source's backfill, and the hour it asks
`query_range` for when the detail opens); this keeps them in time order, one value per moment,
and drops what is older than the window. Pure: no I/O, no Textual.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from typing import Any

from controlroom.config.models import Kpi
from controlroom.live.polling import PollState
from controlroom.live.sources import KpiReading

HOUR_S = 3600.0


class KpiHistory:
    def __init__(self, window_s: float = HOUR_S) -> None:
        self.window_s = window_s
        self.times: list[float] = []  # wall-clock seconds, ascending
        self.values: list[float] = []
        self.backfilled = False  # a range covering the window was merged in

    def __len__(self) -> int:
        return len(self.times)

    def add(self, at: float, value: float | None) -> None:
        if value is None:
            return
        index = bisect_left(self.times, at)
        if index < len(self.times) and self.times[index] == at:
            self.values[index] = value  # the same moment again: the newer answer wins
        else:
            insort(self.times, at)
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


def remember_reading(histories: dict[str, KpiHistory], kpis: Sequence[Kpi], source: str, state: PollState[Any]) -> None:
    """A polled state of `source`: if it is a KPI's new reading, into that KPI's history (its
    backfill too, one poll_s apart before it)."""
    reading = state.value
    if not source.startswith("kpi:") or not isinstance(reading, KpiReading):
        return
    history = histories.setdefault(reading.kpi_id, KpiHistory())
    if reading.history and not history.backfilled:
        kpi = next((k for k in kpis if k.id == reading.kpi_id), None)
        step = kpi.poll_s if kpi is not None else 0.0
        count = len(reading.history)
        history.merge((reading.read_at - (count - i) * step, value) for i, value in enumerate(reading.history))
        history.backfilled = True
    history.add(reading.read_at, reading.value)
