"""POS health: per provider, the seed's monitoring query, live."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Label

from controlroom.live.polling import PollState, format_age
from controlroom.screens.base import ControlScreen
from controlroom.live.sources import HealthSnapshot, ProviderHealth, plain

# The checklist's thresholds: sync success > 95 %, MTTR amber 120 / red 240 min, none failed > 4 h.
COLUMNS = (("provider", "Provider", 10), ("total", "Total", 7), ("connected", "Conn", 7),
           ("disconnected", "Disc", 6), ("failed", "Fail>4h", 7), ("sync", "Sync 30m", 9), ("mttr", "MTTR", 10))


def health_cells(p: ProviderHealth) -> tuple[Text, ...]:
    sync = "—" if p.sync_success_percent is None else f"{p.sync_success_percent:.1f}%"
    sync_style = "" if p.sync_success_percent is None else ("green" if p.sync_success_percent > 95 else "bold red" if p.sync_success_percent < 90 else "yellow")
    mttr = "—" if p.mttr_minutes is None else f"{p.mttr_minutes:.0f} min"
    mttr_style = "" if p.mttr_minutes is None else ("green" if p.mttr_minutes < 120 else "bold red" if p.mttr_minutes > 240 else "yellow")
    return (
        Text(plain(p.provider, limit=30), style="bold"),
        Text(f"{p.total:,}", justify="right"),
        Text(f"{p.connected:,}", justify="right"),
        Text(f"{p.disconnected:,}", justify="right", style="bold red" if p.disconnected else ""),
        Text(f"{p.failed_over_4h:,}", justify="right", style="bold red" if p.failed_over_4h else "green"),
        Text(sync, justify="right", style=sync_style),
        Text(mttr, justify="right", style=mttr_style),
    )


class PosHealthScreen(ControlScreen):
    TITLE_TEXT = "POS health"
    HELP = (
        "Per POS provider: locations total, connected and disconnected, locations failed for more "
        "than 4 hours, sync success over the last 30 minutes (green > 95 %), and the 30-day MTTR "
        "(amber from 120 min, red above 240 min)."
    )

    def __init__(self) -> None:
        super().__init__()
        self.state: PollState[HealthSnapshot] | None = None
        self._shown: dict[str, tuple[str, ...]] = {}

    def compose_body(self) -> ComposeResult:
        table: DataTable[Text] = DataTable(cursor_type="none", id="health-table")  # nothing to select; a cursor would hide the colours
        yield table
        yield Label("waiting for the first reading…", id="health-status")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one(DataTable)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)

    def show_state(self, source: str, state: PollState[Any]) -> None:
        if source != "health":
            return
        previous = self.state
        self.state = state
        if state.value is not None and (previous is None or previous.value is not state.value):
            table = self.query_one(DataTable)
            with self.app.batch_update():
                for p in state.value.providers:
                    row = health_cells(p)
                    plain_row = tuple(t.plain + str(t.style) for t in row)
                    if p.provider not in self._shown:
                        table.add_row(*row, key=p.provider)
                    elif self._shown[p.provider] != plain_row:
                        for (key, _, _), cell in zip(COLUMNS, row):
                            table.update_cell(p.provider, key, cell)
                    self._shown[p.provider] = plain_row
        self.tick(self.room.clock())

    def tick(self, now: float) -> None:
        state = self.state
        if state is None:
            return
        status = Text(no_wrap=True, overflow="ellipsis")
        status.append(f"read {format_age(state.age(now))} ago")
        if state.stale(now):
            status.append(" STALE", style="bold yellow")
        if state.error:
            status.append(f" · {plain(state.error, limit=120)}", style="yellow")
        self.query_one("#health-status", Label).update(status)
