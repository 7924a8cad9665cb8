"""The step output pane of the deploy and rollback screens.

Until a step writes to it, it shows what the operator most needs: the selected step's
journaled outcome (after a reopen, a FAIL says why) or a placeholder. The first real output
replaces that, and the newest line always stays in view.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.widgets import Log

from controlroom.live.sources import plain


class StepLog(Log):
    def __init__(self, placeholder: str, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id, max_lines=1000)
        self.placeholder = placeholder
        self.used = False  # real output was written: no longer showing an outcome
        self._shown: tuple[str, ...] = ()

    def on_mount(self) -> None:
        self.show_outcome(())

    def add_line(self, line: str) -> None:
        if not self.used:
            self.clear()
        self.used = True
        self.write_line(plain(line, limit=1000))
        # Scroll once the new size is laid out, or the pane stays on its first lines.
        self.call_after_refresh(self.scroll_end, animate=False)

    def show_outcome(self, lines: Sequence[str]) -> None:
        """Show a step's outcome (or the placeholder) while no step has written here."""
        if self.used:
            return
        shown = tuple(lines or [self.placeholder])
        if shown != self._shown:
            self._shown = shown
            self.clear()
            self.write_lines(shown)

    @property
    def text_width(self) -> int:
        return self.size.width or self.app.size.width
