"""The circuit-breaker table: every location, drawn a screenful at a time.

A DataTable keeps a row object per location and its `remove_row` is O(rows), so at 10,000
locations a refresh with 1 % of the breakers changed took 65–92 ms (DESIGN.md §6) and the
screen had to cap the list. This table is a line-API widget instead: `Listing` keeps the sort
keys of the matching rows in order and, between two polls, moves only the rows that changed
(a set difference of the two snapshots' tuples, then a bisect each), and `BreakerTable` draws
only the lines on screen and repaints only those whose text changed. Every row is reachable by
scrolling; a filter or sort change re-sorts the whole list once.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from controlroom.live.polling import format_age
from controlroom.live.sources import BreakerRow, plain

STATE_RANK = {"open": 0, "half_open": 1, "closed": 2}
STATE_STYLE = {"open": "bold white on red", "half_open": "bold black on yellow", "closed": "green"}
STATE_LABEL = {"open": "OPEN", "half_open": "HALF-OPEN", "closed": "closed"}
COLUMNS = (("provider", "Provider", 9), ("location", "Location", 28), ("state", "State", 9),
           ("failures", "Fails", 6), ("window", "Window", 6), ("since", "Since", 8))
SORTS = ("state", "failures", "since", "provider", "location")
PADDING = 1  # a space either side of every cell, as DataTable draws them
TABLE_WIDTH = sum(width + 2 * PADDING for _, _, width in COLUMNS)

SortKey = tuple  # (state rank, ..., location id): unique per location, so a row is found by bisect


def sort_key(sort: str) -> Callable[[BreakerRow], SortKey]:
    """Problems first always, then by `sort`; the location id last makes every key unique."""
    if sort == "since":
        return lambda r: (STATE_RANK.get(r.state, 3), -_timestamp(r), r.location_name, r.location_id)
    if sort == "provider":
        return lambda r: (STATE_RANK.get(r.state, 3), r.provider, r.location_name, r.location_id)
    if sort == "location":
        return lambda r: (STATE_RANK.get(r.state, 3), r.location_name, r.location_id)
    # "state" and "failures": the most failures first within a state
    return lambda r: (STATE_RANK.get(r.state, 3), -(r.failure_count or 0), r.provider, r.location_name, r.location_id)


def matcher(needle: str) -> Callable[[BreakerRow], bool]:
    """Case-insensitive substring of provider, location name or id, or state label."""
    if not needle:
        return lambda r: True
    return lambda r: (needle in r.location_name.lower() or needle in r.location_id.lower()
                      or needle in r.provider.lower() or needle in STATE_LABEL.get(r.state, r.state).lower())


@dataclass(frozen=True)
class View:
    rows: tuple[BreakerRow, ...]  # what the table should show, in order
    matched: int  # rows matching the filter, before any cap
    total: int


def select(rows: Iterable[BreakerRow], *, filter_text: str = "", sort: str = "state", max_rows: int | None = None) -> View:
    """Filter, sort (problems first always, then by `sort`) and, if asked, cap: the whole
    computation at once, pure. The table keeps the same order incrementally (`Listing`)."""
    all_rows = rows if isinstance(rows, tuple) else tuple(rows)
    matched = list(filter(matcher(filter_text.strip().lower()), all_rows))
    key = sort_key(sort)
    if max_rows is not None and len(matched) > max_rows:
        import heapq
        chosen = heapq.nsmallest(max_rows, matched, key=key)
    else:
        chosen = sorted(matched, key=key)
    return View(tuple(chosen), len(matched), len(all_rows))


class Listing:
    """The matching rows in the table's order, kept up to date between polls.

    `update` with the same filter and sort finds the rows that changed since the last snapshot
    (set difference of the row tuples, in C) and moves only those (a bisect each); a new sort
    re-sorts once; a longer filter (typing on) keeps the order and drops what no longer
    matches. Locations are told apart by id; a snapshot with an id twice keeps the last row.
    """

    def __init__(self) -> None:
        self.by_id: dict[str, BreakerRow] = {}
        self.keys: list[SortKey] = []  # of the matching rows, in order; each ends with the location id
        self.total = 0
        self._rows: frozenset[BreakerRow] = frozenset()
        self._snapshot: tuple[BreakerRow, ...] | None = None  # the rows last given
        self._needle: str | None = None
        self._sort: str | None = None
        self._unique = False
        self.moved = 0  # rows re-placed by the last update (the whole list after a rebuild)

    def __len__(self) -> int:
        return len(self.keys)

    def row_at(self, index: int) -> BreakerRow:
        return self.by_id[self.keys[index][-1]]

    def index_of(self, location_id: str) -> int | None:
        row = self.by_id.get(location_id)
        if row is None or self._sort is None:
            return None
        key = sort_key(self._sort)(row)
        index = bisect_left(self.keys, key)
        return index if index < len(self.keys) and self.keys[index] == key else None

    def update(self, rows: Iterable[BreakerRow], *, filter_text: str = "", sort: str = "state") -> bool:
        """Take a new snapshot, filter or sort; True when the listing changed."""
        rows = rows if isinstance(rows, tuple) else tuple(rows)
        needle = filter_text.strip().lower()
        same_rows, same_order = rows is self._snapshot, needle == self._needle and sort == self._sort
        if same_rows and same_order:
            return False
        if same_rows and sort == self._sort and self._needle is not None and needle.startswith(self._needle):
            match = matcher(needle)  # typing on: what still matches keeps its order
            self.keys = [key for key in self.keys if match(self.by_id[key[-1]])]
            self._needle, self.moved = needle, 0
            return True
        if same_order and self._unique:
            current = frozenset(rows)
            gone, came = self._rows - current, current - self._rows
            if len(gone) + len(came) <= len(rows) // 4:
                self._move(gone, came, needle, sort)
                self._rows, self._snapshot, self.total = current, rows, len(rows)
                if len(self.by_id) != len(rows):
                    self._rebuild(rows, needle, sort)  # an id came twice: start again, the last row wins
                return bool(gone or came)
        self._rebuild(rows, needle, sort)
        return True

    def _rebuild(self, rows: tuple[BreakerRow, ...], needle: str, sort: str) -> None:
        self.by_id = {row.location_id: row for row in rows}
        self._unique = len(self.by_id) == len(rows)
        self.keys = sorted(map(sort_key(sort), filter(matcher(needle), self.by_id.values())))
        self._rows, self._snapshot, self.total = frozenset(rows), rows, len(rows)
        self._needle, self._sort, self.moved = needle, sort, len(self.keys)

    def _move(self, gone: frozenset[BreakerRow], came: frozenset[BreakerRow], needle: str, sort: str) -> None:
        key, match, keys = sort_key(sort), matcher(needle), self.keys
        for row in gone:
            if self.by_id.get(row.location_id) == row:
                del self.by_id[row.location_id]
            if match(row):
                at = bisect_left(keys, key(row))
                if at < len(keys) and keys[at][-1] == row.location_id:
                    del keys[at]
        for row in came:
            self.by_id[row.location_id] = row
            if match(row):
                insort(keys, key(row))
        self.moved = len(gone) + len(came)


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


def render_cell(column: int, value: str) -> Text:
    if column == 0:
        return Text(plain(value, limit=40), no_wrap=True, overflow="ellipsis")
    if column == 2:
        return Text(STATE_LABEL.get(value, plain(value, limit=12)), style=STATE_STYLE.get(value, ""), no_wrap=True)
    return Text(plain(value, limit=80), no_wrap=True, overflow="ellipsis")


def _line(texts: Iterable[Text]) -> Text:
    """Cells side by side, each cut to its column's width and padded as DataTable pads them."""
    line = Text(no_wrap=True, end="")
    for text, (_, _, width) in zip(texts, COLUMNS):
        text.truncate(width, overflow=text.overflow or "crop")
        line.append(" " * PADDING)
        line.append_text(text)
        line.append(" " * (width - text.cell_len + PADDING))
    return line


