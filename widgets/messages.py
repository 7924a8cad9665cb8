"""The UI's messages, in one place.

Data comes in as `Polled`. Commands go out: a screen posts an `EngineCommand` (after its
confirmation), the app hands it to the release engine in a worker, and the answer comes back
to that screen as events — `StepOutput` lines while it runs, then `StepFinished`,
`ProvidersFound`, `RollbackStarted` or `DryRunDone`, or `CommandRefused` with the engine's
reason — and every screen hears `ReleaseChanged`. No callbacks go down into the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.message import Message

from controlroom.live.polling import PollState

if TYPE_CHECKING:
    from textual.message_pump import MessagePump

    from controlroom.release.journal import Record
    from controlroom.release.steps import DryRun, StepOutcome


class Polled(Message):
    """A poller has a new state. A queued one for the same source is superseded."""

    def __init__(self, source: str, state: PollState[Any]) -> None:
        super().__init__()
        self.source = source
        self.state = state

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Polled) and message.source == self.source


# -- commands: screen -> app -> release engine -----------------------------------------------

class EngineCommand(Message):
    """A command for the release engine. `origin` is the screen that posted it: the events
    that answer it go there."""

    def __init__(self) -> None:
        super().__init__()
        self.origin: MessagePump | None = None


class RunChecks(EngineCommand):
    """Run the whole checklist again."""


class RunCheckItem(EngineCommand):
    def __init__(self, item_id: str) -> None:
        super().__init__()
        self.item_id = item_id


class Attest(EngineCommand):
    """A manual item attested as met, or with `failing_reason` as not met."""

    def __init__(self, item_id: str, failing_reason: str | None = None) -> None:
        super().__init__()
        self.item_id = item_id
        self.failing_reason = failing_reason


class StartDeploy(EngineCommand):
    def __init__(self, version: str, override_reason: str | None = None) -> None:
        super().__init__()
        self.version = version
        self.override_reason = override_reason


class RunStep(EngineCommand):
    """Run a step: of the deployment's current phase, or (`rollback`) of the rollback."""

    def __init__(self, step_id: str, *, rollback: bool = False) -> None:
        super().__init__()
        self.step_id = step_id
        self.rollback = rollback


class DryRunStep(EngineCommand):
    """Describe a step and count its rows, changing nothing. `confirm`: the origin wants the
    result to build its confirmation (DryRunDone), not lines in its log."""

    def __init__(self, step_id: str, *, plan_id: str | None = None, rollback: bool = False,
                 confirm: bool = False) -> None:
        super().__init__()
        self.step_id = step_id
        self.plan_id = plan_id
        self.rollback = rollback
        self.confirm = confirm


class MarkDone(EngineCommand):
    def __init__(self, step_id: str, *, rollback: bool = False) -> None:
        super().__init__()
        self.step_id = step_id
        self.rollback = rollback


class SkipStep(EngineCommand):
    def __init__(self, step_id: str, reason: str, *, rollback: bool = False) -> None:
        super().__init__()
        self.step_id = step_id
        self.reason = reason
        self.rollback = rollback


class NextPhase(EngineCommand):
    """Complete the current phase and start the next."""


class FinishDeploy(EngineCommand):
    def __init__(self, outcome: str) -> None:
        super().__init__()
        self.outcome = outcome


class Adopt(EngineCommand):
    def __init__(self, version: str, reason: str) -> None:
        super().__init__()
        self.version = version
        self.reason = reason


class FindProviders(EngineCommand):
    """The providers a plan may disable, with the rows each would touch (ProvidersFound)."""

    def __init__(self, plan_id: str, reason: str) -> None:
        super().__init__()
        self.plan_id = plan_id
        self.reason = reason


class StartRollback(EngineCommand):
    def __init__(self, plan_id: str, reason: str, provider: str = "") -> None:
        super().__init__()
        self.plan_id = plan_id
        self.reason = reason
        self.provider = provider


class VerifyRollback(EngineCommand):
    """Probe again; verified ends the deployment rolled back and resolves the incident."""


# -- events: app -> the screen that asked (ReleaseChanged: the screen on show) ---------------

class EngineEvent(Message):
    """An answer for one screen: it does not bubble on to the app."""

    bubble = False

class StepOutput(EngineEvent):
    """A line of a running step's output (already redacted by the engine)."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line


class StepFinished(EngineEvent):
    def __init__(self, step_id: str, outcome: StepOutcome | None, *, rollback: bool = False) -> None:
        super().__init__()
        self.step_id = step_id
        self.outcome = outcome  # None: a journal-only command (mark done, skip, next phase)
        self.rollback = rollback


class CommandRefused(EngineEvent):
    """The engine refused the command: `reason` says why, for the operator."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class ReleaseChanged(EngineEvent):
    """The release changed (journaled): re-render from the engine's state."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ReleaseChanged)


class ProvidersFound(EngineEvent):
    def __init__(self, plan_id: str, reason: str, choices: list[tuple[str, int | None]]) -> None:
        super().__init__()
        self.plan_id = plan_id
        self.reason = reason
        self.choices = choices


class RollbackStarted(EngineEvent):
    def __init__(self, record: Record) -> None:
        super().__init__()
        self.record = record


class DryRunDone(EngineEvent):
    def __init__(self, step_id: str, plan_id: str | None, dry: DryRun) -> None:
        super().__init__()
        self.step_id = step_id
        self.plan_id = plan_id
        self.dry = dry


# -- the KPI detail: screen -> app (a source's range, read in a worker) -> screen ------------

class LoadKpiHistory(Message):
    """Ask the app for `kpi_id`'s last hour (a Prometheus source's query_range, within a
    deadline); the answer is `KpiHistoryLoaded`, to `origin`."""

    def __init__(self, kpi_id: str) -> None:
        super().__init__()
        self.kpi_id = kpi_id
        self.origin: MessagePump | None = None


class KpiHistoryLoaded(Message):
    """The app's history of `kpi_id` now holds the range read (`error`: why it could not be
    read; `kept`: the source keeps no history, only what was polled shows)."""

    def __init__(self, kpi_id: str, *, error: str | None = None, kept: bool = True) -> None:
        super().__init__()
        self.kpi_id = kpi_id
        self.error = error
        self.kept = kept
