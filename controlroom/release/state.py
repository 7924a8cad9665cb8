"""A deployment's state, derived from its journal, and its clocks, derived from recorded times.

Nothing here counts time itself: every elapsed figure is `now - recorded start`, with `now`
passed in, so a reopened control room shows the same clocks as the one that was killed, and a
test can jump ten minutes ahead without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from controlroom.release.journal import Record
from controlroom.config.models import Deployment

# A phase (or the whole deployment) that overruns its minutes turns amber; once the overrun
# passes this share of its minutes it turns red. Both stay until the phase is over.
RED_OVERRUN_SHARE = 0.5


class Level(StrEnum):
    OK = "ok"
    AMBER = "amber"
    RED = "red"


@dataclass(frozen=True)
class Clock:
    """One timer against its budget."""

    budget_s: float
    elapsed_s: float
    running: bool

    @property
    def remaining_s(self) -> float:
        return self.budget_s - self.elapsed_s

    @property
    def level(self) -> Level:
        overrun = self.elapsed_s - self.budget_s
        if overrun <= 0:
            return Level.OK
        return Level.RED if overrun > self.budget_s * RED_OVERRUN_SHARE else Level.AMBER


def clock(budget_minutes: float, started_at: datetime | None, ended_at: datetime | None, now: datetime) -> Clock:
    if started_at is None:
        return Clock(budget_minutes * 60, 0.0, running=False)
    end = ended_at or now
    return Clock(budget_minutes * 60, max(0.0, (end - started_at).total_seconds()), running=ended_at is None)


def format_duration(seconds: float) -> str:
    """`4:05`, `-0:30` (overrun shown as negative remaining), `1:02:03`."""
    sign = "-" if seconds < 0 else ""
    seconds = int(abs(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours}:{minutes:02d}:{secs:02d}" if hours else f"{sign}{minutes}:{secs:02d}"


@dataclass
class StepState:
    status: str = "todo"  # todo | unknown (an intent without an outcome) | done | failed | skipped
    summary: str = ""
    reason: str = ""
    at: datetime | None = None
    by: str = ""  # who started it (for an outcome unknown)
    session: int = 0  # the shared journal's session that started it (0: a file journal's window)


@dataclass
class PhaseState:
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass
class RollbackState:
    plan_id: str
    started_at: datetime
    reason: str = ""
    ended_at: datetime | None = None
    verified: bool | None = None
    steps: dict[str, StepState] = field(default_factory=dict)


@dataclass
class Attestation:
    item_id: str
    user: str
    at: datetime
    ssh_client: str | None = None
    outcome: str = "pass"  # an operator may also attest that an item failed
    note: str = ""


@dataclass
class DeploymentState:
    """Everything the journal says about one deployment, replayed in order."""

    version: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str = ""
    verdict: str = ""
    verdict_reasons: list[str] = field(default_factory=list)
    override_reason: str = ""
    phases: dict[str, PhaseState] = field(default_factory=dict)
    steps: dict[str, StepState] = field(default_factory=dict)
    attestations: dict[str, Attestation] = field(default_factory=dict)
    rollback: RollbackState | None = None
    notifications_failed: int = 0
    unexpected: list[str] = field(default_factory=list)  # records replay could not use
    failed_ever: list[str] = field(default_factory=list)  # deployment steps that failed at some point
    adopted: bool = False  # deployed elsewhere (CI/CD, a colleague) and adopted here
    ran_ever: list[str] = field(default_factory=list)  # "plan_id:step_id" of every step intent journaled

    @property
    def in_progress(self) -> bool:
        return self.started_at is not None and self.ended_at is None

    @property
    def unfinished(self) -> bool:
        """A deployment in progress, or a rollback open (also one started after the deployment
        finished, when the watch called for it): what reopening resumes and quitting asks about."""
        return self.in_progress or (self.rollback is not None and self.rollback.ended_at is None)

    def current_phase(self, deployment: Deployment) -> str | None:
        """The phase started last and not yet ended, if any."""
        for phase in reversed(deployment.phases):
            state = self.phases.get(phase.id)
            if state and state.started_at and not state.ended_at:
                return phase.id
        return None

    def deploy_clock(self, deployment: Deployment, now: datetime) -> Clock:
        return clock(deployment.target_minutes, self.started_at, self.ended_at, now)

    def phase_clock(self, deployment: Deployment, phase_id: str, now: datetime) -> Clock:
        phase = next(p for p in deployment.phases if p.id == phase_id)
        state = self.phases.get(phase_id, PhaseState())
        return clock(phase.minutes, state.started_at, state.ended_at, now)


class Stage(StrEnum):
    """Where a release stands: the states of the release engine's state machine. The rules
    (controlroom.release.rules) allow each command only in some of them."""

    NO_DEPLOYMENT = "no deployment"  # the checklist has not given a verdict yet
    CHECKED = "checks run"  # a verdict; no deployment started or adopted
    DEPLOYING = "deploying"  # in a phase (or adopted from elsewhere)
    STEP_RUNNING = "step running"  # a deploy or rollback step, or the verification, runs now
    ROLLING_BACK = "rolling back"  # a rollback plan is open
    SUCCEEDED = "finished: succeeded"
    FAILED = "finished: failed"  # failed or aborted
    ROLLED_BACK = "finished: rolled back"  # by a verified rollback
    ROLLBACK_ABANDONED = "rollback abandoned"  # ended as failed with its rollback not verified

    @property
    def finished(self) -> bool:
        return self in FINISHED_STAGES


FINISHED_STAGES = frozenset({Stage.SUCCEEDED, Stage.FAILED, Stage.ROLLED_BACK, Stage.ROLLBACK_ABANDONED})


def stage_of(state: DeploymentState, running_step: str | None = None) -> Stage:
    """The state machine's state, from the replayed journal and the step running in this
    window (a step another window runs shows in the journal as its intent)."""
    if running_step:
        return Stage.STEP_RUNNING
    rollback = state.rollback
    if rollback is not None and rollback.ended_at is None:
        return Stage.ROLLING_BACK  # also after a success: the watch may call for a rollback
    if state.ended_at is not None:
        if state.outcome == "rolled_back":
            return Stage.ROLLED_BACK
        if state.outcome == "success":
            return Stage.SUCCEEDED
        if rollback is not None and not rollback.verified:
            return Stage.ROLLBACK_ABANDONED
        return Stage.FAILED
    if state.started_at is not None:
        return Stage.DEPLOYING
    return Stage.CHECKED if state.verdict else Stage.NO_DEPLOYMENT


def replay(records: list[Record]) -> DeploymentState:
    """Rebuild the deployment's state from its journal records."""
    state = DeploymentState()
    for record in records:
        handler = _HANDLERS.get(record.kind)
        if handler is None:
            continue
        try:
            handler(state, record, record.data)
        except (KeyError, TypeError, ValueError, AttributeError) as error:  # well-chained, but not ours
            state.unexpected.append(f"record {record.seq} ({record.kind}) is not what the engine writes "
                                    f"({type(error).__name__}: {error}); ignored")
    # An intent the journal has no outcome for: the window that ran it is gone (or running
    # it now: a live session shows its own running step as running). Never re-run by itself.
    for steps in (state.steps, state.rollback.steps if state.rollback else {}):
        for step in steps.values():
            if step.status == "running":
                step.status = "unknown"
    return state


