"""Fixed data, frozen clocks and file-based screen snapshots for tests/test_snapshots.py.

pytest-textual-snapshot 1.1 pins syrupy 4.8.0, which requires pytest < 9 (this project runs
pytest 9; upstream: Textualize/pytest-textual-snapshot#28, PR #24). So the screens are
compared here instead: each snapshot is the screen's SVG (what `App.export_screenshot` writes,
colours included) and its plain text (for a readable diff), committed under tests/snapshots/.
`CONTROLROOM_UPDATE_SNAPSHOTS=1 pytest tests/test_snapshots.py` rewrites them.

Nothing here touches a network or a sandbox: the app starts without pollers, without the
on-start check and without the resume prompt; snapshots of the sources arrive as `Polled`
messages, the checklist's results come from a fixed `CheckReport`, and the deployment and
rollback are journaled through the session's own commands in a temporary journal.
"""

from __future__ import annotations

import difflib
import io
import os
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from controlroom.checks.run import CheckedItem, CheckReport
from controlroom.live.polling import PollState
from controlroom.checks.base import ProbeResult
from controlroom.config.loader import LoadedConfig, load_config
from controlroom.live.sources import BreakerRow, BreakerSnapshot, HealthSnapshot, KpiReading, ProviderHealth, kpi_colour
from controlroom.checks.verdict import decide
from controlroom.widgets.messages import Polled

SNAPSHOT_DIR = Path(__file__).parent / "snapshots"
UPDATE_VARIABLE = "CONTROLROOM_UPDATE_SNAPSHOTS"

# The frozen clocks: the monotonic clock the pollers' ages are measured on, and the wall clock
# of the journal, the deploy clocks, the checklist's ages and the breakers' "since".
MONOTONIC_NOW = 50_000.0
WALL_NOW = datetime(2025, 3, 1, 3, 10, 30, tzinfo=UTC)
READ_AT = 1_740_798_630.0  # WALL_NOW as a timestamp (KpiReading.read_at is wall-clock seconds)


class FrozenDatetime(datetime):
    """`datetime` whose now() is WALL_NOW: the screens that read the wall clock directly
    (checklist ages, breaker "since") are patched to this."""

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return WALL_NOW if tz is not None else WALL_NOW.replace(tzinfo=None)


class WallClock:
    """The app's `now`: frozen, moved only by the test while it journals the deployment."""

    def __init__(self, at: datetime = WALL_NOW) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def monotonic() -> float:
    return MONOTONIC_NOW


# -- config ------------------------------------------------------------------------------

def config_toml(*, name: str = "staging", production: bool = False) -> str:
    """tests/test_config_validation.py's GOOD_CONFIG shape: fake URLs, secret *names* only."""
    return textwrap.dedent(f"""\
        runbook = "default"

        [environment]
        name = "{name}"
        production = {"true" if production else "false"}

        [environment.urls]
        supabase = "https://example.supabase.co"
        metrics = "https://prometheus.example"
        pagerduty = "https://events.pagerduty.com"
        slack_api = "https://slack.com/api"
        statuspage_page = "https://api.statuspage.io/v1/pages/kctbh9vrtdwd"

        [environment.secrets]
        database_dsn = "CR_DATABASE_DSN"
        supabase_api_key = "SUPABASE_ANON_KEY"
        burst_api_key = "SUPABASE_BURST_KEY"
        slack_webhook_url = "SLACK_WEBHOOK_URL"
        pagerduty_routing_key = "PAGERDUTY_ROUTING_KEY"
        statuspage_api_key = "STATUSPAGE_API_KEY"
        """)


def make_config(directory: Path, *, name: str = "staging", production: bool = False) -> LoadedConfig:
    path = directory / "controlroom.toml"
    path.write_text(config_toml(name=name, production=production))
    return load_config(path, environ={})  # no secret of the real environment leaks in


# -- the checklist -----------------------------------------------------------------------

# The items an operator attests here: the manual ones, and on-call, which this config does not
# probe (it names no PagerDuty URL or key).
MANUAL = ("secret-scanning", "vulnerabilities", "backups", "emergency-procedures", "on-call")

