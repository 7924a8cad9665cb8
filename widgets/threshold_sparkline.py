"""A KPI's recent readings as one line of bars scaled to its thresholds, not to its own range.

Textual's Sparkline scales to the data's min..max, so 140.0 and 140.1 ms fill the line with
full bars and tell nothing. Here the height says where a reading stands against the KPI's
thresholds: the lower half is the green zone, the middle bar the green threshold, a full bar
the red threshold or beyond. The colour is the reading's zone (green, amber, red), so the
threshold band is marked on every bar. Each cell shows the worst reading of its bucket.

The line is plain text: the row writes it only when it changes, so readings that move within
one bar height cost no repaint.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from controlroom.config.models import Kpi
from controlroom.live.sources import kpi_colour

BARS = "▁▂▃▄▅▆▇█"
ZONE_STYLES = {"green": "green", "amber": "yellow", "red": "bold red", "unknown": "dim"}


def share(kpi: Kpi, value: float) -> float:
    """Where `value` stands, 0..1: 0 the best, 0.5 the green threshold, 1 the red threshold
    or beyond, alike for a KPI where lower is better and one where higher is better. The
    best is the green threshold mirrored about the red one (latency 500/1000 ms: 0 ms; sync
    95/90 %: 100 %), never below 0 where lower is better (an error rate of 0.1/1 %: 0 %)."""
    green, red = kpi.green.value, kpi.red.value
    if kpi.green.op == "==" or red == green:  # "== 0 incidents": met or not, nothing between
        return 0.0 if kpi.green.holds(value) else 1.0 if kpi.red.holds(value) else 0.75
    best = green - (red - green)
    if red > green and green > 0 > best:
        best = 0.0
    if (value - green) * (red - green) <= 0:  # on the green side of the green threshold
        return max(0.0, 0.5 * (value - best) / (green - best))
    return min(1.0, 0.5 + 0.5 * (value - green) / (red - green))


def height(kpi: Kpi, value: float) -> int:
    """The bar for `value`: ▁ at best, the fifth bar (▅) at the green threshold, █ at red."""
    return int(share(kpi, value) * (len(BARS) - 1) + 0.5)


def buckets(values: Sequence[float], width: int) -> list[list[float]]:
    """`values` in `width` consecutive groups, the newest in the last; fewer groups when there
    are fewer values than cells (the line grows from the left as readings arrive)."""
    if width <= 0 or not values:
        return []
    ordered = list(values)  # a deque does not slice
    count = min(width, len(ordered))
    size = len(ordered) / count
    return [ordered[round(i * size):round((i + 1) * size)] for i in range(count)]


def threshold_bars(kpi: Kpi, values: Sequence[float], width: int) -> Text:
    """The line for `values`, one cell per bucket, each its worst reading's bar and zone."""
    line = Text(no_wrap=True, overflow="crop")
    for group in buckets(values, width):
        worst = max(group, key=lambda value: share(kpi, value))
        line.append(BARS[height(kpi, worst)], style=ZONE_STYLES[kpi_colour(kpi, worst)])
    return line
