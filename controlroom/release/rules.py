"""The one place that decides whether a release command is allowed (DESIGN.md §5).

Every command the operator can give is named here; `refusal()` answers, from the release's
state (replayed from its journal) and the window's mode, either None (allowed) or the
reason it is refused, in words for the operator. The session calls it before acting, and
screens call it to dim keys and to say why; nobody else re-implements a rule.

    refusal(Command.FINISH, situation, outcome="success")
    -> "the deployment cannot finish as a success: step deploy-code failed; finish it as failed, or roll back"
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controlroom.release.state import DeploymentState, StepState


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


@dataclass(frozen=True)
class Situation:
    """What the rules look at."""

    state: DeploymentState
    write: bool
    running_step: str | None = None

    @property
    def rollback_in_progress(self) -> bool:
        rollback = self.state.rollback
        return rollback is not None and rollback.ended_at is None

    def failed_steps(self) -> list[str]:
        """Deployment steps that failed, even if later marked done or skipped: a deployment
        that had a failure does not become a success by paperwork."""
        return list(dict.fromkeys(self.state.failed_ever))


def refusal(command: Command, situation: Situation, *, outcome: str | None = None) -> str | None:
    """None when `command` may go ahead now, else why not."""
    if command not in OBSERVATIONS and not situation.write:
        return (f"READ-ONLY: {command.value} is a decision and changes the release; restart with --write "
                "(the journal resumes where it is)")
    state = situation.state
    if command is Command.FINISH:
        return _finish_refusal(situation, outcome or "success")
    if command in (Command.START_ROLLBACK, Command.RUN_ROLLBACK_STEP, Command.VERIFY) and situation.running_step:
        return f"step {situation.running_step!r} is still running"
    if command is Command.START and state.in_progress:
        return f"a deployment of {state.version} is already in progress"
    if command is Command.ADOPT and state.started_at is not None:
        return (f"this journal already has the deployment of {state.version}; adopt another release from a new "
                "session")
    return None


def finish_outcome(situation: Situation) -> str:
    """How finishing now would record the deployment: a failed step makes it `failed`."""
    return "failed" if situation.failed_steps() else "success"


def _finish_refusal(situation: Situation, outcome: str) -> str | None:
    state = situation.state
    if not state.in_progress:
        return "no deployment in progress"
    if situation.running_step:
        return f"step {situation.running_step!r} is still running"
    if situation.rollback_in_progress:
        return ("a rollback is in progress: verify it (v on the Rollback screen), which ends the deployment as "
                "rolled back")
    if outcome == "success":
        failed = situation.failed_steps()
        if failed:
            return (f"the deployment cannot finish as a success: step {', '.join(failed)} failed; "
                    "finish it as failed, or roll back")
        if state.rollback is not None:
            return "the deployment was rolled back: it cannot finish as a success"
    elif outcome not in ("failed", "aborted"):
        return f"a deployment finishes as success, failed or aborted, not {outcome!r}"
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
