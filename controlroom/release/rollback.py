"""The rollback operations of a Session: start a rollback with a plan, run, dry-run, skip or
mark its steps, verify it, the provider choices, the suggested reason and provider, the
rollback clock and the incident's escalation.

RollbackMixin is mixed into controlroom.release.engine.Session, which provides the state it works
on (see the annotations below). Nothing here knows about Textual.

`rollback_started` {plan_id, reason, provider, version, from_version} opens a rollback;
its steps are `step_intent` / `step_outcome` records carrying `plan_id`; verification
journals the probes (a `check`), then `rollback_finished` {plan_id, verified} and, when
verified, `deploy_finished` {outcome: "rolled_back"} and a `resolve` notification.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controlroom.release.state import Clock, DeploymentState, clock
from controlroom.release.escalation import EscalationStatus, escalation_status, incident_window
from controlroom.release.journal import Journal, Record
from controlroom.checks.base import ProbeContext, ProbeResult, run_probe
from controlroom.config.loader import LoadedConfig
from controlroom.config.models import NotifyAction, ProbeAction, RollbackPlan, SqlAction, Step
from controlroom.errors import SessionError
from controlroom.release import rules
from controlroom.release.rules import Command
from controlroom.release.steps import OutputCallback, StepOutcome, StepRefused, is_modifying

if TYPE_CHECKING:
    from controlroom.checks.base import Attestation as ProbeAttestation
    from controlroom.config.models import Phase
    from controlroom.release.steps import StepRunner
    from controlroom.checks.verdict import Verdict


AUTO_TRIGGER_MESSAGE = "{environment}: rollback to {version} started"


class RollbackMixin:
    """The rollback half of Session; the deployment half (controlroom.release.engine) provides
    these attributes and the methods declared under TYPE_CHECKING."""

    loaded: LoadedConfig
    journal: Journal
    write: bool
    environ: Mapping[str, str] | None
    results: dict[str, ProbeResult]
    running_step: str | None
    state: DeploymentState

    if TYPE_CHECKING:
        @property
        def deployment(self): ...  # noqa: ANN201 - runbook.models.Deployment
        def now(self) -> datetime: ...
        def attestations(self) -> dict[str, ProbeAttestation]: ...
        def current_phase(self) -> Phase | None: ...
        def step(self, step_id: str) -> Step: ...
        def runner(self) -> StepRunner: ...
        def _replay(self) -> None: ...
        def _append(self, kind: str, data: dict[str, Any]) -> None: ...
        def _journal_checks(self, results: list[ProbeResult]) -> None: ...
        def _decide(self, *, force_journal: bool = False) -> Verdict: ...
        def command_refusal(self, command: Command, *, outcome: str | None = None) -> str | None: ...
        def _allow(self, command: Command, *, outcome: str | None = None) -> None: ...
        async def measure_pos_health(self, timeout_s: float = ...) -> None: ...
        async def _run_journaled(self, step: Step, where: dict[str, str], values: dict[str, str],
                                 on_output: OutputCallback | None) -> StepOutcome: ...

    def rollback_in_progress(self) -> bool:
        rollback = self.state.rollback
        return rollback is not None and rollback.ended_at is None

    @property
    def rollback_plans(self) -> list[RollbackPlan]:
        return list(self.loaded.runbook.rollback.plans)

    def rollback_plan(self, plan_id: str) -> RollbackPlan:
        for plan in self.rollback_plans:
            if plan.id == plan_id:
                return plan
        raise SessionError(f"no rollback plan {plan_id!r}")

    def current_rollback_plan(self) -> RollbackPlan | None:
        rollback = self.state.rollback
        return self.rollback_plan(rollback.plan_id) if rollback is not None else None

    def rollback_record(self) -> Record | None:
        """The journal's last `rollback_started` record."""
        return next((r for r in reversed(self.journal.records) if r.kind == "rollback_started"), None)

    def rollback_values(self) -> dict[str, str]:
        """The values the rollback's steps are filled with: the version it goes back to and
        the provider it disables (both journaled when it started)."""
        record = self.rollback_record()
        if record is None:
            return {}
        return {key: str(record.data[key]) for key in ("version", "provider") if record.data.get(key)}

    def rollback_clock(self) -> Clock | None:
        rollback = self.state.rollback
        if rollback is None:
            return None
        plan = self.rollback_plan(rollback.plan_id)
        return clock(plan.target_minutes, rollback.started_at, rollback.ended_at, self.now())

    def escalation(self) -> EscalationStatus | None:
        """The escalation level of this deployment's incident, while it is open (None when
        there is none, or it ended)."""
        started, ended = incident_window(self.journal.records)
        if started is None or ended is not None:
            return None
        return escalation_status(self.loaded.runbook.escalation, started, self.now())

    def incident_window(self) -> tuple[datetime | None, datetime | None]:
        return incident_window(self.journal.records)

    @staticmethod
    def needs_provider(plan: RollbackPlan) -> bool:
        return any(isinstance(s.action, SqlAction) and "provider" in s.action.params for s in plan.steps)

    def start_refusal(self) -> str | None:
        """Why a rollback cannot start now, or None."""
        refused = self.command_refusal(Command.START_ROLLBACK)
        if refused:
            return refused
        if self.state.started_at is None:
            return ("no deployment is recorded in this journal: if it was deployed elsewhere (CI/CD, a colleague), "
                    "adopt it first (a), then roll back")
        rollback = self.state.rollback
        if rollback is not None and rollback.ended_at is None:
            return f"the {self.rollback_plan(rollback.plan_id).title} is already in progress"
        if rollback is not None and rollback.verified:
            return "the deployment was already rolled back (verified)"
        if self.running_step:
            return f"step {self.running_step!r} is still running"
        return None

    def suggested_reason(self) -> str:
        """The latest failure of this deployment, as a starting point for the reason."""
        for record in reversed(self.journal.records):
            if record.kind == "step_outcome" and record.data.get("status") == "failed" and not record.data.get("plan_id"):
                step_id = str(record.data.get("step_id", ""))
                try:
                    title = self.step(step_id).title
                except SessionError:
                    title = step_id
                return f"{title} failed: {record.data.get('summary', '')}"[:240]
        return ""

    def suggested_provider(self, providers: list[str]) -> str:
        """The provider whose checklist item fails now, else the one named in the latest
        failure, else ''."""
        for provider in providers:
            result = self.results.get(provider)
            if result is not None and result.status in ("fail", "error"):
                return provider
        reason = self.suggested_reason().lower()
        return next((p for p in providers if p.lower() in reason), "")

    async def provider_choices(self, plan_id: str) -> list[tuple[str, int | None]]:
        """The providers to pick from (the runbook's providers_query, else its list), each
        with how many rows the plan's provider statement would touch (its count_query)."""
        rollback = self.loaded.runbook.rollback
        runner = self.runner()
        providers: list[str] = []
        if rollback.providers_query.strip():
            try:
                conn = await runner.connect(rollback.providers_database, 10.0)
                try:
                    async with conn.transaction(readonly=True):
                        rows = await conn.fetch(rollback.providers_query)
                finally:
                    await conn.close()
                providers = [str(row[0]) for row in rows if row[0] is not None]
            except Exception:  # noqa: BLE001 - the runbook's list is the fallback
                providers = []
        providers = providers or list(rollback.providers)
        sql_step = next((s for s in self.rollback_plan(plan_id).steps
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

    async def previous_version(self) -> tuple[str, str]:
        return await self.runner().previous_version()

    async def start_rollback(self, plan_id: str, reason: str, provider: str = "", version: str | None = None) -> Record:
        """Open a rollback with `plan_id`: journaled with the reason, the provider it disables
        and the version it goes back to (found now, see StepRunner.previous_version)."""
        plan = self.rollback_plan(plan_id)
        refusal = self.start_refusal()
        if refusal:
            raise SessionError(refusal)
        reason = reason.strip()
        if not reason:
            raise SessionError("a rollback needs a reason")
        provider = provider.strip()
        if self.needs_provider(plan) and not provider:
            raise SessionError(f"the {plan.title} disables a provider's integrations: pick the provider")
        how = "given"
        if version is None:
            version, how = await self.previous_version()
        self._append("rollback_started", {
            "plan_id": plan.id, "reason": reason, "provider": provider, "version": version,
            "version_from": how, "from_version": self.state.version,
        })
        record = self.rollback_record()
        if not self._plan_triggers_first(plan):  # every rollback opens the incident
            await self._trigger_incident(plan, self.rollback_values())
        return record  # type: ignore[return-value]

    @staticmethod
    def _plan_triggers_first(plan: RollbackPlan) -> bool:
        first = plan.steps[0].action if plan.steps else None
        return isinstance(first, NotifyAction) and first.event == "trigger"

    async def _trigger_incident(self, plan: RollbackPlan, values: dict[str, str]) -> list[str]:
        """Open the incident on every configured channel as the rollback starts (the plan's
        own trigger step, later, may be skipped; the one it sends has the same dedup_key)."""
        from controlroom.notify.channels import Notifier, deployment_dedup_key

        message = AUTO_TRIGGER_MESSAGE + (f" ({plan.title})" if plan.title else "")
        async with Notifier.from_config(self.loaded, journal=self.journal) as notifier:
            channels = list(notifier.configured_channels)
            results = await notifier.send(channels, "trigger", message,
                                          dedup_key=deployment_dedup_key(self.journal.records), values=values)
        self._replay()
        return [result.describe() for result in results]

    def triggered_channels(self) -> list[str]:
        """The channels on which this deployment's incident was triggered (sent, with its
        dedup_key): the only ones a resolve may go to."""
        from controlroom.notify.channels import deployment_dedup_key

        key = deployment_dedup_key(self.journal.records)
        channels: list[str] = []
        for record in self.journal.of_kind("notification"):
            data = record.data
            if data.get("event") == "trigger" and data.get("status") == "sent" and data.get("dedup_key") == key:
                if data.get("channel") not in channels:
                    channels.append(str(data.get("channel")))
        return channels

    def rollback_step(self, step_id: str) -> Step:
        plan = self.current_rollback_plan()
        plans = [plan] if plan is not None else self.rollback_plans
        for candidate in plans:
            for step in candidate.steps:
                if step.id == step_id:
                    return step
        raise SessionError(f"no step {step_id!r} in the rollback plan")

    def describe_rollback_step(self, step_id: str) -> str:
        return self.runner().describe(self.rollback_step(step_id), self.rollback_values())

    def rollback_refusal(self, step_id: str, plan_id: str | None = None) -> str | None:
        """Why run_rollback_step would refuse this step now, or None."""
        plan = self.current_rollback_plan() if plan_id is None else self.rollback_plan(plan_id)
        if plan is None:
            plan = self.rollback_plans[0]
        step = next((s for s in plan.steps if s.id == step_id), None)
        if step is None:
            return f"no step {step_id!r} in the {plan.title}"
        refusal = self.command_refusal(Command.RUN_ROLLBACK_STEP) or self.runner().refusal(step)
        if refusal:  # READ-ONLY first: it is the reason that matters
            return refusal
        rollback = self.state.rollback
        if rollback is None or rollback.ended_at is not None:
            return "no rollback in progress: start one first (s)"
        if rollback.plan_id != plan.id:
            return f"this rollback runs the {self.rollback_plan(rollback.plan_id).title}, not the {plan.title}"
        if self.running_step:
            return f"step {self.running_step!r} is still running"
        once = rules.step_refusal(Command.RUN_ROLLBACK_STEP, rollback.steps.get(step.id), modifying=is_modifying(step),
                                  ran_before=f"{plan.id}:{step.id}" in self.state.ran_ever)
        if once:
            return f"{step.title}: {once}"
        values = self.rollback_values()
        if isinstance(step.action, SqlAction) and "provider" in step.action.params and not values.get("provider"):
            return "this step needs a provider, and none was picked when the rollback started"
        return None

    async def run_rollback_step(self, step_id: str, on_output: OutputCallback | None = None) -> StepOutcome:
        """Run a step of the rollback in progress: intent on disk first, outcome after."""
        refusal = self.rollback_refusal(step_id)
        if refusal:
            raise StepRefused(refusal)
        where = {"plan_id": self.state.rollback.plan_id}  # type: ignore[union-attr]
        return await self._run_journaled(self.rollback_step(step_id), where, self.rollback_values(), on_output)

    async def dry_run_rollback_step(self, step_id: str, plan_id: str | None = None):  # noqa: ANN201 - steps.DryRun
        plan = self.current_rollback_plan() if plan_id is None else self.rollback_plan(plan_id)
        step = next((s for s in (plan or self.rollback_plans[0]).steps if s.id == step_id), None)
        if step is None:
            raise SessionError(f"no step {step_id!r} in that plan")
        values = self.rollback_values() if self.rollback_in_progress() else {}
        return await self.runner().dry_run(step, values)

    def skip_rollback_step(self, step_id: str, reason: str) -> None:
        self._rollback_outcome_without_running(step_id, "skipped", "skipped by the operator", reason.strip(), need_reason=True)

    def mark_rollback_step_done(self, step_id: str, note: str = "") -> None:
        self._rollback_outcome_without_running(step_id, "done", note or "marked done by the operator", "")

    def _rollback_outcome_without_running(self, step_id: str, status: str, summary: str, reason: str,
                                          need_reason: bool = False) -> None:
        self._allow(Command.MARK_DONE if status == "done" else Command.SKIP)
        if not self.rollback_in_progress():
            raise SessionError("no rollback in progress")
        if need_reason and not reason:
            raise SessionError("skipping a step needs a reason")
        step = self.rollback_step(step_id)
        if self.running_step == step.id:
            raise SessionError(f"step {step_id!r} is still running")
        once = rules.step_refusal(Command.MARK_DONE if status == "done" else Command.SKIP,
                                  self.state.rollback.steps.get(step.id),  # type: ignore[union-attr]
                                  modifying=is_modifying(step))
        if once:
            raise SessionError(f"{step.title}: {once}")
        self._append("step_outcome", {"step_id": step.id, "plan_id": self.state.rollback.plan_id,  # type: ignore[union-attr]
                                      "status": status, "summary": summary, "reason": reason})

    def open_rollback_steps(self) -> list[str]:
        rollback, plan = self.state.rollback, self.current_rollback_plan()
        if rollback is None or plan is None:
            return []
        return [s.id for s in plan.steps
                if rollback.steps.get(s.id) is None or rollback.steps[s.id].status not in ("done", "skipped")]

    def verification_items(self, plan: RollbackPlan) -> list[str]:
        """What verifies `plan`: its `verify` items; else its own probe steps' items; else the
        items every probe step of the deployment checked."""
        if plan.verify:
            return list(plan.verify)
        steps = [s for s in plan.steps if isinstance(s.action, ProbeAction)] or [
            s for phase in self.deployment.phases for s in phase.steps if isinstance(s.action, ProbeAction)]
        items: list[str] = []
        for step in steps:
            assert isinstance(step.action, ProbeAction)
            items += [i for i in step.action.items if i not in items]
        return items

    async def verify_rollback(self, on_output: OutputCallback | None = None) -> tuple[bool, list[ProbeResult], list[str]]:
        """Run the verification probes again (the verdict updates). All pass (or warn): the
        rollback is finished as verified, the deployment ends `rolled_back` and the incident
        is resolved on the plan's channels. Returns (verified, results, notification lines)."""
        self._allow(Command.VERIFY)
        plan = self.current_rollback_plan()
        if plan is None or not self.rollback_in_progress():
            raise SessionError("no rollback in progress")
        waiting = self.open_rollback_steps()
        if waiting:
            raise SessionError(f"{len(waiting)} rollback step(s) not done or skipped: {', '.join(waiting)}")
        if self.running_step:
            raise SessionError(f"step {self.running_step!r} is still running")
        items = {item.id: item for _, item in self.loaded.runbook.items()}
        wanted = self.verification_items(plan)
        attestations = self.attestations()
        self.running_step = "verify"
        try:
            async with ProbeContext(self.loaded, attestations=attestations, environ=self.environ) as ctx:
                results = list(await asyncio.gather(*(run_probe(items[i], ctx) for i in wanted)))
        finally:
            self.running_step = None
        for result in results:
            self.results[result.item_id] = result
            if on_output is not None:
                first = result.evidence.strip().splitlines()[0] if result.evidence.strip() else ""
                on_output(f"{result.status.upper():<5} {result.item_id}: {first}")
        self._journal_checks(results)
        self._decide()
        failures = [f"{r.item_id} {r.status}" for r in results if r.status not in ("pass", "warn")]
        if failures:
            self._append("rollback_verification", {"plan_id": plan.id, "verified": False, "failures": failures})
            return False, results, []
        values = self.rollback_values()
        self._append("rollback_finished", {"plan_id": plan.id, "verified": True, "items": wanted})
        if self.state.outcome != "rolled_back":
            current = self.current_phase()
            if current is not None:
                self._append("phase_completed", {"phase_id": current.id})
            self._append("deploy_finished", {"outcome": "rolled_back", "version": values.get("version", "")})
        await self.measure_pos_health()  # the fleet as the rollback left it, for the report
        lines = await self._resolve_incident(plan, values)
        return True, results, lines

    async def _resolve_incident(self, plan: RollbackPlan, values: dict[str, str]) -> list[str]:
        """Resolve the incident where it was triggered, and only there."""
        from controlroom.notify.channels import Notifier, deployment_dedup_key

        channels = self.triggered_channels()
        if not channels:
            self._append("notification_not_sent", {"event": "resolve", "why": "no incident was triggered for this deployment"})
            return ["resolve: not sent — no incident was triggered for this deployment"]
        message = "Rollback to {version} verified on {environment}" if values.get("version") else \
            "Rollback verified on {environment}"
        async with Notifier.from_config(self.loaded, journal=self.journal) as notifier:
            results = await notifier.send(channels, "resolve", message,
                                          dedup_key=deployment_dedup_key(self.journal.records), values=values)
        self._replay()
        return [result.describe() for result in results]
