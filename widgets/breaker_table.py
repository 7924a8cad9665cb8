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
from itertools import compress
from operator import itemgetter, ne
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime

from rich.cells import cell_len, set_cell_size
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
LOCATION_MOST = 60  # a wider terminal gives the location column its room, up to this


def column_widths(width: int) -> tuple[int, ...]:
    """The columns' widths in a table `width` cells wide: the location takes what the others
    leave (at least its 28, at most LOCATION_MOST)."""
    room = width - (TABLE_WIDTH - 28)  # 28: the location's own width in COLUMNS
    return tuple(max(28, min(LOCATION_MOST, room)) if key == "location" else least for key, _, least in COLUMNS)

LOCATION_ID = itemgetter(0)  # BreakerRow.location_id, read in C
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

    A new snapshot is compared with the last one location by location (in C: a dict of each,
    `map(operator.ne)` over the pairs) and only the rows that changed are moved, a bisect each,
    in the sorted keys of every row; a filter picks from those keys in order (no sort); only a
    new sort, or a snapshot where more than a quarter of the rows changed, sorts the whole list.
    Locations are told apart by id; a snapshot with an id twice keeps the last row.
    """

    def __init__(self) -> None:
        self.by_id: dict[str, BreakerRow] = {}
        self.all_keys: list[SortKey] = []  # every row's, in order; each ends with the location id
        self.keys: list[SortKey] = []  # the matching rows', in order (all_keys itself without a filter)
        self.total = 0
        self.moved = 0  # rows re-placed by the last update (all of them after a whole sort)
        self._snapshot: tuple[BreakerRow, ...] | None = None  # the rows last given
        self._needle = ""
        self._sort: str | None = None
        self._unique = False  # no location twice in the snapshot

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
        """Take a new snapshot, filter or sort; True when what the listing shows changed."""
        rows = rows if isinstance(rows, tuple) else tuple(rows)
        needle = filter_text.strip().lower()
        if sort != self._sort or self._snapshot is None:
            self._sort, self._snapshot, self.total = sort, rows, len(rows)
            self.by_id = dict(zip(map(LOCATION_ID, rows), rows))
            self._unique = len(self.by_id) == len(rows)
            self._sort_all()
            self._filter(needle)
            return True
        self.moved = 0
        moves = self._take(rows) if rows is not self._snapshot else ((), ())
        if moves is None or needle != self._needle:
            self._filter(needle)
            return True
        gone, came = moves
        if needle and (gone or came):
            self._move(self.keys, gone, came, matcher(needle))
        return bool(gone or came)

    def _take(self, rows: tuple[BreakerRow, ...]) -> tuple[list[BreakerRow], list[BreakerRow]] | None:
        """Make `rows` the snapshot; the rows that left and came (None: all sorted again)."""
        last, self._snapshot, self.total = self._snapshot, rows, len(rows)
        moves = self._moved_in_place(last, rows) if last is not None else None
        if moves is None:
            old, new = self.by_id, dict(zip(map(LOCATION_ID, rows), rows))
            self.by_id, self._unique = new, len(new) == len(rows)
            came = list(compress(new.values(), map(ne, map(old.get, new.keys()), new.values())))
            gone = [old[row.location_id] for row in came if row.location_id in old]
            gone += [old[location_id] for location_id in old.keys() - new.keys()]
            moves = gone, came
        self.moved = len(moves[0]) + len(moves[1])
        if self.moved > len(rows) // 4:
            self._sort_all()
            return None
        self._move(self.all_keys, *moves, None)
        return moves

    def _moved_in_place(self, last: tuple[BreakerRow, ...], rows: tuple[BreakerRow, ...]
                        ) -> tuple[list[BreakerRow], list[BreakerRow]] | None:
        """The rows that changed when both snapshots hold the same locations and most at the same
        places (a query's order is mostly stable between polls): one comparison in C of the two
        tuples, place by place, then a look at the few that differ. None: compare by id."""
        if not self._unique or len(last) != len(rows):
            return None
        differs = list(compress(range(len(rows)), map(ne, last, rows)))
        if len(differs) > len(rows) // 8:
            return None
        news = [rows[i] for i in differs]
        if sorted(map(LOCATION_ID, news)) != sorted(last[i].location_id for i in differs):
            return None  # a location came or left
        by_id = self.by_id
        came = [row for row in news if by_id[row.location_id] != row]
        gone = [by_id[row.location_id] for row in came]
        by_id.update(zip(map(LOCATION_ID, came), came))
        return gone, came

    def _sort_all(self) -> None:
        self.all_keys = sorted(map(sort_key(self._sort or "state"), self.by_id.values()))
        self.moved = len(self.all_keys)

    def _filter(self, needle: str) -> None:
        if not needle:
            self.keys = self.all_keys
        else:
            # Typing on narrows what matched already; otherwise pick from every row, in order.
            narrowing = self._needle and needle.startswith(self._needle) and self.keys is not self.all_keys
            match, by_id = matcher(needle), self.by_id
            self.keys = [key for key in (self.keys if narrowing else self.all_keys) if match(by_id[key[-1]])]
        self._needle = needle

    def _move(self, keys: list[SortKey], gone: list[BreakerRow], came: list[BreakerRow],
              match: Callable[[BreakerRow], bool] | None) -> None:
        key = sort_key(self._sort or "state")
        for row in gone:
            if match is None or match(row):
                at = bisect_left(keys, key(row))
                if at < len(keys) and keys[at][-1] == row.location_id:
                    del keys[at]
        for row in came:
            if match is None or match(row):
                insort(keys, key(row))


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


@lru_cache(maxsize=64)
def _style(definition: str) -> Style:
    return Style.parse(definition) if definition else Style()


def _segments(texts: Iterable[Text], pre: Style, post: Style, widths: Iterable[int]) -> list[Segment]:
    """Cells side by side, each cut to its column's width and padded with a space either side,
    styled as DataTable styles a row: `pre` + the cell's own style + `post`."""
    pad, plain_style = " " * PADDING, pre + post
    segments: list[Segment] = []
    run = ""  # unstyled text not yet in a segment
    for text, width in zip(texts, widths):
        body = text.plain
        if cell_len(body) > width:
            body = set_cell_size(body, width - 1) + "…" if text.overflow == "ellipsis" else set_cell_size(body, width)
        fill = " " * (width - cell_len(body))
        if text.style:
            segments += [Segment(run + pad, plain_style), Segment(body, pre + _style(str(text.style)) + post)]
            run = fill + pad
        else:
            run += pad + body + fill + pad
    segments.append(Segment(run, plain_style))
    return segments


@dataclass(frozen=True)
class Shown:
    matched: int  # rows matching the filter: all of them reachable by scrolling
    total: int  # rows in the snapshot
    moved: int  # rows re-placed in the order (all of them after a new filter or sort)
    repainted: int  # screen lines marked for repainting


class BreakerTable(ScrollView, can_focus=True):
    """Rows of breakers under a header line, and a row cursor. A poll never scrolls the table:
    the cursor stays on its location wherever the new order puts it (the next cursor key brings
    it into view), and lines that did not change are not drawn again."""

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
        self._widths = column_widths(0)

    def on_resize(self) -> None:
        widths = column_widths(self.size.width - self.styles.scrollbar_size_vertical)
        if widths != self._widths:
            self._widths = widths
            self._strips.clear()
            self._fit_virtual_size()
            self.refresh()

    @property
    def table_width(self) -> int:
        return sum(width + 2 * PADDING for width in self._widths)

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
        changed = listing.update(rows, filter_text=filter_text, sort=sort)
        self._now = now
        if changed:
            self._fit_virtual_size()
            index = listing.index_of(self._cursor_id) if self._cursor_id is not None else None
            self._place_cursor(self.cursor_row if index is None else index, into_view=False)
        return Shown(len(listing), listing.total, listing.moved if changed else 0, self._repaint_changed())

    def _fit_virtual_size(self) -> None:
        size = Size(self.table_width, len(self.listing) + 1)  # + the header line
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
        width = self.size.width
        changed = [Region(0, y, width, 1) for y in range(1, self.size.height)
                   if self._painted.get(y, False) != self._line_state(y)]
        if changed:
            self.refresh(*changed)
        return len(changed)

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
        self._styles = self._current_styles()
        return super().render_lines(crop)

    def _current_styles(self) -> tuple[Style, Style, Style, Style]:
        cursor = self.get_component_rich_style("breaker-table--cursor")
        # The cursor's colour wins over a cell's own (DataTable's cursor_foreground_priority
        # "css"); a cell's background (OPEN's red) stays.
        return (self.rich_style, self.get_component_styles("breaker-table--header").rich_style,
                cursor, Style.from_color(color=cursor.color))

    def render_line(self, y: int) -> Strip:
        styles = self._styles = self._styles or self._current_styles()
        base, header, cursor, cursor_colour = styles
        width = self.size.width
        if y == 0:
            what: object = "header"
            texts = lambda: (Text(label, no_wrap=True, overflow="ellipsis") for _, label, _ in COLUMNS)  # noqa: E731
            pre, post = header, Style()
        else:
            what = self._painted[y] = self._line_state(y)
            if what is None:
                return Strip.blank(width, base)
            values, on_cursor = what
            texts = lambda: (render_cell(i, value) for i, value in enumerate(values))  # noqa: E731
            pre, post = (base + cursor, cursor_colour) if on_cursor else (base, Style())
        key = (what, width, styles)
        strip = self._strips.get(key)
        if strip is None:
            if len(self._strips) > 2000:
                self._strips.clear()
            table_width = self.table_width
            strip = Strip(_segments(texts(), pre, post, self._widths), table_width).extend_cell_length(
                max(table_width, width), pre)
            self._strips[key] = strip
        scroll_x = round(self.scroll_x)
        return strip.crop_extend(scroll_x, scroll_x + width, base)