EVIDENCE: dict[str, str] = {
    "token-zombie": "revoked token answered 401 after rotation (3 attempts)",
    "credential-expiry": "0 POS credentials expire within 7 days (612 checked)",
    "cors": "preflight from https://app.example.com: allowed; evil.example: refused",
    "rate-limits": "429 after 61 of 130 requests in 0.4 s",
    "migrations": "42 migrations applied, latest 20250228_rotation_index",
    "supabase-rest": "HTTP 200 in 38 ms",
    "edge-functions": "rotate-token: HTTP 200 in 112 ms",
    "circuit-breakers": "0 open, 0 half-open of 612",
    "breaker-config": "all 612 at 10 failures / 15 min",
    "monitoring": "4 of 4 rules loaded, health ok, none firing (21 ms)",
    "fudo": "HTTP 200 in 64 ms",
    "fudo-rotation": "99.4 % of 1,208 rotations in the last hour",
    "maxirest": "HTTP 200 in 71 ms",
    "bistrsoft": "HTTP 200 in 58 ms",
    "sync-status": "0 locations failed > 4 h",
    "mttr": "MTTR 47.5 min over 12 incidents",
    "api-latency": "212.4 ms (< 500 ms)",
    "error-rate": "0.02 % (< 0.1 %)",
}

ATTESTED_BY = "alice (from 10.0.0.5)"


def check_results(config: LoadedConfig, overrides: dict[str, tuple[str, str]] | None = None,
                  *, attested: bool = True) -> dict[str, ProbeResult]:
    """A result for every checklist item: the pass evidence above (manual items attested by
    alice, or pending), with `overrides` as item id -> (status, evidence)."""
    overrides = overrides or {}
    results: dict[str, ProbeResult] = {}
    for index, (_, item) in enumerate(config.runbook.items()):
        started = WALL_NOW - timedelta(seconds=40 + index)
        if item.id in overrides:
            status, evidence = overrides[item.id]
            results[item.id] = ProbeResult(item.id, status, evidence, 120.0, started)  # type: ignore[arg-type]
        elif item.id in MANUAL:
            if attested:
                at = WALL_NOW - timedelta(minutes=12)
                results[item.id] = ProbeResult(item.id, "pass", f"attested by {ATTESTED_BY} at 02:58:30 UTC", 0.0,
                                               at, attested_by=ATTESTED_BY, attested_at=at)
            else:
                results[item.id] = ProbeResult(item.id, "pending", "waiting for an operator to attest (a)", 0.0, started)
        else:
            results[item.id] = ProbeResult(item.id, "pass", EVIDENCE.get(item.id, "ok"), 80.0 + index, started)
    return results


def check_report(config: LoadedConfig, results: dict[str, ProbeResult]) -> CheckReport:
    """What `run_checklist` would have returned for these results."""
    return CheckReport(
        environment=config.environment.name,
        production=config.environment.production,
        runbook=config.runbook.name,
        checks=[CheckedItem(section, item, results[item.id]) for section, item in config.runbook.items()],
        verdict=decide(config.runbook, results),
        started_at=WALL_NOW - timedelta(seconds=45),
        duration_ms=2_140.0,
    )


# -- the sources -------------------------------------------------------------------------

