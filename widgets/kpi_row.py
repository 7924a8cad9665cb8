"""One KPI: title, value (coloured, with a symbol so colour is not the only signal), its
thresholds, its recent values as bars scaled to those thresholds, and the age of the last reading. A dead source
keeps its last value and shows its age and the error underneath."""

from __future__ import annotations

from collections import deque
from functools import cached_property

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label

from controlroom.live.polling import PollState, format_age
from controlroom.config.models import Kpi
from controlroom.widgets.changes import set_content
from controlroom.live.sources import SPARKLINE_POINTS, KpiReading, plain
from controlroom.widgets.threshold_sparkline import threshold_bars

SYMBOLS = {"green": "✓", "amber": "!", "red": "✗", "unknown": "?"}
HISTORY = SPARKLINE_POINTS
SPARK_WIDTH = 16  # before the first layout; then as wide as the row leaves it (up to HISTORY cells)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    number = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{number}{' ' if unit and unit != '%' else ''}{unit}"


class Spark(Label):
    """The bars of a KPI's recent readings, one cell per bucket of readings, as many cells as
    the row leaves the spark: drawn again when its width changes."""

    def __init__(self, kpi: Kpi, history: deque[float]) -> None:
        super().__init__("", classes="spark")
        self.kpi, self.history = kpi, history

    def draw(self) -> None:
        set_content(self, threshold_bars(self.kpi, self.history, self.size.width or SPARK_WIDTH))

    def on_resize(self) -> None:
        self.draw()


class KpiRow(Vertical):
    DEFAULT_CSS = """
    KpiRow { height: auto; }
    KpiRow > Horizontal { height: 1; }
    KpiRow .title { width: 3fr; min-width: 22; max-width: 48; height: 1; }
    KpiRow .value { width: 13; height: 1; text-align: right; text-style: bold; }
    KpiRow .threshold { width: 15; height: 1; color: $text-muted; padding-left: 1; }
    KpiRow .spark { width: 2fr; min-width: 12; max-width: 60; height: 1; margin-right: 1; }
    KpiRow .age { width: 10; height: 1; }
    KpiRow .error { height: 1; color: $warning; padding-left: 2; display: none; }
    KpiRow.-error .error { display: block; }
    KpiRow.-stale .age { color: $warning; text-style: bold; }
    KpiRow.-selected > Horizontal { background: $boost; }
    KpiRow.-selected .title { text-style: bold reverse; }
    KpiRow .value.-green { color: $success; }
    KpiRow .value.-amber { color: $warning; }
    KpiRow .value.-red { color: $error; }
    KpiRow .value.-unknown { color: $text-muted; }
    """

    def __init__(self, kpi: Kpi) -> None:
        super().__init__(id=f"kpi-{kpi.id}")
        self.kpi = kpi
        self.history: deque[float] = deque(maxlen=HISTORY)
        self.state: PollState[KpiReading] | None = None
        self._last_read_at: float | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(Text(plain(self.kpi.title, limit=60), no_wrap=True, overflow="ellipsis"), classes="title")
            yield Label("waiting", classes="value -unknown")
            unit = self.kpi.unit if self.kpi.unit == "%" else ""
            green, red = str(self.kpi.green).replace(" ", ""), str(self.kpi.red).replace(" ", "")
            yield Label(Text(f"G{green}{unit} R{red}{unit}", no_wrap=True, overflow="ellipsis"), classes="threshold")
            yield Spark(self.kpi, self.history)
            yield Label("never", classes="age")
        yield Label("", classes="error")

    # Its labels, found once: a poll and every second's tick write them (a CSS query each
    # time was most of an idle KPI view's work).
    @cached_property
    def _value(self) -> Label:
        return self.query_one(".value", Label)

    @cached_property
    def _spark(self) -> Spark:
        return self.query_one(Spark)

    @cached_property
    def _error(self) -> Label:
        return self.query_one(".error", Label)

    @cached_property
    def _age(self) -> Label:
        return self.query_one(".age", Label)

    def show(self, state: PollState[KpiReading], now: float) -> None:
        """A new state: the value, the bars, the error — each written only when what it shows
        changes (a poll at 1 Hz that changes nothing visible costs no repaint)."""
        self.state = state
        reading = state.value
        value_label = self._value
        if reading is not None:
            if reading.read_at != self._last_read_at:
                if reading.history and not self.history:
                    self.history.extend(reading.history)  # backfilled (query_range): full from the start
                if reading.value is not None:
                    self.history.append(reading.value)
                    self._spark.draw()
            self._last_read_at = reading.read_at
            colour = reading.colour
            set_content(value_label, Text(f"{SYMBOLS[colour]} {format_value(reading.value, self.kpi.unit)}", no_wrap=True))
            if not value_label.has_class(f"-{colour}"):
                value_label.set_classes(f"value -{colour}")
        error = state.error or (reading.error if reading is not None and reading.value is None else None)
        self.set_class(bool(error), "-error")
        set_content(self._error, Text(f"└ {plain(error or '', limit=70)}", no_wrap=True,
                                                          overflow="ellipsis"))
        self.tick(now)

    def tick(self, now: float) -> None:
        state = self.state
        if state is None:
            return
        stale = state.stale(now)
        self.set_class(stale and state.value is not None, "-stale")
        age = format_age(state.age(now))
        set_content(self._age, Text(f"{age}{' STALE' if stale and state.value is not None else ''}",
                                                        no_wrap=True))
