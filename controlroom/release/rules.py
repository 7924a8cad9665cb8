"""The one place that decides whether a release command is allowed (DESIGN.md §5).

The release is a state machine: its states are `Stage`s (controlroom.release.state), derived
from the journal and the step running now; its commands are the `Command`s below. `refusal()`
answers, from the stage, the window's mode and the command's own conditions, either None
(allowed) or the reason it is refused, in words for the operator. The engine calls it before
acting, and screens call it (through the engine) to dim keys and to say why; nobody else
re-implements a rule.

    refusal(Command.FINISH, situation, outcome="success")
    -> "the deployment cannot finish as a success: step deploy-code failed; finish it as failed, or roll back"
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controlroom.config.models import Deployment
from controlroom.release.state import DeploymentState, Stage, StepState, stage_of


class Command(StrEnum):
    ATTEST = "attest"
    ATTEST_FAILING = "attest not met"
    START = "start"
    ADOPT = "adopt"
    RUN_STEP = "run"
    DRY_RUN = "dry-run"
    MARK_DONE = "mark"
    SKIP = "skip"
    NEXT_PHASE = "next phase"
    FINISH = "finish"
    START_ROLLBACK = "rollback"
    RUN_ROLLBACK_STEP = "run rollback step"
    VERIFY = "verify"
    NOTIFY = "notify"


# What only looks: allowed in read-only. Everything else is a decision.
OBSERVATIONS = frozenset({Command.DRY_RUN})

_CHECKLIST = {Command.ATTEST, Command.ATTEST_FAILING, Command.DRY_RUN}

# The transitions: what each stage allows (mode and per-command conditions come after).
# MARK_DONE and SKIP act on the deployment's steps while deploying and on the rollback's
# steps while rolling back; `scope` tells them apart.
ALLOWED: dict[Stage, frozenset[Command]] = {
    Stage.NO_DEPLOYMENT: frozenset({*_CHECKLIST, Command.START, Command.ADOPT}),
    Stage.CHECKED: frozenset({*_CHECKLIST, Command.START, Command.ADOPT}),
    Stage.DEPLOYING: frozenset({*_CHECKLIST, Command.RUN_STEP, Command.MARK_DONE, Command.SKIP, Command.NEXT_PHASE,
                                Command.FINISH, Command.START_ROLLBACK, Command.NOTIFY}),
    Stage.STEP_RUNNING: frozenset(_CHECKLIST),
    Stage.ROLLING_BACK: frozenset({*_CHECKLIST, Command.RUN_ROLLBACK_STEP, Command.MARK_DONE, Command.SKIP,
                                   Command.VERIFY, Command.FINISH, Command.NOTIFY}),
    Stage.SUCCEEDED: frozenset({*_CHECKLIST, Command.START_ROLLBACK}),  # the 30-minute watch may call for it
    Stage.FAILED: frozenset({*_CHECKLIST, Command.START_ROLLBACK}),
    Stage.ROLLED_BACK: frozenset(_CHECKLIST),
    Stage.ROLLBACK_ABANDONED: frozenset({*_CHECKLIST, Command.START_ROLLBACK}),
}

# Commands that belong to a rollback, for the scope of MARK_DONE / SKIP / DRY_RUN; ANY_STAGE:
# a command whose stage does not matter (retrying a given-up notification: the resolve of a
# rolled-back release may be the one that needs it).
DEPLOY, ROLLBACK, ANY_STAGE = "deploy", "rollback", "any stage"


@dataclass(frozen=True)
class Situation:
    """What the rules look at."""

    state: DeploymentState
    write: bool
    running_step: str | None = None
    deployment: Deployment | None = None  # the runbook's phases: what "complete" means
    # Why this window may not decide at all now, whatever the stage (None: it may): another
    # control room drives the shared release, or the shared journal is unreachable.
    control: str | None = None

    @property
    def stage(self) -> Stage:
        return stage_of(self.state, self.running_step)

    @property
    def rollback_in_progress(self) -> bool:
        rollback = self.state.rollback
        return rollback is not None and rollback.ended_at is None

    def unfinished_work(self) -> list[str]:
        """What of the runbook's phases is not done: steps neither done nor skipped, in the
        current phase and the ones after it. An adopted release (deployed elsewhere) has no
        phases of ours to complete."""
        if self.deployment is None or self.state.adopted:
            return []
        left: list[str] = []
        for phase in self.deployment.phases:
            phase_state = self.state.phases.get(phase.id)
            if phase_state is not None and phase_state.ended_at is not None:
                continue
            open_steps = [s.id for s in phase.steps if (self.state.steps.get(s.id) is None
                          or self.state.steps[s.id].status not in ("done", "skipped"))]
            if phase_state is None or phase_state.started_at is None:
                left.append(f"phase {phase.title} not started")
            elif open_steps:
                left.append(f"{phase.title}: {', '.join(open_steps)} not done")
        return left

    def failed_steps(self) -> list[str]:
        """Deployment steps that failed, even if later marked done or skipped: a deployment
        that had a failure does not become a success by paperwork."""
        return list(dict.fromkeys(self.state.failed_ever))


def refusal(command: Command, situation: Situation, *, outcome: str | None = None, scope: str = DEPLOY) -> str | None:
    """None when `command` may go ahead now, else why not."""
    if command not in OBSERVATIONS and not situation.write:
        return f"READ-ONLY: {command.value} is a decision and changes the release; open the control room with --write"
    if command not in OBSERVATIONS and situation.control:
        return situation.control
    stage = situation.stage
    if scope == ANY_STAGE:
        return None
    if command not in ALLOWED[stage]:
        return _stage_refusal(command, situation, stage)
    if command in (Command.MARK_DONE, Command.SKIP):
        if scope == ROLLBACK and stage is not Stage.ROLLING_BACK:
            return "no rollback in progress"
        if scope == DEPLOY and stage is Stage.ROLLING_BACK:
            return "a rollback is in progress: its steps are on the Rollback screen (R)"
    if command is Command.FINISH:
        return _finish_refusal(situation, outcome or finish_outcome(situation))
    return None


def _stage_refusal(command: Command, situation: Situation, stage: Stage) -> str:
    state = situation.state
    if stage is Stage.STEP_RUNNING:
        what = "the rollback verification" if situation.running_step == "verify" else f"step {situation.running_step!r}"
        return f"{what} is still running"
    if command is Command.START:
        if stage.finished:
            outcome = (state.outcome or "finished").replace("_", " ")
            return (f"this session's deployment of {state.version} is finished ({outcome}); "
                    "reopen the control room for another")
        return f"a deployment of {state.version} is already in progress"
    if command is Command.ADOPT:
        return (f"this journal already has the deployment of {state.version}; adopt another release from a new "
                "session")
    if command is Command.START_ROLLBACK:
        if stage in (Stage.NO_DEPLOYMENT, Stage.CHECKED):
            return ("no deployment is recorded in this journal: if it was deployed elsewhere (CI/CD, a colleague), "
                    "adopt it first (a), then roll back")
        if stage is Stage.ROLLING_BACK:
            return "a rollback is already in progress"
        return "the deployment was already rolled back (verified)"
    if command in (Command.RUN_ROLLBACK_STEP, Command.VERIFY):
        return "no rollback in progress: start one first (s on the Rollback screen)"
    if stage is Stage.ROLLING_BACK:
        return "a rollback is in progress: finish it on the Rollback screen (R) first"
    if stage in (Stage.NO_DEPLOYMENT, Stage.CHECKED):
        return "the deployment has not started"
    outcome = (state.outcome or "finished").replace("_", " ")
    return f"the deployment of {state.version} is finished ({outcome})"


def finish_outcome(situation: Situation) -> str:
    """How finishing now would record the deployment: `failed` after a failed step, or when
    it abandons a rollback in progress; `aborted` with phases not complete; else `success`."""
    if situation.failed_steps() or situation.rollback_in_progress:
        return "failed"
    return "aborted" if situation.unfinished_work() else "success"


def _finish_refusal(situation: Situation, outcome: str) -> str | None:
    state = situation.state
    if outcome not in ("success", "failed", "aborted"):
        return f"a deployment finishes as success, failed or aborted, not {outcome!r}"
    if situation.rollback_in_progress and state.ended_at is not None:
        return (f"the deployment already finished ({state.outcome.replace('_', ' ')}); the rollback since ends "
                "by its verification (v on the Rollback screen)")
    if outcome != "success":
        return None
    if situation.rollback_in_progress:
        return ("a rollback is in progress: verify it (v on the Rollback screen), which ends the deployment as "
                "rolled back, or finish as failed, which abandons it")
    failed = situation.failed_steps()
    if failed:
        return (f"the deployment cannot finish as a success: step {', '.join(failed)} failed; "
                "finish it as failed, or roll back")
    if state.rollback is not None:
        return "the deployment was rolled back: it cannot finish as a success"
    left = situation.unfinished_work()
    if left:
        return (f"the deployment cannot finish as a success before its phases are complete ({'; '.join(left)}); "
                "finish it as aborted, or complete them")
    return None


def step_refusal(command: Command, step: StepState | None, *, modifying: bool, ran_before: bool = False) -> str | None:
    """Rule 4: every action runs at most once per release, across windows and restarts. An
    intent without an outcome is "outcome unknown" and is resolved by the operator (m / z),
    never re-run by itself."""
    status = step.status if step is not None else "todo"
    if status == "unknown" and command in (Command.RUN_STEP, Command.RUN_ROLLBACK_STEP):
        when = f" at {step.at:%H:%M:%S} UTC" if step is not None and step.at else ""
        who = f" by {step.by}" if step is not None and step.by else ""
        return (f"outcome unknown: it was started{when}{who} and no outcome was journaled (that window closed); "
                "check whether it happened, then mark it done (m) or skip it (z)")
    if status == "running":
        return "it is running"
    if status == "done":
        return "already done: a step runs once per release"
    if status == "failed" and modifying and command in (Command.RUN_STEP, Command.RUN_ROLLBACK_STEP):
        return "it failed, and a modifying step runs once per release: skip it with a reason (z), or roll back"
    if ran_before and modifying and command in (Command.RUN_STEP, Command.RUN_ROLLBACK_STEP):
        return "it already ran once in this release (skipped since): a modifying step runs once per release"
    return None
