"""A DataTable whose `update_cell` redraws only the row it changes.

Textual's DataTable keys every render cache on one update counter for the whole table, so a
single changed cell makes it render every visible row again (about a millisecond a line):
a checklist age ticking, or a watcher taking in one record of the driver's, cost the whole
table. Here a changed cell evicts only its own render and its row's line, and refreshes only its
row's region;
everything else (adding or removing rows, sorting, widths) is Textual's own.
"""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowKey


class RowTable(DataTable[Any]):
    def update_cell(self, row_key: RowKey | str, column_key: ColumnKey | str, value: Any, *,
                    update_width: bool = False) -> None:
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