@dataclass(frozen=True)
class Shown:
    matched: int  # rows matching the filter: all of them reachable by scrolling
    total: int  # rows in the snapshot
    moved: int  # rows re-placed in the order (all of them after a new filter or sort)
    repainted: int  # screen lines marked for repainting


class BreakerTable(ScrollView, can_focus=True):
    """Rows of breakers under a header line; a row cursor that stays on its location when a
    poll re-orders the list (and follows it into view if it was in view)."""

    COMPONENT_CLASSES = {"breaker-table--header", "breaker-table--cursor"}
    BINDINGS = [
        Binding("up", "cursor_up", "Cursor up", show=False),
        Binding("down", "cursor_down", "Cursor down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First row", show=False),
        Binding("end", "last", "Last row", show=False),
    ]
    # DataTable's look: the same colours for the header and the focused / blurred cursor.
    DEFAULT_CSS = """
    BreakerTable {
        height: 1fr;
        background: $surface;
        color: $foreground;
        &:focus {
            background-tint: $foreground 5%;
            & > .breaker-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .breaker-table--header { background-tint: $foreground 5%; }
        }
        & > .breaker-table--header { text-style: bold; background: $panel; color: $foreground; }
        &:ansi > .breaker-table--header { background: ansi_bright_blue; color: ansi_default; }
        & > .breaker-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.listing = Listing()
        self.cursor_row = 0
        self._cursor_id: str | None = None
        self._now: datetime | None = None
        self._painted: dict[int, object] = {}  # screen line -> what render_line last drew there
        self._strips: dict[tuple[object, ...], Strip] = {}
        self._styles: tuple[Style, Style, Style, Style] | None = None

    # -- what the tests and the screen read -----------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.listing)

    @property
    def shown_ids(self) -> list[str]:
        return [key[-1] for key in self.listing.keys]

    @property
    def cursor_id(self) -> str | None:
        return self._cursor_id

    def get_row_at(self, index: int) -> list[Text]:
        now = self._now or datetime.now().astimezone()
        return [render_cell(i, value) for i, value in enumerate(cells(self.listing.row_at(index), now))]

    def get_row(self, location_id: str) -> list[Text]:
        index = self.listing.index_of(location_id)
        if index is None:
            raise KeyError(location_id)
        return self.get_row_at(index)

    def visible_text(self) -> list[str]:
        """The lines on screen as plain text (header first): what render_line draws."""
        return [line.text for line in (self.render_line(y) for y in range(self.size.height))]

    # -- updating ---------------------------------------------------------------------------

    def show(self, rows: Iterable[BreakerRow], now: datetime, *, filter_text: str = "", sort: str = "state") -> Shown:
        """Show the snapshot `rows`, filtered and sorted; repaint only the lines that changed."""
        listing = self.listing
        top, visible = self._top(), self._rows_on_screen()
        was_in_view = top <= self.cursor_row < top + visible
        changed = listing.update(rows, filter_text=filter_text, sort=sort)
        self._now = now
        if changed:
            self._fit_virtual_size()
            index = listing.index_of(self._cursor_id) if self._cursor_id is not None else None
            self._place_cursor(self.cursor_row if index is None else index, into_view=was_in_view)
        return Shown(len(listing), listing.total, listing.moved if changed else 0, self._repaint_changed())

    def _fit_virtual_size(self) -> None:
        size = Size(TABLE_WIDTH, len(self.listing) + 1)  # + the header line
        if size != self.virtual_size:
            self.virtual_size = size

    def _place_cursor(self, index: int, *, into_view: bool = True) -> None:
        count = len(self.listing)
        self.cursor_row = max(0, min(index, count - 1))
        self._cursor_id = self.listing.keys[self.cursor_row][-1] if count else None
        if into_view:
            top, visible = self._top(), self._rows_on_screen()
            if self.cursor_row < top:
                self.scroll_to(y=self.cursor_row, animate=False, force=True)
            elif self.cursor_row >= top + visible:
                self.scroll_to(y=self.cursor_row - visible + 1, animate=False, force=True)

    def _top(self) -> int:
        return round(self.scroll_y)

    def _rows_on_screen(self) -> int:
        return max(1, self.size.height - 1)

    def _line_state(self, y: int) -> object:
        """What screen line `y` (below the header) shows: its cells and whether the cursor is on it."""
        index = self._top() + y - 1
        if not 0 <= index < len(self.listing) or self._now is None:
            return None
        return cells(self.listing.row_at(index), self._now), index == self.cursor_row

    def _repaint_changed(self) -> int:
        repainted = 0
        width = self.size.width
        for y in range(1, self.size.height):
            if self._painted.get(y, False) != self._line_state(y):
                self.refresh(Region(0, y, width, 1))
                repainted += 1
        return repainted

    # -- keys ---------------------------------------------------------------------------------

    def _move(self, index: int) -> None:
        if not len(self.listing):
            return
        self._place_cursor(index)
        self._repaint_changed()

    def action_cursor_up(self) -> None:
        self._move(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self._move(self.cursor_row + 1)

    def action_page_up(self) -> None:
        self._move(self.cursor_row - self._rows_on_screen())

    def action_page_down(self) -> None:
        self._move(self.cursor_row + self._rows_on_screen())

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(len(self.listing) - 1)

    # -- drawing ------------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        base = self.rich_style
        cursor = self.get_component_rich_style("breaker-table--cursor")
        # The cursor's colour wins over a cell's own (DataTable's cursor_foreground_priority
        # "css"); a cell's background (OPEN's red) stays.
        self._styles = (base, self.get_component_styles("breaker-table--header").rich_style,
                        cursor, Style.from_color(color=cursor.color))
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if self._styles is None:
            self.render_lines(Region(0, 0, 0, 0))
        assert self._styles is not None
        base, header, cursor, cursor_colour = self._styles
        scroll_x = round(self.scroll_x)
        if y == 0:
            strip = self._strip(("header",), lambda: self._draw(
                (Text(label, no_wrap=True, overflow="ellipsis") for _, label, _ in COLUMNS), header, Style()))
        else:
            state = self._line_state(y)
            self._painted[y] = state
            if state is None:
                return Strip.blank(width, base)
            values, on_cursor = state
            pre, post = (base + cursor, cursor_colour) if on_cursor else (base, Style())
            strip = self._strip((values, on_cursor), lambda: self._draw(
                (render_cell(i, value) for i, value in enumerate(values)), pre, post))
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _strip(self, what: tuple[object, ...], draw: Callable[[], Strip]) -> Strip:
        key = (what, max(TABLE_WIDTH, self.size.width), self._styles)
        strip = self._strips.get(key)
        if strip is None:
            if len(self._strips) > 2000:
                self._strips.clear()
            strip = self._strips[key] = draw()
        return strip

    def _draw(self, texts: Iterable[Text], pre: Style, post: Style) -> Strip:
        segments = Segment.apply_style(_line(texts).render(self.app.console), pre, post)
        width = max(TABLE_WIDTH, self.size.width)
        return Strip(list(segments), TABLE_WIDTH).extend_cell_length(width, pre).simplify()
