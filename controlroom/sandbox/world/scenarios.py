"""The sandbox's scenarios: what each one does to the data and to the HTTP behaviour.

Scenario names are a public contract (DESIGN.md §2). The seeder, the simulator and the HTTP
server all read their knobs from here, so a scenario is described in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROVIDERS: tuple[str, ...] = ("fudo", "maxirest", "bistrsoft")
PROVIDER_TITLES: dict[str, str] = {"fudo": "Fudo", "maxirest": "MaxiRest", "bistrsoft": "BistrSoft"}


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    expected_verdict: str  # what `controlroom check` must answer (manual items attested)

    # -- data (seeder) --
    open_breakers: int = 0                # breakers seeded open, with >= 10 failures in window
    failed_sync_over_4h: int = 0          # locations failed for longer than 4 hours
    mttr_minutes: float = 75.0            # mean time to resolve of the seeded incidents
    expiring_credentials: int = 0         # credentials that expire within 7 days
    migrations_behind: int = 0            # staging migrations not applied in production

    # -- HTTP behaviour (server) --
    zombie_accepted: bool = False         # a rotated-out token is answered 200 ...
    zombie_triggers_rotation: bool = False  # ... and even rotates (records a metric row)
    zombie_delay_ms: int = 0              # delay before answering a zombie token
    extra_latency_ms: dict[str, int] = field(default_factory=dict)  # per provider validate
    degraded_providers: tuple[str, ...] = ()  # validate answers 200 with status "degraded"
    # A deployment (POST /_sandbox/deploy) makes these providers fail: validate answers 503,
    # their syncs and rotations fail, their breakers open by the 10-in-15-min rule.
    fail_on_deploy: tuple[str, ...] = ()
    # The same failure, but during the watch after the deployment: these providers fail
    # watch_failure_delay_s after the PagerDuty change event that says the deployment finished
    # and succeeded (custom_details event "deploy_finished", outcome "succeeded"). The server's
    # settings may shorten the delay (HttpSettings.watch_failure_delay_s).
    fail_during_watch: tuple[str, ...] = ()
    watch_failure_delay_s: float = 20.0
    # The platform's other clients (the sandbox's Prometheus counts them with our requests):
    # their p95 latency and share of 5xx answers.
    api_p95_ms: float = 140.0
    api_error_percent: float = 0.0

    # -- simulator --
    sync_failure_rate: float = 0.002      # chance that one location's sync fails per tick

    # -- on-call (the PagerDuty REST API's GET /oncalls) --
    # (level, from, to): minutes after the sandbox starts during which nobody is on call at
    # that escalation level; every level is covered at every other moment.
    oncall_gaps: tuple[tuple[int, float, float], ...] = ()


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="healthy",
            summary="Everything passes; GO once the manual items are attested.",
            expected_verdict="GO",
        ),
        Scenario(
            name="zombie-token",
            summary="A rotated-out token is accepted, slowly, and triggers a rotation.",
            expected_verdict="NO-GO",
            zombie_accepted=True,
            zombie_triggers_rotation=True,
            zombie_delay_ms=180,
        ),
        Scenario(
            name="breaker-open",
            summary="Circuit breakers are open for a handful of MaxiRest locations.",
            expected_verdict="NO-GO",
            open_breakers=4,
        ),
        Scenario(
            name="mttr-red",
            summary="Incidents take on average more than 240 minutes to resolve.",
            expected_verdict="NO-GO",
            mttr_minutes=290.0,
        ),
        Scenario(
            name="degraded",
            summary="BistrSoft answers slowly and reports itself degraded; MTTR is amber.",
            expected_verdict="DELAYED",
            mttr_minutes=150.0,
            extra_latency_ms={"bistrsoft": 650},
            degraded_providers=("bistrsoft",),
            api_p95_ms=620.0,
        ),
        Scenario(
            name="fudo-outage",
            summary="Healthy until the deployment; then Fudo fails and must be rolled back.",
            expected_verdict="GO",
            fail_on_deploy=("fudo",),
        ),
        Scenario(
            name="fudo-outage-watch",
            summary="Healthy through the deployment; Fudo fails during the watch after it and must be rolled back.",
            expected_verdict="GO",
            fail_during_watch=("fudo",),
        ),
        Scenario(
            name="oncall-gap",
            summary="Nobody is on call at L2 (SRE lead) from 30 to 90 minutes after the sandbox starts.",
            expected_verdict="NO-GO",
            oncall_gaps=((2, 30.0, 90.0),),
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    """The scenario called `name`; KeyError names the valid ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}") from None
