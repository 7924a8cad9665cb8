"""The bare Textual app the control room's first frame is compared with (issue 13): a Header,
a DataTable of a few rows and a Footer, nothing else. `benchmarks/run.py` spawns it under a
pseudo-terminal exactly as it spawns `controlroom`, and waits for ROW_TEXT on the terminal.

    .venv/bin/python benchmarks/bare_app.py
"""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, Header

ROW_TEXT = "bare row 3"


class BareApp(App[None]):
    BINDINGS = [("q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable()
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("check", "status", "detail")
        for index in range(1, 6):
            table.add_row(f"bare row {index}", "PASS", "a few words of detail")


if __name__ == "__main__":
    BareApp().run()