# KPI id -> recent values, oldest first; the last is the current reading.
KPI_HISTORY: dict[str, list[float]] = {
    "rotation-success": [99.1, 99.3, 98.9, 99.4, 99.6, 99.2, 98.7, 99.0, 99.5, 99.4, 99.3, 99.42],
    "api-latency-p95": [310, 295, 340, 388, 420, 512, 640, 702, 655, 580, 530, 612],
    "error-rate": [0.04, 0.05, 0.03, 0.06, 0.08, 0.12, 0.21, 0.34, 0.28, 0.19, 0.14, 0.16],
    "pos-sync-success": [97.2, 96.8, 95.4, 93.1, 91.0, 89.2, 88.4, 87.9, 88.6, 89.1, 88.0, 87.5],
    "mttr": [52, 51, 50, 49, 49, 48, 48, 48, 47.5, 47.5, 47.5, 47.5],
    "breaker-triggers": [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 3],
    "security-incidents": [0] * 12,
    "locations-affected": [0.2, 0.2, 0.3, 0.5, 0.8, 1.1, 1.6, 2.0, 2.3, 2.1, 2.0, 2.12],
}
# A source whose last polls failed: it keeps its last value, which is old, and the error.
DEAD_KPI = "api-latency-p95"
DEAD_ERROR = "ConnectError: [Errno 111] Connection refused"
DEAD_AGE_S = 95.0


def kpi_states(config: LoadedConfig) -> list[list[tuple[str, PollState[KpiReading]]]]:
    """Rounds of (source, state): round n holds every KPI's n-th reading, so a KpiRow on
    screen collects the history for its sparkline."""
    rounds: list[list[tuple[str, PollState[KpiReading]]]] = []
    kpis = {kpi.id: kpi for kpi in config.runbook.kpis}
    length = max(len(values) for values in KPI_HISTORY.values())
    for n in range(length):
        batch: list[tuple[str, PollState[KpiReading]]] = []
        for kpi_id, values in KPI_HISTORY.items():
            kpi = kpis[kpi_id]
            back = length - 1 - n  # readings before the last, in intervals
            value = float(values[n])
            reading = KpiReading(kpi_id, value, kpi_colour(kpi, value), READ_AT - back * kpi.poll_s)
            value_at = MONOTONIC_NOW - 3.0 - back * kpi.poll_s
            state: PollState[KpiReading] = PollState(f"kpi:{kpi_id}", kpi.poll_s, value=reading, value_at=value_at,
                                                     polls=n + 1, last_duration_s=0.02)
            if kpi_id == DEAD_KPI and n == length - 1:
                state = PollState(f"kpi:{kpi_id}", kpi.poll_s, value=reading, value_at=MONOTONIC_NOW - DEAD_AGE_S,
                                  error=DEAD_ERROR, error_at=MONOTONIC_NOW - 2.0, failures=4, polls=n + 5,
                                  last_duration_s=5.0)
            batch.append((f"kpi:{kpi_id}", state))
        rounds.append(batch)
    return rounds


MARKUP_NAME = "[red]x[/red]"
ESCAPE_NAME = "Bar \x1b[31mRojo"


def breaker_rows() -> tuple[BreakerRow, ...]:
    """40 locations: three open (one named with Rich markup, one with an ANSI escape), two
    half-open, the rest closed."""
    rows: list[BreakerRow] = []

    def add(number: int, name: str, provider: str, state: str, failures: int, minutes_ago: float) -> None:
        changed = WALL_NOW - timedelta(minutes=minutes_ago)
        rows.append(BreakerRow(f"loc-{number:04d}", name, provider, state, failures, 10, 15, changed,
                               changed if state != "closed" else None))

    add(17, MARKUP_NAME, "fudo", "open", 12, 4)
    add(23, ESCAPE_NAME, "fudo", "open", 11, 7.5)
    add(31, "Parrilla Don Julio — Palermo Soho (sucursal 2)", "maxirest", "open", 10, 22)
    add(8, "Café Tortoni", "bistrsoft", "half_open", 6, 1)
    add(44, "La Cabrera Norte", "fudo", "half_open", 4, 3)
    names = ["El Preferido", "Don Carlos", "Anchoíta", "Proper", "Gran Dabbang", "Mishiguene", "Chuí",
             "Corte Comedor", "Narda Comedor", "Salvaje Bakery", "Fogón Asado", "Tegui", "Aramburu",
             "El Obrero", "La Mezzetta", "Pizzería Güerrín", "El Cuartito", "Las Cuartetas", "Sarkis",
             "Lo de Jesús", "Osaka", "Elena", "Julia", "Crizia", "Oviedo", "Mengano", "Nicky Harrison",
             "Florería Atlántico", "Victoria Brown", "Presidente", "Uptown", "Boticario", "Frank's", "Tres Monos",
             "Verne"]
    providers = ("fudo", "maxirest", "bistrsoft")
    for offset, name in enumerate(names):
        add(100 + offset, name, providers[offset % 3], "closed", offset % 3, 60 * 24 * (1 + offset % 5) + offset)
    return tuple(rows)


