"""What the runbook says about rolling back: its plans and their steps, which plan needs a
provider, what verifies a plan, and the providers to pick from with the rows each would
touch. A collaborator of the release engine (controlroom.release.engine), which holds the
rollback's commands; nothing here changes the release.

`rollback_started` {plan_id, reason, provider, version, from_version} opens a rollback;
its steps are `step_intent` / `step_outcome` records carrying `plan_id`; verification
journals the probes (a `check`), then `rollback_finished` {plan_id, verified} and, when
verified, `deploy_finished` {outcome: "rolled_back"} and a `resolve` notification. Finishing
the deployment as failed instead abandons the rollback: `rollback_finished` {verified: false,
abandoned: true}.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlroom.config.loader import LoadedConfig
from controlroom.config.models import NotifyAction, ProbeAction, RollbackPlan, SqlAction, Step
from controlroom.errors import SessionError
from controlroom.release.steps import StepRunner

PROVIDERS_QUERY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class NextMove:
    """What the rollback console's hint says is next, decided from the release's state
    (ReleaseEngine.rollback_next); the screen words it with the keys as they are mapped.

    `kind`: "start" (s starts the selected plan), "adopt" (no deployment here: a adopts one),
    "refused" (nothing can be started or run now: `refusal` says why), "running" (`step` runs,
    or the verification when `step` is None), "run" (`step` is the next open step; `refusal`,
    when set, says why x would not run it now), "verify" (every step done: v), "verified",
    "abandoned"."""

    kind: str
    step: Step | None = None
    refusal: str | None = None


class RollbackPlans:
    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded

    @property
    def all(self) -> list[RollbackPlan]:
        return list(self.loaded.runbook.rollback.plans)

    def plan(self, plan_id: str) -> RollbackPlan:
        for plan in self.all:
            if plan.id == plan_id:
                return plan
        raise SessionError(f"no rollback plan {plan_id!r}")

    @staticmethod
    def step_of(plan: RollbackPlan, step_id: str) -> Step:
        step = next((s for s in plan.steps if s.id == step_id), None)
        if step is None:
            raise SessionError(f"no step {step_id!r} in the {plan.title}")
        return step

    @staticmethod
    def needs_provider(plan: RollbackPlan) -> bool:
        return any(isinstance(s.action, SqlAction) and "provider" in s.action.params for s in plan.steps)

    @staticmethod
    def triggers_first(plan: RollbackPlan) -> bool:
        """The plan's first step opens the incident itself."""
        first = plan.steps[0].action if plan.steps else None
        return isinstance(first, NotifyAction) and first.event == "trigger"

    def verification_items(self, plan: RollbackPlan) -> list[str]:
        """What verifies `plan`: its `verify` items; else its own probe steps' items; else the
        items every probe step of the deployment checked."""
        if plan.verify:
            return list(plan.verify)
        deployment = self.loaded.runbook.deployment
        steps = [s for s in plan.steps if isinstance(s.action, ProbeAction)] or [
            s for phase in deployment.phases for s in phase.steps if isinstance(s.action, ProbeAction)]
        items: list[str] = []
        for step in steps:
            assert isinstance(step.action, ProbeAction)
            items += [i for i in step.action.items if i not in items]
        return items

    async def provider_choices(self, plan_id: str, runner: StepRunner) -> list[tuple[str, int | None]]:
        """The providers to pick from (the runbook's providers_query, else its list), each
        with how many rows the plan's provider statement would touch (its count_query)."""
        rollback = self.loaded.runbook.rollback
        providers: list[str] = []
        if rollback.providers_query.strip():
            try:
                conn = await runner.connect(rollback.providers_database, PROVIDERS_QUERY_TIMEOUT_S)
                try:
                    async with conn.transaction(readonly=True):
                        rows = await conn.fetch(rollback.providers_query)
                finally:
                    await conn.close()
                providers = [str(row[0]) for row in rows if row[0] is not None]
            except Exception:  # noqa: BLE001 - the runbook's list is the fallback
                providers = []
        providers = providers or list(rollback.providers)
        sql_step = next((s for s in self.plan(plan_id).steps
                         if isinstance(s.action, SqlAction) and "provider" in s.action.params), None)
        choices: list[tuple[str, int | None]] = []
        for provider in providers:
            count: int | None = None
            if sql_step is not None and isinstance(sql_step.action, SqlAction) and sql_step.action.count_query:
                try:
                    count = (await runner.dry_run(sql_step, {"provider": provider})).count
                except Exception:  # noqa: BLE001 - shown as unknown
                    count = None
            choices.append((provider, count))
        return choices
