"""Seeds the sandbox database with a realistic fleet of restaurant locations.

The release checklist is answered by SQL (open breakers, locations failed > 4 h, MTTR,
expiring credentials, migrations, rotation and sync success). The seeder writes data whose
answers are exactly what the scenario promises, and is consistent with itself: an open
breaker is backed by the failed syncs that opened it, a failed location's sync events fail
from `sync_failed_since` on, a breaker's failure_count is its failures in the window.

Everything is generated in Python from one `random.Random(seed)` (deterministic for a given
seed and `now`) and written with COPY in a single transaction.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import asyncpg

from controlroom.sandbox.world.scenarios import PROVIDER_TITLES, PROVIDERS, Scenario

PROVIDER_SHARES: dict[str, float] = {"fudo": 0.45, "maxirest": 0.35, "bistrsoft": 0.20}
DEPLOYED_VERSION = "v2.14.0"
MIGRATIONS = 40

# The checklist's breaker rule (10 failures / 15 min) and the sandbox's short cool-down.
BREAKER_THRESHOLD = 10
BREAKER_WINDOW = timedelta(minutes=15)
SANDBOX_COOLDOWN = timedelta(seconds=60)

SYNC_PERIOD = timedelta(minutes=5)      # each location syncs about every 5 minutes
SYNC_HISTORY = timedelta(hours=1)       # pos_sync_events are seeded for the last hour
ROTATIONS_PER_DAY = 3                   # credential rotations per location per day ...
RECENT_ROTATIONS = 1                    # ... plus this many in the last hour, so the 30-min
                                        # KPI and the 1-hour checks have a sample worth judging
ROTATION_FAILURE_RATE = 0.004
ROTATION_LATENCY_MS: dict[str, int] = {"fudo": 170, "maxirest": 210, "bistrsoft": 240}  # medians

TIMEOUT_S = 60.0

# sandbox.state key (besides 'scenario', 'failing_providers', 'deployed_version'): locations
# whose syncs always fail, so the simulator keeps the scenario's broken locations broken.
FAILING_LOCATIONS_KEY = "failing_locations"

SYNC_ERRORS: tuple[str, ...] = (
    "timeout after 10000 ms",
    "HTTP 502 Bad Gateway from provider",
    "connection reset by peer",
    "HTTP 429 Too Many Requests from provider",
)
ROTATION_ERRORS: tuple[str, ...] = (
    "provider rejected refresh token (HTTP 401)",
    "timeout after 10000 ms",
    "HTTP 503 Service Unavailable from provider",
)

_KINDS = (
    "Parrilla", "Bodegón", "Pizzería", "Café", "Cervecería", "Confitería", "Restaurante",
    "Cantina", "Heladería", "Rotisería", "Bar", "Empanadas", "Chivitería", "Bistró",
    "Panadería", "Pulpería",
)
_NAMES = (
    "Don Ernesto", "La Tranquera", "El Fogón", "Los Abuelos", "La Vieja Estación",
    "El Mirador", "Doña Amalia", "La Rambla", "El Puerto", "Los Troncos", "La Ochava",
    "El Almacén", "Lo de Tito", "La Farola", "El Ombú", "La Posta", "El Rancho",
    "Los Hermanos", "La Cumbre", "El Aljibe", "Don Anselmo", "La Carreta", "El Tano",
    "Mi Barrio", "La Estancia", "El Molino", "Las Tejas", "El Faro", "Los Sauces",
    "La Querencia", "Don Julio", "La Esquina", "El Gaucho", "Doña Clara", "El Patio",
)
_PLACES = (
    "Palermo", "Recoleta", "San Telmo", "Belgrano", "Caballito", "Almagro", "Villa Crespo",
    "Núñez", "Colegiales", "Boedo", "Puerto Madero", "Chacarita", "Barracas",
    "Villa Urquiza", "Flores", "Nueva Córdoba", "Rosario Centro", "Mendoza Centro",
    "La Plata", "Mar del Plata", "Pocitos", "Ciudad Vieja", "Carrasco", "Cordón",
    "Punta Carretas", "Malvín", "Punta del Este", "Colonia del Sacramento",
)
_MIGRATION_NAMES = (
    "create_pos_integrations_location", "create_rotation_cb", "create_pos_rotation_metrics",
    "add_provider_index", "create_pos_sync_events", "add_sync_state", "create_incidents",
    "add_credential_expires_at", "create_rotation_cb_events", "add_token_fingerprint",
    "backfill_token_fingerprint", "index_rotation_metrics_recorded_at", "add_sync_failed_since",
    "add_location_name", "add_incident_severity", "add_incident_security_flag",
    "create_api_tokens", "add_rotated_at", "index_sync_events_at", "add_window_minutes",
    "add_failure_threshold", "drop_legacy_sync_log", "add_bistrsoft_provider",
    "add_maxirest_webhook_secret", "create_provider_settings", "add_fudo_branch_id",
    "add_opened_at", "index_rotation_cb_state", "add_updated_at_trigger",
    "create_audit_log", "add_audit_actor", "partition_sync_events", "add_rotation_error",
    "add_latency_ms", "create_feature_flags", "add_location_timezone",
    "backfill_location_timezone", "add_menu_sync_cursor", "add_order_sync_cursor",
    "add_credential_scope", "add_refresh_token_hash", "drop_plaintext_refresh_token",
)
_INCIDENT_SUMMARIES = (
    "{p} sync timeouts for {place} locations",
    "{p} credential rotation failing with 401 for a batch of locations",
    "{p} webhook deliveries delayed",
    "Elevated latency on pos-credentials-rotation ({p})",
    "{p} menu sync stuck after provider API change",
    "Order sync backlog for {p} locations in {place}",
)


@dataclass
class _Location:
    id: str
    name: str
    provider: str
    expires_at: datetime
    failed_since: datetime | None = None       # its syncs fail from then on
    stuck: bool = False                        # stays failing under the simulator
    breaker_failures: list[datetime] = field(default_factory=list)   # seeded open breaker
    breaker_transitions: list[tuple[datetime, str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class FleetSummary:
    """What was seeded; the tests verify the data by SQL, not through this."""

    scenario: str
    now: datetime
    locations: int
    by_provider: dict[str, int]
    open_breakers: tuple[str, ...]
    failed_over_4h: tuple[str, ...]
    expiring_credentials: tuple[str, ...]
    sync_events: int
    rotations: int
    breaker_events: int
    incidents: int
    mttr_minutes: float
    migrations_staging: int
    migrations_production: int
    deployed_version: str
    elapsed_s: float


async def seed_fleet(
    conn: asyncpg.Connection,
    scenario: Scenario,
    *,
    locations: int = 300,
    seed: int = 7,
    now: datetime | None = None,
) -> FleetSummary:
    """Replace the fleet tables' contents with a fleet seeded for `scenario`."""
    started = time.perf_counter()
    now = now or datetime.now(timezone.utc)
    rng = random.Random(seed)
    fleet = _plan_locations(rng, locations, now)
    _assign_roles(rng, fleet, scenario, now)
    syncs, location_rows, breaker_rows, breaker_events = _sync_history(rng, fleet, scenario, now)
    breaker_events += _breaker_history(rng, fleet, breaker_rows, now)
    rotations = _rotations(rng, fleet, scenario, now)
    incidents = _incidents(rng, scenario.mttr_minutes, now)
    migrations = _migrations(rng, scenario.migrations_behind, now)
    state = {
        "scenario": scenario.name,
        "failing_providers": [],
        "deployed_version": DEPLOYED_VERSION,
        FAILING_LOCATIONS_KEY: sorted(loc.id for loc in fleet if loc.stuck),
    }
    async with conn.transaction():
        await _write(conn, location_rows, breaker_rows, breaker_events, syncs, rotations,
                     incidents, migrations, state)
    return FleetSummary(
        scenario=scenario.name,
        now=now,
        locations=len(fleet),
        by_provider={p: sum(loc.provider == p for loc in fleet) for p in PROVIDERS},
        open_breakers=tuple(loc.id for loc in fleet if loc.breaker_failures),
        failed_over_4h=tuple(
            loc.id for loc in fleet
            if loc.failed_since is not None and now - loc.failed_since > timedelta(hours=4)
        ),
        expiring_credentials=tuple(
            loc.id for loc in fleet if loc.expires_at - now < timedelta(days=7)
        ),
        sync_events=len(syncs),
        rotations=len(rotations),
        breaker_events=len(breaker_events),
        incidents=len(incidents),
        mttr_minutes=sum((r - o).total_seconds() for o, r, *_ in incidents) / 60 / len(incidents),
        migrations_staging=sum(m[0] == "staging" for m in migrations),
        migrations_production=sum(m[0] == "production" for m in migrations),
        deployed_version=DEPLOYED_VERSION,
        elapsed_s=time.perf_counter() - started,
    )