def breaker_state() -> PollState[BreakerSnapshot]:
    snapshot = BreakerSnapshot(breaker_rows(), READ_AT - 2)
    return PollState("breakers", 5.0, value=snapshot, value_at=MONOTONIC_NOW - 2.0, polls=37, last_duration_s=0.04)


def health_state() -> PollState[HealthSnapshot]:
    providers = (
        ProviderHealth("fudo", 2_412, 2_389, 23, 2, 88.4, 47.5),
        ProviderHealth("maxirest", 1_108, 1_108, 0, 0, 99.2, 131.0),
        ProviderHealth("bistrsoft", 631, 630, 1, 0, 97.9, None),
    )
    return PollState("health", 10.0, value=HealthSnapshot(providers, READ_AT - 4), value_at=MONOTONIC_NOW - 4.0,
                     polls=18, last_duration_s=0.08)


async def deliver_sources(pilot: Any, config: LoadedConfig) -> None:
    """Post every source's fixed states as the pollers would, one round at a time (a queued
    Polled for a source is superseded by the next, so each round is processed first)."""
    app = pilot.app
    for batch in kpi_states(config):
        for source, state in batch:
            app.post_message(Polled(source, state))
        await pilot.pause()
    app.post_message(Polled("breakers", breaker_state()))
    app.post_message(Polled("health", health_state()))
    await pilot.pause()


# -- capturing ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Shot:
    svg: str
    text: str


def capture(app: Any) -> Shot:
    """The screen as `App.export_screenshot(simplify=True)` draws it (the SVG
    pytest-textual-snapshot compares), and the same frame as plain text."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                      record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens, simplify=True))
    text = "\n".join(line.rstrip() for line in console.export_text(clear=False).splitlines()) + "\n"
    return Shot(console.export_svg(title=app.title), text)


def updating() -> bool:
    return os.environ.get(UPDATE_VARIABLE, "") not in ("", "0")


def compare(name: str, shot: Shot, failures_dir: Path) -> None:
    """Assert the shot matches tests/snapshots/<name>.{txt,svg}; with the update variable set,
    write them instead."""
    text_path, svg_path = SNAPSHOT_DIR / f"{name}.txt", SNAPSHOT_DIR / f"{name}.svg"
    if updating():
        SNAPSHOT_DIR.mkdir(exist_ok=True)
        text_path.write_text(shot.text, encoding="utf-8")
        svg_path.write_text(shot.svg, encoding="utf-8")
        return
    if not text_path.exists() or not svg_path.exists():
        raise AssertionError(f"no snapshot {name}: run with {UPDATE_VARIABLE}=1 to create it, then review it")
    failures_dir.mkdir(parents=True, exist_ok=True)
    expected_text = text_path.read_text(encoding="utf-8")
    if shot.text != expected_text:
        (failures_dir / f"{name}.txt").write_text(shot.text, encoding="utf-8")
        (failures_dir / f"{name}.svg").write_text(shot.svg, encoding="utf-8")
        diff = "".join(difflib.unified_diff(expected_text.splitlines(keepends=True), shot.text.splitlines(keepends=True),
                                            f"tests/snapshots/{name}.txt", "this run"))
        raise AssertionError(f"{name}: the screen's text changed (this run's files: {failures_dir})\n{diff}")
    if shot.svg != svg_path.read_text(encoding="utf-8"):
        (failures_dir / f"{name}.svg").write_text(shot.svg, encoding="utf-8")
        raise AssertionError(f"{name}: same text, different styles or colours; this run's SVG: "
                             f"{failures_dir / (name + '.svg')} (open it next to {svg_path})")
