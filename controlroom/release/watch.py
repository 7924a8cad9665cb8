"""The watch after a successful finish: the seed's "Real-Time KPIs (first 30 minutes)".

For `deployment.watch_minutes` after a deployment finishes as a success, every poll of a
real-time KPI is judged: off its target (or red, with `breach_on = "red"`) for
`breach_polls` polls in a row is a breach; so is a circuit breaker opening (more open than when
the watch started). A breach is journaled (`watch_breach`) once per episode — the KPI must be
back on target before it can breach again — and the control room raises the alarm and
recommends the rollback, its plan and the provider to disable.

Nothing here reads a clock or does I/O: the engine passes the readings and the time in, and
journals what this returns. The window itself comes from the journal (`watch_started`,
`watch_ended`), so a reopened or watching control room shows the same watch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controlroom.config.models import Kpi, Runbook, Threshold
from controlroom.live.sources import BreakerCounts, BreakerSnapshot, HealthSnapshot, KpiReading, kpi_colour
from controlroom.release.journal import Record
from controlroom.release.state import format_duration


@dataclass(frozen=True)
class WatchWindow:
    """The watch as the journal tells it."""

    started_at: datetime
    until: datetime
    ended_at: datetime | None
    breaches: tuple[Record, ...]

    def active(self, now: datetime) -> bool:
        return self.ended_at is None and now < self.until

    def remaining_s(self, now: datetime) -> float:
        return max(0.0, (self.until - now).total_seconds())


def watch_window(records: Sequence[Record]) -> WatchWindow | None:
    """The latest watch of the journal (None: none started). A rollback ends it."""
    window: WatchWindow | None = None
    for record in records:
        if record.kind == "watch_started":
            until = record.at + timedelta(minutes=float(record.data.get("minutes", 0)))
            window = WatchWindow(record.at, until, None, ())
        elif window is None:
            continue
        elif record.kind == "watch_breach" and window.ended_at is None:
            window = WatchWindow(window.started_at, window.until, None, (*window.breaches, record))
        elif record.kind == "watch_ended" and window.ended_at is None:
            window = WatchWindow(window.started_at, window.until, record.at, window.breaches)
    return window


def alarms(records: Sequence[Record]) -> list[Record]:
    """The breaches that call for the rollback now, first first: those of the latest watch,
    unless a rollback started after them. The first is the alarm; the others follow from it."""
    open_breaches: list[Record] = []
    for record in records:
        if record.kind == "watch_breach":
            open_breaches.append(record)
        elif record.kind in ("rollback_started", "watch_started", "watch_ended"):
            open_breaches = []  # a rollback answered it; a watch that ended is over, its breaches in the report
    return open_breaches


def alarm(records: Sequence[Record]) -> Record | None:
    """The breach that raised the alarm (the first of the watch), or None."""
    breaches = alarms(records)
    return breaches[0] if breaches else None


@dataclass
class _Streak:
    polls: int = 0
    since: datetime | None = None
    raised: bool = False  # this episode has raised its alarm


@dataclass
class Watch:
    """Judges the readings of one watch; `breach_polls` and the KPIs come from the runbook.
    `breached` are the watch's journaled breaches: a control room that reopens (or takes over)
    does not raise again what was raised."""

    runbook: Runbook
    # provider -> breakers not closed when the watch started (a GO deployment: none)
    baseline_open: Mapping[str, int] | None = None
    breached: Iterable[Mapping[str, Any]] = ()
    _streaks: dict[str, _Streak] = field(default_factory=dict)
    _providers_raised: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for breach in self.breached:
            if breach.get("kind") == "kpi":
                self._streaks[str(breach.get("kpi_id"))] = _Streak(raised=True)
            else:
                self._providers_raised.update(str(p) for p in (breach.get("by_provider") or {}))

    @property
    def kpis(self) -> dict[str, Kpi]:
        return {kpi.id: kpi for kpi in self.runbook.kpis if kpi.window == "realtime"}

    def kpi(self, reading: KpiReading, at: datetime) -> dict[str, Any] | None:
        """The `watch_breach` data when this reading completes a breach, else None."""
        kpi = self.kpis.get(reading.kpi_id)
        if kpi is None or reading.value is None:
            return None  # an unanswered poll neither breaks nor extends a streak
        streak = self._streaks.setdefault(kpi.id, _Streak())
        colour = kpi_colour(kpi, reading.value)
        breached = colour == "red" if self.runbook.deployment.breach_on == "red" else colour in ("amber", "red")
        if not breached:
            self._streaks[kpi.id] = _Streak()
            return None
        streak.polls += 1
        streak.since = streak.since or at
        if streak.raised or streak.polls < self.runbook.deployment.breach_polls:
            return None
        streak.raised = True
        limit = kpi.red if self.runbook.deployment.breach_on == "red" else kpi.green
        threshold = _threshold(kpi, limit.op, limit.value)
        lasted = max(0.0, (at - streak.since).total_seconds())
        return {
            "kind": "kpi", "kpi_id": kpi.id, "title": kpi.title, "value": reading.value, "unit": kpi.unit,
            "target": f"{kpi.green.op} {_value(kpi.green.value, kpi.unit)}", "breached": threshold,
            "polls": streak.polls, "since": streak.since.isoformat(), "lasted_s": round(lasted, 1),
            "what": f"{kpi.title} {_value(reading.value, kpi.unit)} {threshold}, {streak.polls} polls in a row"
                    + (f" ({format_duration(lasted)})" if lasted >= 1 else ""),
        }

    def breakers(self, snapshot: BreakerSnapshot | BreakerCounts, at: datetime) -> dict[str, Any] | None:
        """The `watch_breach` data when breakers opened since the watch started, else None."""
        opened = open_breakers(snapshot)
        baseline = self.baseline_open or {}
        grown = {provider: count - baseline.get(provider, 0) for provider, count in opened.items()
                 if count > baseline.get(provider, 0) and provider not in self._providers_raised}
        if not grown:
            return None  # once per provider and watch: a breaker cycling open / half-open is one alarm
        self._providers_raised.update(grown)
        provider, count = max(grown.items(), key=lambda kv: (kv[1], kv[0]))
        total = sum(grown.values())
        return {
            "kind": "breakers", "provider": provider, "opened": total, "by_provider": grown,
            "what": f"{total} circuit breaker{'s' if total != 1 else ''} opened"
                    + (f" ({count} {provider})" if provider else "") + " since the deployment finished",
        }


def open_breakers(snapshot: BreakerSnapshot | BreakerCounts | None) -> dict[str, int]:
    """provider -> breakers not closed (open or half-open: a half-open one is still failing over)."""
    if snapshot is None:
        return {}
    if isinstance(snapshot, BreakerCounts):
        return {provider: sum(n for state, n in states.items() if state != "closed")
                for provider, states in snapshot.by_provider.items()
                if any(n for state, n in states.items() if state != "closed")}
    return dict(Counter(row.provider for row in snapshot.rows if row.state != "closed"))


def sync_percents(health: HealthSnapshot | None) -> dict[str, float]:
    """provider -> sync success (%), for the providers that have a figure."""
    if health is None:
        return {}
    return {p.provider: p.sync_success_percent for p in health.providers if p.sync_success_percent is not None}


def suspect_provider(health: HealthSnapshot | None, sync_green: Threshold | None, sync_red: Threshold | None,
                     baseline: Mapping[str, float] | None) -> str:
    """The provider a KPI alarm points at, else '': a KPI says how much is wrong, not where,
    so a provider is named only when the fleet's health says so: one whose sync success is off
    `sync_green` now and fell the most since the watch began (`baseline`, journaled then).
    One that was already off target then is named only if it has fallen into `sync_red`
    since: a small provider whose few syncs sat at 92 % all along is not what just broke.
    Without a baseline (a journal from before it was kept), the lowest one off target."""
    if sync_green is None:
        return ""
    before = baseline or {}

    def broke(now: float, start: float | None) -> bool:
        if sync_green.holds(now):
            return False
        if start is None or sync_green.holds(start):
            return True
        return sync_red is not None and sync_red.holds(now) and not sync_red.holds(start)

    now = sync_percents(health)
    suspects = {provider: percent for provider, percent in now.items()
                if broke(percent, start if isinstance(start := before.get(provider), (int, float)) else None)}
    if not suspects:
        return ""

    def fall(provider: str) -> tuple[float, float]:
        start = before.get(provider)
        return (start - suspects[provider] if isinstance(start, (int, float)) else 0.0, -suspects[provider])

    return max(sorted(suspects), key=fall)


def kpi_values(readings: Iterable[KpiReading]) -> dict[str, float | None]:
    return {reading.kpi_id: reading.value for reading in readings}


def _threshold(kpi: Kpi, op: str, value: float) -> str:
    """`> 0.1 %` reads as the limit it broke: the target 'error rate < 0.1 %' is broken at 0.42 %."""
    broken = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}.get(op, op)
    if kpi.red.op == op and kpi.red.value == value:  # a red line says where it is broken already
        broken = op
    return f"{broken} {_value(value, kpi.unit)}"


def _value(value: float, unit: str) -> str:
    text = f"{value:g}"
    return f"{text} {unit}".strip() if unit not in ("%",) else f"{text} %"