# -- locations and their roles ---------------------------------------------------------


def _provider_counts(n: int) -> dict[str, int]:
    fudo = round(n * PROVIDER_SHARES["fudo"])
    maxirest = round(n * PROVIDER_SHARES["maxirest"])
    return {"fudo": fudo, "maxirest": maxirest, "bistrsoft": n - fudo - maxirest}


def location_name(rng: random.Random) -> str:
    return f"{rng.choice(_KINDS)} {rng.choice(_NAMES)} — {rng.choice(_PLACES)}"


def _plan_locations(rng: random.Random, n: int, now: datetime) -> list[_Location]:
    if n < 1:
        raise ValueError("a fleet needs at least one location")
    fleet = []
    for provider, count in _provider_counts(n).items():
        for number in range(1, count + 1):
            expires = now + timedelta(days=rng.uniform(10, 90))
            fleet.append(_Location(f"{provider}-{number:06d}", location_name(rng), provider, expires))
    return fleet


def _assign_roles(rng: random.Random, fleet: list[_Location], scenario: Scenario, now: datetime) -> None:
    """Pick disjoint sets of locations for the scenario's broken parts."""
    maxirest = [loc for loc in fleet if loc.provider == "maxirest"]
    if scenario.open_breakers > len(maxirest):
        raise ValueError(f"{scenario.name} needs {scenario.open_breakers} MaxiRest locations")
    for loc in rng.sample(maxirest, scenario.open_breakers):
        _open_breaker(rng, loc, now)
    recently_failed = max(1, len(fleet) // 150)   # realistic noise, well under the 4 h bar
    pool = [loc for loc in fleet if not loc.breaker_failures]
    wanted = scenario.failed_sync_over_4h + recently_failed + scenario.expiring_credentials
    if wanted > len(pool):
        raise ValueError(f"{scenario.name} needs more than {len(fleet)} locations")
    chosen = rng.sample(pool, wanted)
    for i, loc in enumerate(chosen):
        if i < scenario.failed_sync_over_4h:
            loc.failed_since = now - timedelta(hours=rng.uniform(4.5, 30))
            loc.stuck = True
        elif i < scenario.failed_sync_over_4h + recently_failed:
            loc.failed_since = now - timedelta(minutes=rng.uniform(20, 180))
        else:
            loc.expires_at = now + timedelta(days=rng.uniform(1, 6))


def _open_breaker(rng: random.Random, loc: _Location, now: datetime) -> None:
    """Ten failures 30 s apart opened it; since then each half-open trial failed again."""
    start = now - timedelta(seconds=rng.uniform(540, 660))
    failures = [start + timedelta(seconds=30 * i) for i in range(BREAKER_THRESHOLD)]
    transitions = [(failures[-1], "closed", "open")]
    trial = SANDBOX_COOLDOWN + timedelta(seconds=7)
    while failures[-1] + trial < now:
        transitions.append((failures[-1] + SANDBOX_COOLDOWN + timedelta(seconds=5), "open", "half_open"))
        failures.append(failures[-1] + trial)
        transitions.append((failures[-1], "half_open", "open"))
    loc.failed_since, loc.stuck = start, True
    loc.breaker_failures, loc.breaker_transitions = failures, transitions


# -- syncs, breakers -------------------------------------------------------------------


def _sync_history(rng: random.Random, fleet: Sequence[_Location], scenario: Scenario, now: datetime):
    """pos_sync_events of the last hour, and the location and breaker rows they imply."""
    syncs: list[tuple] = []
    locations: list[tuple] = []
    breakers: dict[str, list] = {}
    events: list[tuple] = []
    window_start = now - BREAKER_WINDOW
    for loc in fleet:
        attempts = _attempts(rng, loc, scenario.sync_failure_rate, now)
        syncs.extend((at, loc.id, loc.provider, error is None, error) for at, error in attempts)
        failed_since, last_ok = _sync_state(rng, loc, attempts)
        locations.append((loc.id, loc.name, loc.provider, True, "failed" if failed_since else "ok",
                          last_ok, failed_since, loc.expires_at, now))
        in_window = sum(1 for at, error in attempts if error and at > window_start)
        if loc.breaker_failures:
            opened_at = loc.breaker_transitions[-1][0]
            breakers[loc.id] = [loc.id, loc.provider, "open", in_window, BREAKER_THRESHOLD,
                                15, opened_at, opened_at]
            events.extend((loc.id, loc.provider, a, b, at) for at, a, b in loc.breaker_transitions)
        else:
            created = now - timedelta(days=rng.uniform(30, 400))
            breakers[loc.id] = [loc.id, loc.provider, "closed", in_window, BREAKER_THRESHOLD,
                                15, None, created]
    syncs.sort(key=lambda row: row[0])
    return syncs, locations, breakers, events


def _attempts(rng: random.Random, loc: _Location, failure_rate: float, now: datetime):
    """(at, error or None) of one location's syncs in the last hour, oldest first."""
    attempts = []
    at = now - timedelta(seconds=rng.uniform(0, SYNC_PERIOD.total_seconds()))
    while at > now - SYNC_HISTORY:
        attempts.append(at)
        at -= SYNC_PERIOD
    attempts.reverse()
    if loc.breaker_failures:
        # Regular syncs until the outage, then the failures that opened the breaker
        # (an open breaker lets no regular sync through).
        start = loc.breaker_failures[0]
        regular = [(at, None) for at in attempts if at < start]
        failed = [(at, f"HTTP 503 Service Unavailable from {PROVIDER_TITLES[loc.provider]}")
                  for at in loc.breaker_failures]
        return regular + failed
    result = []
    for at in attempts:
        if loc.failed_since is not None and at >= loc.failed_since:
            result.append((at, "timeout after 10000 ms"))
        elif rng.random() < failure_rate:
            result.append((at, rng.choice(SYNC_ERRORS)))
        else:
            result.append((at, None))
    return result


def _sync_state(rng: random.Random, loc: _Location, attempts) -> tuple[datetime | None, datetime | None]:
    """(sync_failed_since, last_sync_at): failed since the trailing run of failures began."""
    failed_since = None
    for at, error in reversed(attempts):
        if error is None:
            break
        failed_since = at
    successes = [at for at, error in attempts if error is None]
    if successes:
        return failed_since, successes[-1]
    # Failing since before the seeded hour: the last success came just before.
    failed_since = min(filter(None, (failed_since, loc.failed_since)))
    return failed_since, failed_since - timedelta(seconds=rng.uniform(60, 300))


def _breaker_history(rng: random.Random, fleet: Sequence[_Location], breakers: dict[str, list],
                     now: datetime) -> list[tuple]:
    """A few closed → open → half_open → closed cycles earlier today (< 5 triggers a day)."""
    quiet = [loc for loc in fleet if loc.failed_since is None and not loc.breaker_failures]
    events = []
    for loc in rng.sample(quiet, min(len(quiet), rng.randint(2, 4))):
        opened = now - timedelta(hours=rng.uniform(1.5, 23))
        half_open = opened + timedelta(seconds=rng.uniform(60, 90))
        closed = half_open + timedelta(seconds=rng.uniform(2, 10))
        events += [(loc.id, loc.provider, "closed", "open", opened),
                   (loc.id, loc.provider, "open", "half_open", half_open),
                   (loc.id, loc.provider, "half_open", "closed", closed)]
        breakers[loc.id][7] = closed   # changed_at: when it last closed
    return events


# -- rotations, incidents, migrations --------------------------------------------------


def rotation_latency_ms(rng: random.Random, provider: str, ok: bool, extra_ms: int = 0) -> int:
    """Log-normal around the provider's median (p95 about 1.6x); failures are slow."""
    if not ok:
        return 10_000 if rng.random() < 0.4 else int(rng.uniform(800, 3_000))
    return max(40, int(rng.lognormvariate(math.log(ROTATION_LATENCY_MS[provider]), 0.3))) + extra_ms


def fingerprint(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def _rotations(rng: random.Random, fleet: Sequence[_Location], scenario: Scenario, now: datetime):
    rows = []
    day = timedelta(days=1).total_seconds()
    for loc in fleet:
        extra = scenario.extra_latency_ms.get(loc.provider, 0)
        spans = [day] * ROTATIONS_PER_DAY + [3600.0] * RECENT_ROTATIONS
        for span in spans:
            at = now - timedelta(seconds=rng.uniform(0, span))
            broken = loc.stuck and loc.failed_since is not None and at >= loc.failed_since
            ok = not broken and rng.random() >= ROTATION_FAILURE_RATE
            error = None if ok else rng.choice(ROTATION_ERRORS)
            rows.append((at, loc.id, loc.provider, ok, rotation_latency_ms(rng, loc.provider, ok, extra),
                         fingerprint(rng), error))
    rows.sort(key=lambda row: row[0])
    return rows


def _incidents(rng: random.Random, mttr_minutes: float, now: datetime) -> list[tuple]:
    """Resolved incidents of the last 30 days whose mean duration is mttr_minutes."""
    raw = [rng.lognormvariate(0, 0.5) for _ in range(rng.randint(8, 14))]
    scale = mttr_minutes / (sum(raw) / len(raw))
    rows = []
    for r in raw:
        duration = timedelta(seconds=round(r * scale * 60))
        latest = (duration + timedelta(hours=1)).total_seconds()
        opened = now - timedelta(seconds=rng.uniform(latest, timedelta(days=29).total_seconds()))
        provider = rng.choice(PROVIDERS)
        summary = rng.choice(_INCIDENT_SUMMARIES).format(p=PROVIDER_TITLES[provider],
                                                         place=rng.choice(_PLACES))
        severity = "major" if rng.random() < 0.3 else "minor"
        rows.append((opened, opened + duration, provider, severity, False, summary))
    rows.sort(key=lambda row: row[0])
    return rows


def _migrations(rng: random.Random, behind: int, now: datetime) -> list[tuple]:
    """Staging has MIGRATIONS versions; production all but the newest `behind`."""
    if not 0 <= behind < MIGRATIONS:
        raise ValueError(f"migrations_behind must be in [0, {MIGRATIONS})")
    at = now - timedelta(days=2)
    stamps = []
    for _ in range(MIGRATIONS):
        stamps.append(at)
        at -= timedelta(days=rng.uniform(4, 14), seconds=rng.uniform(0, 86_400))
    stamps.reverse()
    rows = []
    for i, (stamp, name) in enumerate(zip(stamps, _MIGRATION_NAMES)):
        version = f"{stamp:%Y%m%d%H%M%S}_{name}"
        rows.append(("staging", version, stamp + timedelta(hours=1)))
        if i < MIGRATIONS - behind:   # production runs a day behind staging
            rows.append(("production", version, stamp + timedelta(hours=rng.uniform(20, 30))))
    return rows


# -- writing ---------------------------------------------------------------------------

_TABLES = ("pos_integrations_location", "rotation_cb", "rotation_cb_events",
           "pos_rotation_metrics", "pos_sync_events", "incidents", "schema_migrations")


async def _write(conn: asyncpg.Connection, locations, breakers, breaker_events, syncs,
                 rotations, incidents, migrations, state: dict[str, object]) -> None:
    await conn.execute(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY", timeout=TIMEOUT_S)
    await _copy(conn, "pos_integrations_location", locations,
                ("location_id", "location_name", "provider", "connected", "sync_state",
                 "last_sync_at", "sync_failed_since", "credential_expires_at", "updated_at"))
    await _copy(conn, "rotation_cb", [tuple(row) for row in breakers.values()],
                ("location_id", "provider", "state", "failure_count", "failure_threshold",
                 "window_minutes", "opened_at", "changed_at"))
    await _copy(conn, "rotation_cb_events", sorted(breaker_events, key=lambda row: row[4]),
                ("location_id", "provider", "from_state", "to_state", "at"))
    await _copy(conn, "pos_sync_events", syncs, ("at", "location_id", "provider", "success", "error"))
    await _copy(conn, "pos_rotation_metrics", rotations,
                ("recorded_at", "location_id", "provider", "success", "latency_ms",
                 "token_fingerprint", "error"))
    await _copy(conn, "incidents", incidents,
                ("opened_at", "resolved_at", "provider", "severity", "security", "summary"))
    await _copy(conn, "schema_migrations", migrations, ("environment", "version", "applied_at"))
    await conn.executemany(
        "INSERT INTO sandbox.state (key, value) VALUES ($1, $2::jsonb) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        [(key, json.dumps(value)) for key, value in state.items()],
        timeout=TIMEOUT_S,
    )


async def _copy(conn: asyncpg.Connection, table: str, rows: Iterable[tuple], columns: Sequence[str]) -> None:
    await conn.copy_records_to_table(table, records=rows, columns=list(columns), timeout=TIMEOUT_S)
