"""A KPI's last hour as a plot (textual-plotext): the readings over time (x: minutes before
now), its green and red thresholds as horizontal lines, and the release's moments (deploy
start and finish, rollback start and end) as vertical marks.

What was last drawn is kept in `drawn` (the thresholds, the marks, the points): the plot is
text drawn by plotext, and this is what a test, or a reader of the code, can check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual_plotext import PlotextPlot

from controlroom.config.models import Kpi

MINUTES = 60.0  # the window shown, in minutes before now
MARK_COLOURS = {"deploy start": "cyan", "deploy finish": "blue", "rollback start": "magenta", "rollback end": "magenta"}


@dataclass
class Drawn:
    xs: list[float] = field(default_factory=list)  # minutes before now (negative), oldest first
    ys: list[float] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)  # "green" / "red" -> value
    marks: dict[str, float] = field(default_factory=dict)  # label -> minutes before now (negative)
    y_range: tuple[float, float] = (0.0, 1.0)


class KpiPlot(PlotextPlot):
    DEFAULT_CSS = """
    KpiPlot { height: 1fr; min-height: 8; }
    """

    def __init__(self, kpi: Kpi, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self.kpi = kpi
        self.drawn = Drawn()

    def draw(self, points: list[tuple[float, float]], marks: list[tuple[str, float]], now: float) -> None:
        """`points`: (wall time, value); `marks`: (label, wall time); `now`: wall time."""
        kpi = self.kpi
        drawn = Drawn()
        for at, value in points:
            minutes = (at - now) / 60
            if -MINUTES <= minutes <= 0:
                drawn.xs.append(minutes)
                drawn.ys.append(value)
        drawn.thresholds = {"green": kpi.green.value, "red": kpi.red.value}
        drawn.marks = {label: (at - now) / 60 for label, at in marks if -MINUTES <= (at - now) / 60 <= 0}
        values = [*drawn.ys, *drawn.thresholds.values()]
        low, high = min(values), max(values)
        pad = (high - low) * 0.1 or abs(high) * 0.1 or 1.0
        drawn.y_range = (low - pad, high + pad)
        self.drawn = drawn

        plt = self.plt
        plt.clear_figure()
        plt.xlabel("minutes before now")
        plt.ylabel(kpi.unit)
        plt.xlim(-MINUTES, 0)
        plt.ylim(*drawn.y_range)
        plt.hline(drawn.thresholds["green"], "green")
        plt.hline(drawn.thresholds["red"], "red")
        low, high = drawn.y_range
        for number, (label, minutes) in enumerate(drawn.marks.items()):
            colour = MARK_COLOURS.get(label, "white")
            plt.vline(minutes, colour)
            # Ending at its line (a mark near "now" stays inside the plot); one below another.
            plt.text(label, x=minutes, y=high - (high - low) * 0.12 * number, color=colour, alignment="right")
        if drawn.xs:
            plt.plot(drawn.xs, drawn.ys, marker="braille", color="yellow")
        self.refresh()
