"""The step output pane of the deploy and rollback screens.

Until a step writes to it, it shows what the operator most needs: the selected step's
journaled outcome (after a reopen, a FAIL says why) or a placeholder. The first real output
replaces that.

It keeps the whole history (up to MAX_LINES lines; beyond that the oldest go, a thousand at a
time, and the first line says how many were dropped) and scrolls back: PgUp / PgDn when the
pane has the focus (tab), shift+PgUp / shift+PgDn from anywhere on the screen, `G` to the end.
While it is at the end it follows new output; scrolling up stops that, and `G` (or scrolling
back down to the end) follows again. Long lines wrap at the pane's width (a continuation row
starts with "  "), re-wrapped when the pane is resized; `lines` are the lines as written.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from textual.binding import Binding
from textual.geometry import Size
from textual.events import Resize
from textual.widgets import Log

from controlroom.live.sources import plain

MAX_LINES = 10_000
DROP_AT_ONCE = 1_000
CONTINUATION = "  "


def wrap(line: str, width: int) -> list[str]:
    """`line` as rows of at most `width` characters, continuation rows indented; a row ends
    after a space when there is one in its last third (words stay whole), else at the edge."""
    if width <= len(CONTINUATION) + 1 or len(line) <= width:
        return [line]
    rows, rest, room = [], line, width
    while len(rest) > room:
        cut = rest.rfind(" ", room - room // 3, room) + 1 or room
        rows.append(rest[:cut])
        rest, room = rest[cut:], width - len(CONTINUATION)
    rows.append(rest)
    return [rows[0], *(CONTINUATION + row for row in rows[1:])]


def log_bindings(scope: str) -> list[Binding]:
    """The screen's keys for its output pane (ids `<scope>.log_up` …: the key reference)."""
    return [
        Binding("shift+pageup", "log_page(-1)", "output up", show=False, id=f"{scope}.log_up"),
        Binding("shift+pagedown", "log_page(1)", "output down", show=False, id=f"{scope}.log_down"),
        Binding("G", "log_end", "output end", key_display="G", show=False,
                tooltip="The output pane to its end; it follows new output again", id=f"{scope}.log_end"),
    ]


class LogKeys:
    """The actions of `log_bindings`, for a screen with one StepLog."""

    def action_log_page(self, direction: int) -> None:
        log = self.query_one(StepLog)  # type: ignore[attr-defined]
        log.page(direction)

    def action_log_end(self) -> None:
        self.query_one(StepLog).follow()  # type: ignore[attr-defined]


class StepLog(Log):
    def __init__(self, placeholder: str, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self.placeholder = placeholder
        self.used = False  # real output was written: no longer showing an outcome
        self.following = True  # at the end: new output scrolls into view
        self.dropped = 0  # the oldest lines let go (beyond MAX_LINES)
        self._written: list[str] = []  # the lines as written (wrapped only on screen)
        self._shown: tuple[str, ...] = ()
        self._wrapped_at = 0

    @property
    def lines(self) -> Sequence[str]:  # type: ignore[override]
        """The lines as written (each may take several rows on screen)."""
        return self._written

    def on_mount(self) -> None:
        self.show_outcome(())

    @property
    def text_width(self) -> int:
        """The columns a row may take: the pane less its vertical scrollbar (there or not)."""
        return max(1, (self.size.width or self.app.size.width) - self.styles.scrollbar_size_vertical)

    def _rows(self, lines: Sequence[str]) -> list[str]:
        width = self.text_width
        self._wrapped_at = width
        return [row for line in lines for part in (line.splitlines() or [""]) for row in wrap(part, width)]

    def _append(self, rows: list[str]) -> None:
        """Log.write_lines without its thread worker measuring the new lines' width: a worker
        per line cost more than the line (rows are wrapped: none is wider than the pane)."""
        start = len(self._lines)
        self._lines.extend(rows)
        self._width = max(self._width, max((cell_len(self._process_line(row)) for row in rows), default=0))
        self.virtual_size = Size(self._width, len(self._lines))
        self.refresh_lines(start, len(rows))

    def _rewrite(self) -> None:
        """Every row again (after a resize, or dropping the oldest lines)."""
        super().clear()
        lines = ([f"… {self.dropped:,} earlier lines dropped"] if self.dropped else []) + self._written
        self._append(self._rows(lines))
        self._follow_later()

    def on_resize(self, event: Resize) -> None:
        if self._written and self.text_width != self._wrapped_at:
            self._rewrite()

    def add_line(self, line: str) -> None:
        if not self.used:
            self.clear()
        self.used = True
        text = plain(line, limit=1000)
        self._written.append(text)
        if len(self._written) > MAX_LINES + DROP_AT_ONCE:
            excess = len(self._written) - MAX_LINES
            del self._written[:excess]
            self.dropped += excess
            self._rewrite()
        else:
            self._append(self._rows([text]))
        self._follow_later()

    _scroll_pending = False

    def _follow_later(self) -> None:
        """While following: to the end once the new size is laid out (or the pane stays on its
        first lines); one scroll for a burst of lines."""
        if self.following and not self._scroll_pending:
            self._scroll_pending = True
            self.call_after_refresh(self._follow_now)

    def _follow_now(self) -> None:
        self._scroll_pending = False
        if self.following:
            self.scroll_end(animate=False, immediate=True)

    def clear(self) -> StepLog:
        self._written = []
        self.dropped = 0
        super().clear()
        return self

    def show_outcome(self, lines: Sequence[str]) -> None:
        """Show a step's outcome (or the placeholder) while no step has written here."""
        if self.used:
            return
        shown = tuple(lines or [self.placeholder])
        if shown != self._shown:
            self._shown = shown
            self.clear()
            self._written = list(shown)
            self._append(self._rows(shown))

    # -- scroll-back -------------------------------------------------------------------

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new < old and self.max_scroll_y >= old:  # (not the pane emptied for a re-wrap)
            self.following = False  # scrolled up: reading back, new output does not pull it down
        elif new >= self.max_scroll_y:
            self.following = True

    def page(self, direction: int) -> None:
        if direction < 0:
            self.scroll_page_up(animate=False)
        else:
            self.scroll_page_down(animate=False)

    def follow(self) -> None:
        self.following = True
        self.scroll_end(animate=False)
