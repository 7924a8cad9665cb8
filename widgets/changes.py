"""Write a cell or a label only when what it shows changes: re-rendering a table or a label
with the text it already shows costs a frame's work for nothing (a watcher of a shared release
gets a change for every record the driver journals, most of which change nothing on screen)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable, Static
from textual.widgets.data_table import CellDoesNotExist


def same(a: Any, b: Any) -> bool:
    """Equal as shown: for rich Text its characters, base style and spans (Text's own ==
    ignores the base style, so a cell turning from green to red would look unchanged)."""
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and str(a.style) == str(b.style) and a.spans == b.spans
    return type(a) is type(b) and a == b


def set_cell(table: DataTable[Any], row: str, column: str, value: Any) -> bool:
    """update_cell, unless the cell already shows `value`; True when it was written."""
    try:
        if same(table.get_cell(row, column), value):
            return False
    except CellDoesNotExist:
        pass  # let update_cell say what is missing
    table.update_cell(row, column, value)
    return True


def set_content(widget: Static, content: Any) -> bool:
    """Static.update, unless the widget already shows `content`; True when it was written.
    A widget whose size its CSS fixes is written without a layout of its screen."""
    if same(getattr(widget, "_controlroom_shown", None), content):
        return False
    widget._controlroom_shown = content  # type: ignore[attr-defined]
    widget.update(content, layout=not fixed_size(widget))
    return True


def fixed_size(widget: Static) -> bool:
    """Its width and height are set in cells, fractions or percentages, not `auto`: what it
    shows cannot change its size. Static.update lays the whole screen out again otherwise
    (on the KPIs, 20 rows of labels, for an age going from 4s to 5s)."""
    width, height = widget.styles.width, widget.styles.height
    return width is not None and height is not None and not width.is_auto and not height.is_auto
