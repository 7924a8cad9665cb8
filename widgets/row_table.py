"""A DataTable whose `update_cell` redraws only the row it changes.

Textual's DataTable keys every render cache on one update counter for the whole table, so a
single changed cell makes it render every visible row again (about a millisecond a line):
a checklist age ticking, or a watcher taking in one record of the driver's, cost the whole
table. Here a changed cell evicts only its own render and its row's line, and refreshes only its
row's region;
everything else (adding or removing rows, sorting, widths) is Textual's own.

Some columns can share the width the others leave (`flex`): their widths follow the table's
on every resize, so a wider terminal shows longer titles; the cells hold the whole text
(`cut`: one line, "…" at the column's edge).

It can also show only some of its rows (`show_only`, for a screen's `/` filter): the others
are kept aside in order, with their cells, and still take `update_cell`, so a screen writes
every row as before and a row filtered out is up to date when it comes back.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from rich.text import Text
from textual import events
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowKey


def cut(text: str | Text, style: str = "") -> Text:
    """A cell of a flexible column: the whole text on one line, "…" where the column ends."""
    cell = text.copy() if isinstance(text, Text) else Text(text, style=style)
    cell.no_wrap, cell.overflow = True, "ellipsis"
    return cell


class RowTable(DataTable[Any]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._order: list[Any] = []  # every row's key value, in the order added
        self._aside: dict[Any, list[Any]] = {}  # rows filtered out: their cells
        self._refilling = False
        self._flex: dict[str, tuple[int, int, int]] = {}  # column key -> (share, least, most or 0)

    def flex(self, **shares: tuple[int, int] | tuple[int, int, int]) -> None:
        """Columns (by key) that share the width the fixed ones leave, each `(share, least
        width)` or `(share, least, most)`: a column wider than its longest text gives the rest
        to the others. Set after the columns are added."""
        self._flex = {key: (spec + (0,))[:3] for key, spec in shares.items()}
        self._fit_columns()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_columns()

    def _fit_columns(self) -> None:
        # The room is measured without the vertical scrollbar, so that the columns do not
        # move when a scrollbar comes or goes.
        width = self.size.width - self.styles.scrollbar_size_vertical
        flexible = [(key, *spec) for key, spec in self._flex.items() if ColumnKey(key) in self.columns]
        if not flexible or width <= 0:
            return
        fixed = sum(column.get_render_width(self) for key, column in self.columns.items() if key.value not in self._flex)
        room = max(0, width - fixed - 2 * self.cell_padding * len(flexible))
        total = sum(share for _, share, _, _ in flexible) or 1
        widths = [max(least, room * share // total) for _, share, least, _ in flexible]
        widths[-1] = max(flexible[-1][2], room - sum(widths[:-1]))  # the rounding's cells go to the last
        surplus = 0
        for index, (_, _, least, most) in enumerate(flexible):
            if most and widths[index] > max(most, least):
                surplus += widths[index] - max(most, least)
                widths[index] = max(most, least)
        open_ = [index for index, (_, _, _, most) in enumerate(flexible) if not most or widths[index] < most]
        if surplus and open_:
            widths[open_[-1]] += surplus
        changed = False
        for (key, *_), new in zip(flexible, widths):
            column = self.columns[ColumnKey(key)]
            if column.width != new or column.auto_width:
                column.width, column.auto_width, changed = new, False, True
        if changed:
            self._clear_caches()
            self._update_count += 1
            self._require_update_dimensions = True
            self.refresh()

    def add_row(self, *cells: Any, height: int | None = 1, key: str | None = None, label: Any = None) -> RowKey:
        row_key = super().add_row(*cells, height=height, key=key, label=label)
        if not self._refilling:
            self._order.append(row_key.value)
        return row_key

    def clear(self, columns: bool = False) -> Any:
        if not self._refilling:
            self._order, self._aside = [], {}
        return super().clear(columns)

    def is_shown(self, key: str) -> bool:
        return key not in self._aside

    def show_only(self, keys: Collection[str] | None) -> None:
        """Show the rows whose keys are in `keys` (None: every row), in their order; the
        cursor stays on its row when that row is still shown."""
        wanted = [key for key in self._order if keys is None or key in keys]
        if len(wanted) == self.row_count and not any(key in self._aside for key in wanted):
            return  # shows these already
        cursor = self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value if self.row_count else None
        rows = [(key, self._aside[key] if key in self._aside else list(self.get_row(key))) for key in self._order]
        self._aside = {}
        self._refilling = True
        try:
            self.clear()
            for key, cells in rows:
                if keys is None or key in keys:
                    self.add_row(*cells, key=key)
                else:
                    self._aside[key] = cells
        finally:
            self._refilling = False
        if cursor is not None and cursor not in self._aside and cursor in self._order:
            self.move_cursor(row=self.get_row_index(cursor))

    def get_cell(self, row_key: RowKey | str, column_key: ColumnKey | str) -> Any:
        aside = self._aside.get(row_key.value if isinstance(row_key, RowKey) else row_key)
        if aside is not None:
            return aside[self.get_column_index(column_key)]
        return super().get_cell(row_key, column_key)

    def update_cell(self, row_key: RowKey | str, column_key: ColumnKey | str, value: Any, *,
                    update_width: bool = False) -> None:
        aside = self._aside.get(row_key.value if isinstance(row_key, RowKey) else row_key)
        if aside is not None:  # filtered out: written where it waits
            aside[self.get_column_index(column_key)] = value
            return
        if update_width or self.fixed_rows:  # columns may move / fixed rows render apart: Textual's way
            super().update_cell(row_key, column_key, value, update_width=update_width)
            return
        row = RowKey(row_key) if isinstance(row_key, str) else row_key
        column = ColumnKey(column_key) if isinstance(column_key, str) else column_key
        if row not in self._row_locations or column not in self._column_locations:
            raise CellDoesNotExist(f"No cell exists for row_key={row!r}, column_key={column!r}.")
        self._data[row][column] = value
        index = self.get_row_index(row)
        # The line of the row is drawn again, but of its cells only the one that changed (the
        # cell cache's keys start with row and column; the row cache's with the row).
        for key in [key for key in self._cell_render_cache.keys() if key[0] == row and key[1] == column]:
            self._cell_render_cache.discard(key)
        for key in [key for key in self._row_render_cache.keys() if key[0] == row]:
            self._row_render_cache.discard(key)
        for key in [key for key in self._row_renderable_cache.keys() if key[1] == index]:  # (count, index)
            self._row_renderable_cache.discard(key)
        self._line_cache.clear()  # lines are rebuilt from the rows' renders, still cached but this one
        self.refresh_row(index)