def _verdict(state: DeploymentState, record: Record, data: dict[str, Any]) -> None:
    state.verdict = data.get("verdict", "")
    state.verdict_reasons = list(data.get("reasons", []))


def _attested(state: DeploymentState, record: Record, data: dict[str, Any]) -> None:
    state.attestations[data["item_id"]] = Attestation(
        item_id=data["item_id"],
        user=record.operator.get("user", "unknown"),
        ssh_client=record.operator.get("ssh_client"),
        at=record.at,
        outcome=data.get("outcome", "pass"),
        note=data.get("note", ""),
    )


def _deploy_started(state: DeploymentState, record: Record, data: dict[str, Any]) -> None:
    state.version = data.get("version", "")
    state.started_at = record.at
    state.override_reason = data.get("override_reason", "")


def _phase_started(state: DeploymentState, record: Record, data: dict[str, Any]) -> None:
    state.phases.setdefault(data["phase_id"], PhaseState()).started_at = record.at


def _phase_completed(state: DeploymentState, record: Record, data: dict[str, Any]) -> None:
    state.phases.setdefault(data["phase_id"], PhaseState()).ended_at = record.at


def _step_map(state: DeploymentState, data: dict[str, Any]) -> dict[str, StepState]:
    if data.get("plan_id") and state.rollback is not None:
        return state.rollback.steps
    return state.steps


def _step_intent(state: DeploymentState, record: Record, data: dict[str, Any]) -> None:
    state.ran_ever.append(f"{data.get('plan_id', '')}:{data['step_id']}")
    _step_map(state, data)[data["step_id"]] = StepState(status="running", at=record.at,
                                                        by=record.operator.get("user", ""),
                                                        session=int(data.get("session") or 0))


def _step_outcome(state: DeploymentState, record: Record, data: dict[str, Any]) -> None:
    if data.get("status") == "failed" and not data.get("plan_id"):
        state.failed_ever.append(str(data["step_id"]))  # marked done later, it still failed once
    _step_map(state, data)[data["step_id"]] = StepState(
        status=data.get("status", "done"), summary=data.get("summary", ""), reason=data.get("reason", ""), at=record.at
    )


def _release_adopted(state: DeploymentState, record: Record, data: dict[str, Any]) -> None:
    """A deployment this control room did not start (CI/CD, a colleague, a lost journal):
    from now on it is this journal's release, in progress, and can be rolled back."""
    state.version = str(data["version"])
    state.started_at = record.at
    state.adopted = True
    state.override_reason = str(data.get("reason", ""))


def _deploy_finished(state: DeploymentState, record: Record, data: dict[str, Any]) -> None:
    state.ended_at = record.at
    state.outcome = data.get("outcome", "")


def _rollback_started(state: DeploymentState, record: Record, data: dict[str, Any]) -> None:
    state.rollback = RollbackState(plan_id=data["plan_id"], started_at=record.at, reason=data.get("reason", ""))


def _rollback_finished(state: DeploymentState, record: Record, data: dict[str, Any]) -> None:
    if state.rollback is not None:
        state.rollback.ended_at = record.at
        state.rollback.verified = data.get("verified")


def _notification(state: DeploymentState, record: Record, data: dict[str, Any]) -> None:
    if data.get("status") == "failed":
        state.notifications_failed += 1


_HANDLERS = {
    "verdict": _verdict,
    "attested": _attested,
    "deploy_started": _deploy_started,
    "release_adopted": _release_adopted,
    "phase_started": _phase_started,
    "phase_completed": _phase_completed,
    "step_intent": _step_intent,
    "step_outcome": _step_outcome,
    "deploy_finished": _deploy_finished,
    "rollback_started": _rollback_started,
    "rollback_finished": _rollback_finished,
    "notification": _notification,
}
