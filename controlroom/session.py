"""One opened environment: its checklist results, its verdict, its deployment and the journal
that records all of it. The app drives a Session; nothing here knows about Textual.

    session = Session.open(loaded, write=False)            # a new journal
    session = Session.open(loaded, journal_path=path)      # resume the deployment in `path`
    await session.run_checks(); session.verdict.verdict
    session.attest("on-call")
    await session.start_deploy("v2.15.0", override_reason=None)
    await session.run_step("env-health", on_output=print)
    session.skip_step("verify-alerts", "alerting is tested nightly"); session.next_phase()
    session.finish_deploy("success")

    # when it goes wrong:
    await session.start_rollback("emergency", "Fudo fails after the deploy", provider="fudo")
    await session.run_rollback_step("switch-version", on_output=print)   # one step at a time
    await session.verify_rollback()   # probes again; verified: resolve sent, deploy rolled back

Every state change is a journal record first; the deployment's state is replayed from the
journal (controlroom.deployment), so a reopened session has the same phase, the same clocks
(they derive from recorded times) and the same attestations. The clock is injectable: it
stamps every record and drives every clock, so tests can jump minutes ahead.

Journal files live in `journal_directory()` (CONTROLROOM_JOURNAL_DIR, else the user data
directory), one per session, named `<environment>-<UTC start time>.jsonl`.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlroom.checkrun import CheckReport, attestable_ids, run_checklist
from controlroom.deployment import Clock, DeploymentState, clock, replay
from controlroom.errors import ControlRoomError
from controlroom.escalation import EscalationStatus, escalation_status, incident_window
from controlroom.journal import Journal, Record, default_journal_dir, read_records
from controlroom.probes.base import Attestation as ProbeAttestation
from controlroom.probes.base import ProbeContext, ProbeResult, run_probe, with_attestation
from controlroom.runbook.loader import LoadedConfig
from controlroom.runbook.models import NotifyAction, Phase, ProbeAction, RollbackPlan, SqlAction, Step
from controlroom.steps import OutputCallback, StepOutcome, StepRefused, StepRunner, is_modifying
from controlroom.verdict import Verdict, decide

Now = Callable[[], datetime]
JOURNAL_DIR_VARIABLE = "CONTROLROOM_JOURNAL_DIR"


class SessionError(ControlRoomError):
    """A command the session refuses: the message says why, for the operator."""

    exit_code = 2


def journal_directory() -> Path:
    override = os.environ.get(JOURNAL_DIR_VARIABLE)
    return Path(override).expanduser() if override else default_journal_dir()


def environment_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48] or "environment"


def find_resumable(
    environment_name: str, journal_dir: Path | None = None, *, config_path: Path | None = None
) -> Path | None:
    """The newest journal of this environment whose deployment started and did not finish.
    With `config_path`, only a journal opened from that same config file counts (a new
    sandbox is a new environment, even though its name is the same)."""
    directory = journal_dir or journal_directory()
    if not directory.is_dir():
        return None
    candidates = sorted(directory.glob(f"{environment_slug(environment_name)}-*.jsonl"), reverse=True)
    for path in candidates:
        try:
            records, _, _ = read_records(path)
        except OSError:
            continue
        opened = next((r for r in records if r.kind == "session_opened"), None)
        if opened is None or opened.data.get("environment") != environment_name:
            continue
        if config_path is not None and opened.data.get("config") != str(config_path.resolve()):
            continue
        if replay(records).in_progress:
            return path
    return None


class Session:
    """The controller of one environment's release. Use Session.open()."""

    def __init__(
        self,
        loaded: LoadedConfig,
        journal: Journal,
        *,
        write: bool,
        clock: Now,
        environ: Mapping[str, str] | None,
    ) -> None:
        self.loaded = loaded
        self.journal = journal
        self.write = write
        self.clock = clock
        self.environ = environ
        self.results: dict[str, ProbeResult] = {}
        self.report: CheckReport | None = None
        self.verdict: Verdict | None = None
        self.checks_running = False
        self.running_step: str | None = None
        self.state: DeploymentState = replay(journal.records)
        self.resumed = self.state.in_progress

    @classmethod
    def open(
        cls,
        loaded: LoadedConfig,
        *,
        write: bool = False,
        journal_path: Path | None = None,
        journal_dir: Path | None = None,
        clock: Now | None = None,
        environ: Mapping[str, str] | None = None,
        operator: dict[str, str] | None = None,
    ) -> "Session":
        """Open a new journal (in journal_dir), or the one at journal_path (resuming it)."""
        clock = clock or (lambda: datetime.now(UTC))
        write = write or loaded.environment.write_by_default
        if journal_path is None:
            directory = journal_dir or journal_directory()
            stamp = clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            journal_path = directory / f"{environment_slug(loaded.environment.name)}-{stamp}.jsonl"
            suffix = 1
            while journal_path.exists():
                suffix += 1
                journal_path = directory / f"{environment_slug(loaded.environment.name)}-{stamp}-{suffix}.jsonl"
        journal = Journal.open(journal_path, redact=loaded.secrets.redact, clock=clock, operator=operator)
        session = cls(loaded, journal, write=write, clock=clock, environ=environ)
        if not journal.records or journal.records[0].kind != "session_opened":
            journal.append("session_opened", {
                "environment": loaded.environment.name,
                "runbook": loaded.runbook_source,  # a path, or "default (built in)"
                "runbook_name": loaded.runbook.name,
                "config": str(loaded.config_path.resolve()),
            })
        else:
            journal.append("session_resumed", {"write": write, "problems": [str(p) for p in journal.problems]})
        session._replay()
        return session

    # -- derived state -----------------------------------------------------------------

    @property
    def deployment(self):  # noqa: ANN201 - runbook.models.Deployment
        return self.loaded.runbook.deployment

    @property
    def verdict_name(self) -> str:
        return self.verdict.verdict if self.verdict else "PENDING"

    def now(self) -> datetime:
        return self.clock()

    def attestations(self) -> dict[str, ProbeAttestation]:
        return {
            item_id: ProbeAttestation(who=a.user, at=a.at, address=a.ssh_client)
            for item_id, a in self.state.attestations.items()
            if a.outcome == "pass"
        }

    def attestable(self) -> list[str]:
        return attestable_ids(self.loaded)

    def current_phase(self) -> Phase | None:
        phase_id = self.state.current_phase(self.deployment)
        return next((p for p in self.deployment.phases if p.id == phase_id), None)

    def phase_of(self, step_id: str) -> Phase:
        for phase in self.deployment.phases:
            if any(step.id == step_id for step in phase.steps):
                return phase
        raise SessionError(f"no deployment step {step_id!r}")

    def step(self, step_id: str) -> Step:
        phase = self.phase_of(step_id)
        return next(step for step in phase.steps if step.id == step_id)

    def deploy_clock(self) -> Clock:
        return self.state.deploy_clock(self.deployment, self.now())

    def phase_clock(self, phase_id: str) -> Clock:
        return self.state.phase_clock(self.deployment, phase_id, self.now())

    def runner(self) -> StepRunner:
        return StepRunner(self.loaded, write=self.write, journal=self.journal, environ=self.environ,
                          attestations=self.attestations())

    def describe(self, step_id: str) -> str:
        return self.runner().describe(self.step(step_id), self._values())

    def refusal(self, step_id: str) -> str | None:
        """Why run_step would refuse this step right now, or None."""
        step = self.step(step_id)
        if not self.state.in_progress:
            return "the deployment has not started (or is finished)"
        current = self.current_phase()
        if current is None or current.id != self.phase_of(step_id).id:
            return f"{step.title!r} belongs to another phase than the current one"
        if self.running_step:
            return f"step {self.running_step!r} is still running"
        if self.rollback_in_progress():
            return "a rollback is in progress: finish it on the Rollback screen first"
        return self.runner().refusal(step)

    def modifying(self, step_id: str) -> bool:
        return is_modifying(self.step(step_id))

    @staticmethod
    def modifying_step(step: Step) -> bool:
        return is_modifying(step)

    def rollback_in_progress(self) -> bool:
        rollback = self.state.rollback
        return rollback is not None and rollback.ended_at is None

    def _values(self) -> dict[str, str]:
        return {"version": self.state.version} if self.state.version else {}

    def _replay(self) -> None:
        self.state = replay(self.journal.records)

    def _append(self, kind: str, data: dict[str, Any]) -> None:
        self.journal.append(kind, data)
        self._replay()

    # -- checklist ---------------------------------------------------------------------

    async def run_checks(self) -> CheckReport:
        """Run every checklist item; journal the results and the verdict (when it changed)."""
        self.checks_running = True
        try:
            report = await run_checklist(self.loaded, self.attestations(), environ=self.environ)
        finally:
            self.checks_running = False
        self.report = report
        self.results = dict(report.results)
        self._journal_checks(list(self.results.values()))
        self._decide(force_journal=self.verdict is None)
        return report

    async def run_item(self, item_id: str) -> ProbeResult:
        """Run one checklist item again and update the verdict."""
        items = {item.id: item for _, item in self.loaded.runbook.items()}
        if item_id not in items:
            raise SessionError(f"no checklist item {item_id!r}")
        attestations = self.attestations()
        async with ProbeContext(self.loaded, attestations=attestations, environ=self.environ) as ctx:
            result = await run_probe(items[item_id], ctx)
        if result.status == "skipped" and item_id in attestations:
            result = with_attestation(result, attestations[item_id], self.loaded.secrets.redact)
        self.results[item_id] = result
        self._journal_checks([result])
        self._decide()
        return result

    def attest(self, item_id: str, note: str = "") -> ProbeResult:
        """The operator vouches for a manual item: journaled with who and when; the item
        passes and the verdict is decided again."""
        if item_id not in self.attestable():
            raise SessionError(f"{item_id!r} cannot be attested; only {', '.join(self.attestable())} can")
        self._append("attested", {"item_id": item_id, "outcome": "pass", "note": note})
        attestation = self.attestations()[item_id]
        previous = self.results.get(item_id)
        item = next(i for _, i in self.loaded.runbook.items() if i.id == item_id)
        if item.kind == "manual":
            result = ProbeResult(item_id, "pass", attestation.describe(), 0.0, attestation.at,
                                 attested_by=attestation.by, attested_at=attestation.at)
        elif previous is not None:
            result = with_attestation(previous, attestation, self.loaded.secrets.redact)
        else:
            result = ProbeResult(item_id, "skipped", attestation.describe(), 0.0, attestation.at,
                                 attested_by=attestation.by, attested_at=attestation.at)
        self.results[item_id] = result
        self._decide()
        return result

    def _journal_checks(self, results: list[ProbeResult]) -> None:
        sections = {item.id: (section, item) for section, item in self.loaded.runbook.items()}
        self.journal.append("check", {"results": [
            {
                "id": r.item_id,
                "title": sections[r.item_id][1].title,
                "section": sections[r.item_id][0].id,
                "status": r.status,
                "evidence": r.evidence,
                "duration_ms": round(r.duration_ms, 1),
            }
            for r in results
        ]})

    def _decide(self, *, force_journal: bool = False) -> Verdict:
        verdict = decide(self.loaded.runbook, self.results)
        changed = self.verdict is None or verdict.verdict != self.verdict.verdict or verdict.reasons != self.verdict.reasons
        self.verdict = verdict
        if changed or force_journal:
            self._journal_verdict()
        return verdict

    def _journal_verdict(self) -> None:
        verdict = self.verdict or decide(self.loaded.runbook, self.results)
        self._append("verdict", {
            "verdict": verdict.verdict,
            "reasons": list(verdict.reasons),
            "health_percent": verdict.health_percent,
        })

    # -- deployment --------------------------------------------------------------------

    def start_deploy_refusal(self) -> str | None:
        """Why start_deploy would refuse whatever the version and the reason, or None: asked
        before the operator types either."""
        if self.state.in_progress:
            return f"deployment of {self.state.version} is already in progress"
        if self.state.ended_at is not None:
            outcome = (self.state.outcome or "finished").replace("_", " ")
            return (f"this session's deployment of {self.state.version} is finished ({outcome}); "
                    "reopen the control room for another")
        return None

    async def start_deploy(self, version: str, override_reason: str | None = None) -> None:
        """Start the deployment of `version`. Refused when the verdict is not GO, unless an
        override reason is given (journaled with the verdict it overrode)."""
        version = version.strip()
        if not version:
            raise SessionError("give the version to deploy")
        refusal = self.start_deploy_refusal()
        if refusal:
            raise SessionError(refusal)
        reason = (override_reason or "").strip()
        verdict = self.verdict_name
        if verdict != "GO" and not reason:
            raise SessionError(f"the verdict is {verdict}, not GO: starting needs an override with a typed reason")
        git_sha = await self._git_sha()
        self._journal_verdict()
        self._append("deploy_started", {
            "version": version,
            "git_sha": git_sha,
            "verdict": verdict,
            "override_reason": reason if verdict != "GO" else "",
        })
        self._append("phase_started", {"phase_id": self.deployment.phases[0].id})

    async def run_step(self, step_id: str, on_output: OutputCallback | None = None) -> StepOutcome:
        """Run a step of the current phase: `step_intent` is on disk before it starts,
        `step_outcome` after. StepRefused / SessionError when it must not run."""
        refusal = self.refusal(step_id)
        if refusal:
            raise StepRefused(refusal)
        step = self.step(step_id)
        phase = self.phase_of(step_id)
        runner = self.runner()
        values = self._values()
        self.running_step = step_id
        try:
            self._append("step_intent", {
                "step_id": step_id, "phase_id": phase.id, "action": step.action.kind,
                "detail": runner.describe(step, values),
            })
            try:
                outcome = await runner.run(step, values, on_output)
            except asyncio.CancelledError:
                self._append("step_outcome", {"step_id": step_id, "phase_id": phase.id, "status": "failed",
                                              "summary": "cancelled", "reason": "the control room was closed"})
                raise
            except StepRefused as refused:
                outcome = StepOutcome("failed", str(refused))
            self._append("step_outcome", {
                "step_id": step_id, "phase_id": phase.id, "status": outcome.status,
                "summary": outcome.summary, "reason": "",
            })
        finally:
            self.running_step = None
        for result in outcome.probe_results:
            self.results[result.item_id] = result
        if outcome.probe_results:
            self._decide()
        return outcome

    async def dry_run(self, step_id: str):  # noqa: ANN201 - steps.DryRun
        return await self.runner().dry_run(self.step(step_id), self._values())

    def mark_done(self, step_id: str, note: str = "") -> None:
        self._outcome_without_running(step_id, "done", note or "marked done by the operator", "")

    def skip_step(self, step_id: str, reason: str) -> None:
        reason = reason.strip()
        if not reason:
            raise SessionError("skipping a step needs a reason")
        self._outcome_without_running(step_id, "skipped", "skipped by the operator", reason)

    def _outcome_without_running(self, step_id: str, status: str, summary: str, reason: str) -> None:
        step = self.step(step_id)
        phase = self.phase_of(step_id)
        if not self.state.in_progress:
            raise SessionError("the deployment has not started (or is finished)")
        current = self.current_phase()
        if current is None or current.id != phase.id:
            raise SessionError(f"{step.title!r} belongs to another phase than the current one")
        if self.running_step == step_id:
            raise SessionError(f"step {step_id!r} is still running")
        self._append("step_outcome", {"step_id": step_id, "phase_id": phase.id, "status": status,
                                      "summary": summary, "reason": reason})

    def open_steps(self, phase_id: str) -> list[str]:
        phase = next(p for p in self.deployment.phases if p.id == phase_id)
        return [s.id for s in phase.steps if self.state.steps.get(s.id) is None
                or self.state.steps[s.id].status not in ("done", "skipped")]

    def next_phase(self) -> Phase | None:
        """Complete the current phase (every step done or skipped) and start the next; the
        new phase, or None when the last phase was completed."""
        current = self.current_phase()
        if current is None:
            raise SessionError("no phase is running")
        waiting = self.open_steps(current.id)
        if waiting:
            raise SessionError(f"{current.title}: {len(waiting)} step(s) not done or skipped: {', '.join(waiting)}")
        phases = self.deployment.phases
        index = next(i for i, p in enumerate(phases) if p.id == current.id)
        self._append("phase_completed", {"phase_id": current.id})
        if index + 1 < len(phases):
            self._append("phase_started", {"phase_id": phases[index + 1].id})
            return phases[index + 1]
        return None

    def finish_deploy(self, outcome: str = "success") -> None:
        if not self.state.in_progress:
            raise SessionError("no deployment in progress")
        current = self.current_phase()
        if current is not None:
            self._append("phase_completed", {"phase_id": current.id})
        self._append("deploy_finished", {"outcome": outcome})

    # -- rollback ----------------------------------------------------------------------
    #
    # `rollback_started` {plan_id, reason, provider, version, from_version} opens a rollback;
    # its steps are `step_intent` / `step_outcome` records carrying `plan_id`; verification
    # journals the probes (a `check`), then `rollback_finished` {plan_id, verified} and, when
    # verified, `deploy_finished` {outcome: "rolled_back"} and a `resolve` notification.

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
        if not self.write:
            return ("READ-ONLY mode: a rollback changes the environment; restart with --write "
                    "(the journal resumes where it is)")
        if self.state.started_at is None:
            return "no deployment has started in this session: nothing to roll back"
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
                conn = await runner._connect(rollback.providers_database, 10.0)
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
        return self.rollback_record()  # type: ignore[return-value]

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
        refusal = self.runner().refusal(step)  # READ-ONLY first: it is the reason that matters
        if refusal:
            return refusal
        rollback = self.state.rollback
        if rollback is None or rollback.ended_at is not None:
            return "no rollback in progress: start one first (s)"
        if rollback.plan_id != plan.id:
            return f"this rollback runs the {self.rollback_plan(rollback.plan_id).title}, not the {plan.title}"
        if self.running_step:
            return f"step {self.running_step!r} is still running"
        values = self.rollback_values()
        if isinstance(step.action, SqlAction) and "provider" in step.action.params and not values.get("provider"):
            return "this step needs a provider, and none was picked when the rollback started"
        return None

    async def run_rollback_step(self, step_id: str, on_output: OutputCallback | None = None) -> StepOutcome:
        """Run a step of the rollback in progress: intent on disk first, outcome after."""
        refusal = self.rollback_refusal(step_id)
        if refusal:
            raise StepRefused(refusal)
        step = self.rollback_step(step_id)
        plan_id = self.state.rollback.plan_id  # type: ignore[union-attr]
        runner = self.runner()
        values = self.rollback_values()
        self.running_step = step_id
        try:
            self._append("step_intent", {"step_id": step_id, "plan_id": plan_id, "action": step.action.kind,
                                         "detail": runner.describe(step, values)})
            try:
                outcome = await runner.run(step, values, on_output)
            except asyncio.CancelledError:
                self._append("step_outcome", {"step_id": step_id, "plan_id": plan_id, "status": "failed",
                                              "summary": "cancelled", "reason": "the control room was closed"})
                raise
            except StepRefused as refused:
                outcome = StepOutcome("failed", str(refused))
            self._append("step_outcome", {"step_id": step_id, "plan_id": plan_id, "status": outcome.status,
                                          "summary": outcome.summary, "reason": "",
                                          **({"count": outcome.count} if outcome.count is not None else {})})
        finally:
            self.running_step = None
        for result in outcome.probe_results:
            self.results[result.item_id] = result
        if outcome.probe_results:
            self._decide()
        return outcome

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
        if not self.rollback_in_progress():
            raise SessionError("no rollback in progress")
        if need_reason and not reason:
            raise SessionError("skipping a step needs a reason")
        step = self.rollback_step(step_id)
        if self.running_step == step.id:
            raise SessionError(f"step {step_id!r} is still running")
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
        lines = await self._resolve_incident(plan, values)
        return True, results, lines

    async def _resolve_incident(self, plan: RollbackPlan, values: dict[str, str]) -> list[str]:
        from controlroom.notify import Notifier, deployment_dedup_key

        channels: list[str] = []
        for step in plan.steps:
            if isinstance(step.action, NotifyAction):
                channels += [c for c in step.action.channels if c not in channels]
        message = "Rollback to {version} verified on {environment}" if values.get("version") else \
            "Rollback verified on {environment}"
        async with Notifier.from_config(self.loaded, journal=self.journal) as notifier:
            results = await notifier.send(channels or list(notifier.configured_channels), "resolve", message,
                                          dedup_key=deployment_dedup_key(self.journal.records), values=values)
        self._replay()
        return [result.describe() for result in results]

    async def _git_sha(self) -> str:
        repository = self.loaded.runbook.rollback.previous_version.repository
        cwd = Path(repository).expanduser()
        if not cwd.is_absolute():
            cwd = self.loaded.config_path.parent / cwd
        try:
            process = await asyncio.create_subprocess_exec(
                "git", "rev-parse", "HEAD", cwd=cwd,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            return ""
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout=3)
        except TimeoutError:
            process.kill()
            await process.wait()
            return ""
        return out.decode().strip() if process.returncode == 0 else ""
