"""The circuit-breaker table, diffed in place.

DataTable takes ~1.4 s to render 10,000 fresh rows and as long again to clear and re-add
them (DESIGN.md §6). So this table (1) shows what matters: open and half-open first, then the
rest, capped at `max_rows` (a filter reaches any location), and (2) never rebuilds: each
refresh removes rows that left the view, adds rows that entered it, calls `update_cell` only
for cells whose text changed — all inside one `batch_update()` — and re-sorts by the view's
order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual.widgets import DataTable

from controlroom.live.polling import format_age
from controlroom.live.sources import BreakerRow, plain

STATE_RANK = {"open": 0, "half_open": 1, "closed": 2}
STATE_STYLE = {"open": "bold white on red", "half_open": "bold black on yellow", "closed": "green"}
STATE_LABEL = {"open": "OPEN", "half_open": "HALF-OPEN", "closed": "closed"}
COLUMNS = (("provider", "Provider", 9), ("location", "Location", 28), ("state", "State", 9),
           ("failures", "Fails", 6), ("window", "Window", 6), ("since", "Since", 8))
SORTS = ("state", "failures", "since", "provider", "location")


class KeyedText(Text):
    """A cell that knows its row, so the table can be ordered by the view's ranking."""

    row_id: str = ""


@dataclass(frozen=True)
class View:
    rows: tuple[BreakerRow, ...]  # what the table should show, in order
    matched: int  # rows matching the filter, before the cap
    total: int


def select(rows: Iterable[BreakerRow], *, filter_text: str = "", sort: str = "state", max_rows: int = 500) -> View:
    """Filter (case-insensitive substring of provider, location name or id, state), sort
    (problems first always, then by `sort`) and cap. Pure: the benchmark and tests use it."""
    all_rows = rows if isinstance(rows, tuple) else tuple(rows)
    needle = filter_text.strip().lower()
    if needle:
        matched = [r for r in all_rows if needle in r.location_name.lower() or needle in r.location_id.lower()
                   or needle in r.provider.lower() or needle in STATE_LABEL.get(r.state, r.state).lower()]
    else:
        matched = list(all_rows)
    if sort == "failures":
        key = lambda r: (STATE_RANK.get(r.state, 3), -(r.failure_count or 0), r.provider, r.location_name)  # noqa: E731
    elif sort == "since":
        key = lambda r: (STATE_RANK.get(r.state, 3), -_timestamp(r), r.location_name)  # noqa: E731
    elif sort == "provider":
        key = lambda r: (STATE_RANK.get(r.state, 3), r.provider, r.location_name)  # noqa: E731
    elif sort == "location":
        key = lambda r: (STATE_RANK.get(r.state, 3), r.location_name, r.location_id)  # noqa: E731
    else:
        key = lambda r: (STATE_RANK.get(r.state, 3), -(r.failure_count or 0), r.provider, r.location_name)  # noqa: E731
    if len(matched) > max_rows:
        # Only the first max_rows are shown: a partial selection keeps 10k-row sorts cheap.
        import heapq
        chosen = heapq.nsmallest(max_rows, matched, key=key)
    else:
        chosen = sorted(matched, key=key)
    return View(tuple(chosen), len(matched), len(all_rows))


MISSING = "—"  # a column the runbook's query does not have


def _moment(row: BreakerRow) -> datetime | None:
    return row.opened_at if row.state != "closed" and row.opened_at else row.changed_at


def _timestamp(row: BreakerRow) -> float:
    moment = _moment(row)
    return moment.timestamp() if moment is not None else 0.0


def since(row: BreakerRow, now: datetime) -> str:
    moment = _moment(row)
    return MISSING if moment is None else format_age((now - moment).total_seconds())


def _failures(row: BreakerRow) -> str:
    if row.failure_count is None:
        return MISSING
    return f"{row.failure_count}" + (f"/{row.failure_threshold}" if row.failure_threshold is not None else "")


def cells(row: BreakerRow, now: datetime) -> tuple[str, ...]:
    return (
        row.provider or MISSING,
        row.location_name,
        row.state,
        _failures(row),
        MISSING if row.window_minutes is None else f"{row.window_minutes}m",
        since(row, now),
    )


def render_cell(column: int, value: str, row_id: str) -> Text:
    if column == 0:
        text = KeyedText(plain(value, limit=40), no_wrap=True, overflow="ellipsis")
        text.row_id = row_id
        return text
    if column == 2:
        return Text(STATE_LABEL.get(value, plain(value, limit=12)), style=STATE_STYLE.get(value, ""), no_wrap=True)
    return Text(plain(value, limit=80), no_wrap=True, overflow="ellipsis")


@dataclass
class DiffStats:
    added: int = 0
    removed: int = 0
    updated: int = 0


class BreakerTable(DataTable[Text]):
    DEFAULT_CSS = """
    BreakerTable { height: 1fr; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self._shown: dict[str, tuple[str, ...]] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    @property
    def shown_ids(self) -> list[str]:
        return list(self._order)

    def show(self, rows: tuple[BreakerRow, ...], now: datetime) -> DiffStats:
        """Make the table show `rows`, in this order, touching only what changed."""
        stats = DiffStats()
        wanted = {r.location_id: cells(r, now) for r in rows}
        order = [r.location_id for r in rows]
        with self.app.batch_update():
            for row_id in [k for k in self._shown if k not in wanted]:
                self.remove_row(row_id)
                del self._shown[row_id]
                stats.removed += 1
            for row_id, values in wanted.items():
                old = self._shown.get(row_id)
                if old is None:
                    self.add_row(*(render_cell(i, v, row_id) for i, v in enumerate(values)), key=row_id)
                    stats.added += 1
                elif old != values:
                    for i, (before, after) in enumerate(zip(old, values)):
                        if before != after:
                            self.update_cell(row_id, COLUMNS[i][0], render_cell(i, after, row_id))
                            stats.updated += 1
                self._shown[row_id] = values
            if order != self._order:
                rank = {row_id: index for index, row_id in enumerate(order)}
                self.sort(key=lambda values: rank[values[0].row_id])
                self._order = order
        return stats
