"""The release engine: one environment's release as a state machine — its checklist results,
its verdict, its deployment, its rollback and the journal that records all of it. The app
drives a ReleaseEngine; nothing here knows about Textual.

The state is replayed from the journal (controlroom.release.state: a `DeploymentState`, and
its `Stage`); every command asks controlroom.release.rules first, and is refused with the
reason there, or journaled as intent, acted on, and journaled as outcome.

    session = ReleaseEngine.open(loaded, write=False)            # a new journal
    session = ReleaseEngine.open(loaded, journal_path=path)      # resume the deployment in `path`
    await session.run_checks(); session.verdict.verdict
    session.attest("backups")
    await session.start_deploy("v2.15.0", override_reason=None)
    await session.run_step("env-health", on_output=print)
    session.skip_step("verify-alerts", "alerting is tested nightly"); session.next_phase()
    session.finish_deploy("success")

    # when it goes wrong:
    await session.start_rollback("emergency", "Fudo fails after the deploy", provider="fudo")
    await session.run_rollback_step("switch-version", on_output=print)   # one step at a time
    await session.verify_rollback()   # probes again; verified: resolve sent, deploy rolled back

Its collaborators: `RollbackPlans` (controlroom.release.rollback: what the runbook says about
rolling back), `Incident` (controlroom.release.incident: trigger and resolve), `StepRunner`
(controlroom.release.steps: how one step runs).

Every state change is a journal record first; the deployment's state is replayed from the
journal (controlroom.release.state), so a reopened session has the same phase, the same clocks
(they derive from recorded times) and the same attestations. The clock is injectable: it
stamps every record and drives every clock, so tests can jump minutes ahead.

Journal files live in `journal_directory()` (CONTROLROOM_JOURNAL_DIR, else the user data
directory), one per session, named `<environment>-<UTC start time>.jsonl`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlroom.checks.base import Attestation as ProbeAttestation
from controlroom.checks.base import ProbeContext, ProbeResult, run_probe, with_attestation
from controlroom.checks.run import CheckReport, attestable_ids, run_checklist
from controlroom.checks.verdict import Verdict, decide
from controlroom.config.loader import LoadedConfig
from controlroom.infra.collector import probes_running
from controlroom.config.models import EscalationLevel, Kpi, Phase, RollbackPlan, SqlAction, Step
from controlroom.errors import SessionError
from controlroom.live.sources import BreakerCounts, BreakerSnapshot, Feeds, HealthSnapshot, KpiReading
from controlroom.release import rules
from controlroom.release.alerts import Alerts, failures
from controlroom.release.escalation import EscalationStatus, escalation_status, incident_window
from controlroom.infra.identity import operator_label
from controlroom.infra.logs import logger
from controlroom.notify.outbox import Outbox, OutboxView
from controlroom.release.incident import FIRST_ANSWER_S, Incident
from controlroom.release.journal import Journal, JournalRefused, Record, journal_directory, read_records, records_key
from controlroom.release.rollback import NextMove, RollbackPlans
from controlroom.release.watch import (Watch, WatchWindow, alarms, kpi_values, open_breakers, suspect_provider,
                                      sync_percents, watch_window)
from controlroom.release.shared_journal import OFFLINE_WORDS, TAKE_OVER_WORDS, Crew, SharedJournal, store_dsn
from controlroom.release.rules import Command, Situation
from controlroom.release.state import Clock, DeploymentState, Stage, clock, format_duration, replay
from controlroom.release.steps import DryRun, OutputCallback, StepOutcome, StepRefused, StepRunner, is_modifying

Now = Callable[[], datetime]
POS_HEALTH_TIMEOUT_S = 5.0  # reading the fleet for the report; a dead source means no snapshot


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
        if replay(records).unfinished:
            return path
    return None


def _customer_impact(kpi: Kpi, reading: KpiReading | str | None) -> dict[str, Any]:
    """The customer-impact KPI as a `pos_health` record carries it: its value (None: not
    measured, with why), unit, colour and thresholds."""
    measured = reading if isinstance(reading, KpiReading) else None
    why = reading if isinstance(reading, str) else (measured.error or "") if measured else ""
    return {"kpi_id": kpi.id, "title": kpi.title, "unit": kpi.unit, "green": str(kpi.green), "red": str(kpi.red),
            "value": measured.value if measured else None, "status": measured.colour if measured else "unknown",
            "error": why}


def joinable(records: list[Record], live: int) -> bool:
    """Whether a control room opening on an environment joins its newest shared release:
    while a control room is open on it, or its deployment (or rollback) is not finished.
    Otherwise it opens a new release."""
    return live > 0 or replay(records).unfinished


def _open_shared(loaded: LoadedConfig, *, write: bool, journal_dir: Path, clock: Now,
                 operator: dict[str, str] | None, opened: dict[str, Any]) -> SharedJournal:
    from controlroom.release.journal import operator_identity

    slug = environment_slug(loaded.environment.name)
    return SharedJournal.open(
        store_dsn(loaded), environment=loaded.environment.name, write=write, journal_dir=journal_dir,
        operator=operator or operator_identity(), opened=opened,
        new_release_id=lambda: f"{slug}-{clock().astimezone(UTC):%Y%m%dT%H%M%SZ}", joinable=joinable,
        clock=clock, redact=loaded.secrets.redact)


class ReleaseEngine:
    """One environment's release. Use ReleaseEngine.open()."""

    def __init__(
        self,
        loaded: LoadedConfig,
        journal: Journal | SharedJournal,
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
        # A watcher's checklist: the latest journaled result per item, and how far it has read.
        self._journaled_results: dict[str, ProbeResult] = {}
        self._checks_read: tuple[int, str] = (0, "")
        self.state: DeploymentState = replay(journal.records)
        self.resumed = self.state.unfinished
        self.plans = RollbackPlans(loaded)
        # Notifications: journaled before they are sent; only a control room that may decide sends.
        self.outbox = Outbox(loaded, journal, may_send=self.may_notify, on_record=self._replay)  # type: ignore[arg-type]
        self.incident = Incident(loaded, journal, self.outbox, self.report_link)  # type: ignore[arg-type]
        # The latest readings the control room's pollers passed in (observe), for the watch.
        self.kpi_latest: dict[str, KpiReading] = {}
        self.breakers_latest: BreakerSnapshot | BreakerCounts | None = None
        self.health_latest: HealthSnapshot | None = None
        self._watch: tuple[datetime, Watch] | None = None  # the judge of the current watch
        self._derived: dict[str, tuple[tuple[int, str], Any]] = {}  # what _from_records read last

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
    ) -> "ReleaseEngine":
        """Open a new journal (in journal_dir), or the one at journal_path (resuming it). With
        the shared store ([journal] store = "postgres"), join the environment's release (or
        open a new one) as its driver, or as a watcher when another control room drives it;
        the local copy goes to journal_dir."""
        clock = clock or (lambda: datetime.now(UTC))
        write = write or loaded.environment.write_by_default
        opened = {
            "environment": loaded.environment.name,
            "runbook": loaded.runbook_source,  # a path, or "default (built in)"
            "runbook_name": loaded.runbook.name,
            "config": str(loaded.config_path.resolve()),
        }
        if loaded.journal.shared:
            shared = _open_shared(loaded, write=write, journal_dir=journal_dir or journal_directory(), clock=clock,
                                  operator=operator, opened=opened)
            session = cls(loaded, shared, write=write, clock=clock, environ=environ)
            session._replay()
            return session
        if journal_path is None:
            directory = journal_dir or journal_directory()
            stamp = clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            journal_path = directory / f"{environment_slug(loaded.environment.name)}-{stamp}.jsonl"
            suffix = 1
            while journal_path.exists():
                suffix += 1
                journal_path = directory / f"{environment_slug(loaded.environment.name)}-{stamp}-{suffix}.jsonl"
        journal = Journal.open(journal_path, redact=loaded.secrets.redact, clock=clock, operator=operator, claim=True)
        session = cls(loaded, journal, write=write, clock=clock, environ=environ)
        shared = {"also_open_in": str(journal.other_holder)} if journal.other_holder else {}
        if not journal.records or journal.records[0].kind != "session_opened":
            journal.append("session_opened", {**opened, **shared})
        else:
            journal.append("session_resumed", {"write": write, "problems": [str(p) for p in journal.problems], **shared})
        session._replay()
        return session

    def close(self) -> None:
        """The window closes: give up the claim on the journal (the shared release: this
        control room's session, and the driver's lock with it). Notifications stop: what
        is still pending stays so in the journal, and the next control room sends it."""
        self.outbox.stop()
        self.journal.close()

    async def aclose(self) -> None:
        """close(), and the notifications' connections closed on the way (on the event loop)."""
        await self.outbox.aclose()
        self.close()

    # -- notifications -----------------------------------------------------------------

    def may_notify(self) -> bool:
        """Only a control room that may decide sends (with the shared store: the driver)."""
        return self.write and not self.watching

    def resume_notifications(self) -> int:
        """Send again what the journal says is still pending (a reopen, a takeover): the
        same notices, the same dedup_keys. Call it on the event loop."""
        return self.outbox.resume() if self.may_notify() else 0

    def notifications(self) -> OutboxView:
        return self.outbox.view()

    def retry_notifications(self) -> list[str]:
        """Send every given-up notification again (a decision: refused read-only, or watching)."""
        refusal = rules.refusal(Command.NOTIFY, self.situation(), scope=rules.ANY_STAGE)
        if refusal:
            raise SessionError(refusal)
        again = self.outbox.retry_given_up()
        if not again:
            raise SessionError("no notification was given up")
        return [notice.label for notice in again]

    def report_link(self) -> tuple[str, str]:
        """(href, text) of the post-deployment report: the runbook's report_url, or the file."""
        template = self.loaded.runbook.notifications.report_url
        release = Path(getattr(self.journal, "path", "release")).stem
        if template:
            href = template.replace("{environment}", environment_slug(self.loaded.environment.name)).replace("{release}", release)
        else:
            href = str(Path(getattr(self.journal, "path", "release.jsonl")).with_suffix("").with_suffix(".report.md"))
        return href, "Post-deployment report"

    def _change_event(self, event: str, summary: str, **details: str) -> None:
        """A PagerDuty change event (a deploy marker on the service's incident page)."""
        if "pagerduty" not in self.outbox.channels or not self.may_notify():
            return
        last = self.journal.records[-1] if self.journal.records else None
        facts = {"event": event, "version": self.state.version, "phase": self._phase_name(),
                 "operator": operator_label(last.operator) if last is not None else "",
                 "verdict": self.verdict_name, **details}
        try:
            self.outbox.enqueue("pagerduty", "change", summary, dedup_key=self.incident.dedup_key,
                                details={k: v for k, v in facts.items() if v}, links=(self.report_link(),))
        except SessionError as refused:  # the command it marks is journaled: a marker is not worth failing it
            logger.warning("deploy marker %s not queued: %s", event, refused)

    def _phase_name(self) -> str:
        current = self.current_phase()
        if current is not None:
            return current.title
        return self.state.outcome or ("not started" if not self.state.started_at else "")

    # -- several control rooms on one release (the shared store) ------------------------

    @property
    def watching(self) -> bool:
        """This control room does not drive the shared release: it journals nothing."""
        return isinstance(self.journal, SharedJournal) and not self.journal.can_append

    @property
    def follows_driver(self) -> bool:
        """A watcher whose checklist is the driver's: another control room drives, or has
        journaled what it measured. (A watcher of a release nobody has driven yet — the
        read-only demo — probes for itself, and journals nothing.)"""
        if not self.watching:
            return False
        crew = self.crew()
        return (crew is not None and crew.driver is not None) or any(True for _ in self.journal.of_kind("check"))

    def _refuse_if_watching(self) -> None:
        """A watcher that follows a driver probes nothing: its checklist is the driver's."""
        if self.follows_driver:
            control = self.journal.decision_refusal() or "another control room drives this release"
            raise SessionError(f"you watch this release: its checklist shows what the driver measured ({control})")

    def crew(self) -> Crew | None:
        """Who drives the shared release and who watches (None: a file journal)."""
        return self.journal.crew() if isinstance(self.journal, SharedJournal) else None

    def take_notices(self) -> list[str]:
        """What happened to the crew or the shared journal's link since the last call."""
        return self.journal.take_notices() if isinstance(self.journal, SharedJournal) else []

    def take_over_words(self) -> str:
        """What the operator types to confirm T: take over, or (the store being away, as the
        driver) continue offline."""
        crew = self.crew()
        return OFFLINE_WORDS if crew is not None and not crew.online and crew.driving else TAKE_OVER_WORDS

    def take_over_refusal(self) -> str | None:
        if not isinstance(self.journal, SharedJournal):
            return ("this release's journal is a file on this machine ([journal] store = \"file\"): "
                    "there is no driver to take over from")
        return self.journal.take_over_refusal()

    def take_over(self, typed: str, reason: str = "") -> Record:
        """T: become the driver of the shared release whose driver's control room is gone
        (journaled, shown to every window), or, the store being away, continue offline
        (journaled here). `typed` must be take_over_words()."""
        refusal = self.take_over_refusal()
        if refusal:
            raise SessionError(refusal)
        words = self.take_over_words()
        if typed.strip().lower() != words:
            raise SessionError(f"type {words!r} to confirm")
        assert isinstance(self.journal, SharedJournal)
        record = self.journal.take_over(reason.strip() or typed.strip())
        self._replay()
        self.resume_notifications()  # what the gone driver left pending is ours to send now
        return record

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

    def release_marks(self) -> list[tuple[str, datetime]]:
        """The moments a KPI plot marks, oldest first: the deployment's start and finish, and
        the rollback's start and end (from the journal's state; none before they happen)."""
        state = self.state
        marks = [("deploy start", state.started_at), ("deploy finish", state.ended_at)]
        if state.rollback is not None:
            marks += [("rollback start", state.rollback.started_at), ("rollback end", state.rollback.ended_at)]
        return sorted(((label, at) for label, at in marks if at is not None), key=lambda mark: mark[1])

    def deploy_clock(self) -> Clock:
        return self.state.deploy_clock(self.deployment, self.now())

    def phase_clock(self, phase_id: str) -> Clock:
        return self.state.phase_clock(self.deployment, phase_id, self.now())

    # -- the rules (controlroom.release.rules decides; this only asks) -------------------

    def situation(self) -> Situation:
        return Situation(self.state, self.write, self.running_step, self.deployment,
                         control=self.journal.decision_refusal())

    @property
    def stage(self) -> Stage:
        """The state machine's state now."""
        return self.situation().stage

    def command_refusal(self, command: Command, *, outcome: str | None = None, scope: str = rules.DEPLOY) -> str | None:
        """Why `command` is refused now, or None: what screens ask to dim a key."""
        return rules.refusal(command, self.situation(), outcome=outcome, scope=scope)

    def _allow(self, command: Command, *, outcome: str | None = None, scope: str = rules.DEPLOY) -> None:
        """Refuse `command` unless the rules allow it, on the journal as it is on disk now
        (another window on the same journal may have moved the release on)."""
        self.refresh()
        refusal = self.command_refusal(command, outcome=outcome, scope=scope)
        if refusal:
            raise SessionError(refusal)

    def refresh(self) -> None:
        """Catch up with records other windows appended to this journal."""
        if self.journal.refresh():
            self._replay()

    def finish_outcome(self) -> str:
        """How `f` would record the deployment now: success, or failed after a failed step."""
        return rules.finish_outcome(self.situation())

    def runner(self) -> StepRunner:
        return StepRunner(self.loaded, write=self.write, journal=self.journal, environ=self.environ,
                          attestations=self.attestations(), outbox=self.outbox)

    def describe(self, step_id: str) -> str:
        return self.runner().describe(self.step(step_id), self._values())

    def refusal(self, step_id: str) -> str | None:
        """Why run_step would refuse this step right now, or None."""
        step = self.step(step_id)
        refused = self.command_refusal(Command.RUN_STEP)
        if refused:
            return refused
        current = self.current_phase()
        if current is None or current.id != self.phase_of(step_id).id:
            return f"{step.title!r} belongs to another phase than the current one"
        once = rules.step_refusal(Command.RUN_STEP, self.state.steps.get(step_id), modifying=is_modifying(step),
                                  ran_before=f":{step_id}" in self.state.ran_ever)
        if once:
            return f"{step.title}: {once}"
        return self.runner().refusal(step)

    def modifying(self, step_id: str) -> bool:
        return is_modifying(self.step(step_id))

    @staticmethod
    def modifying_step(step: Step) -> bool:
        return is_modifying(step)

    def _values(self) -> dict[str, str]:
        return {"version": self.state.version} if self.state.version else {}

    def _replay(self) -> None:
        self.state = replay(self.journal.records)
        if isinstance(self.journal, SharedJournal):
            # A step whose intent the live driver journaled is running there, not unknown.
            live = self.journal.live_driver_session()
            rollback_steps = self.state.rollback.steps if self.state.rollback else {}
            for step in [*self.state.steps.values(), *rollback_steps.values()]:
                if live and step.status == "unknown" and step.session == live:
                    step.status = "running"
            if self.follows_driver:
                self._show_journaled_results()

    def _show_journaled_results(self) -> None:
        """A watcher shows what the driver measured and attested: each item's latest
        journaled result, the journal's attestations, the verdict decided from them. Only the
        records it has not read yet are read (a long release has thousands)."""
        records = self.journal.records
        read, last_hash = self._checks_read
        if read > len(records) or (read and records[read - 1].hash != last_hash):
            read, self._journaled_results = 0, {}  # the journal was rebuilt (a branch set aside)
        for record in records[read:]:
            if record.kind != "check":
                continue
            for item in record.data.get("results", []):
                try:
                    self._journaled_results[str(item["id"])] = ProbeResult(
                        str(item["id"]), item["status"], str(item.get("evidence", "")),
                        float(item.get("duration_ms", 0.0)), record.at, measured=dict(item.get("measured") or {}))
                except (KeyError, TypeError, ValueError):
                    continue
        self._checks_read = records_key(records)
        results = dict(self._journaled_results)
        for item_id, attestation in self.attestations().items():
            results[item_id] = self._attested_result(item_id, attestation, results.get(item_id))
        self.results = self._failing_attestations(dict(results))
        self.verdict = decide(self.loaded.runbook, self.results) if self.results else None

    def _append(self, kind: str, data: dict[str, Any], *, unless: Callable[[], str | None] | None = None) -> None:
        """Journal a record. `unless` decides, under the journal's lock and on every record on
        disk, whether it may still be written (a reason refuses it): two windows deciding the
        same step at once cannot both win."""
        guard = None
        if unless is not None:
            def guard(records: list[Record]) -> str | None:
                self.state = replay(records)
                return unless()
        try:
            self.journal.append(kind, data, unless=guard)
        finally:
            self._replay()

    # -- checklist ---------------------------------------------------------------------

    async def run_checks(self, on_result: Callable[[ProbeResult], None] | None = None) -> CheckReport:
        """Run every checklist item; journal the results and the verdict (when it changed).
        Each result is in `results` as it lands (then `on_result` hears it), so its row shows
        it at once; the journal and the verdict wait for the whole checklist."""
        self._refuse_if_watching()
        self.checks_running = True

        def landed(result: ProbeResult) -> None:
            self.results[result.item_id] = self._failing_attestations({result.item_id: result})[result.item_id]
            if on_result is not None:
                on_result(result)

        try:
            with probes_running():
                report = await run_checklist(self.loaded, self.attestations(), environ=self.environ, on_result=landed)
        finally:
            self.checks_running = False
        self.report = report
        self.results = self._failing_attestations(dict(report.results))
        self._journal_checks(list(self.results.values()))
        self._decide(force_journal=self.verdict is None)
        return report

    async def run_item(self, item_id: str) -> ProbeResult:
        """Run one checklist item again and update the verdict."""
        self._refuse_if_watching()
        items = {item.id: item for _, item in self.loaded.runbook.items()}
        if item_id not in items:
            raise SessionError(f"no checklist item {item_id!r}")
        attestations = self.attestations()
        with probes_running():
            async with ProbeContext(self.loaded, attestations=attestations, environ=self.environ,
                                    values=self._values()) as ctx:
                result = await run_probe(items[item_id], ctx)
        if result.status == "skipped" and item_id in attestations:
            result = with_attestation(result, attestations[item_id], self.loaded.secrets.redact)
        result = self._failing_attestations({item_id: result})[item_id]
        self.results[item_id] = result
        self._journal_checks([result])
        self._decide()
        return result

    def attest(self, item_id: str, note: str = "") -> ProbeResult:
        """The operator vouches for a manual item: journaled with who and when; the item
        passes and the verdict is decided again."""
        self._allow(Command.ATTEST)
        if item_id not in self.attestable():
            raise SessionError(f"{item_id!r} cannot be attested; only {', '.join(self.attestable())} can")
        self._append("attested", {"item_id": item_id, "outcome": "pass", "note": note},
                     unless=lambda: self.command_refusal(Command.ATTEST))
        result = self._attested_result(item_id, self.attestations()[item_id], self.results.get(item_id))
        self.results[item_id] = result
        self._decide()
        return result

    def _attested_result(self, item_id: str, attestation: ProbeAttestation, previous: ProbeResult | None) -> ProbeResult:
        """An attested item's result: a manual item passes; a probed one keeps its measurement,
        with the attestation."""
        item = next(i for _, i in self.loaded.runbook.items() if i.id == item_id)
        if item.kind == "manual":
            return ProbeResult(item_id, "pass", attestation.describe(), 0.0, attestation.at,
                               attested_by=attestation.by, attested_at=attestation.at)
        if previous is not None:
            return with_attestation(previous, attestation, self.loaded.secrets.redact)
        return ProbeResult(item_id, "skipped", attestation.describe(), 0.0, attestation.at,
                           attested_by=attestation.by, attested_at=attestation.at)

    def attest_failing(self, item_id: str, reason: str) -> ProbeResult:
        """The operator records that a manual item does NOT hold (on-call unavailable, a
        critical vulnerability unpatched): journaled with who, when and why; the item fails
        and its on_fail decides the verdict. A later attestation that it holds replaces it."""
        self._allow(Command.ATTEST_FAILING)
        if item_id not in self.attestable():
            raise SessionError(f"{item_id!r} cannot be attested; only {', '.join(self.attestable())} can")
        reason = reason.strip()
        if len(reason) < 3:
            raise SessionError("recording an item as not met needs a reason")
        self._append("attested", {"item_id": item_id, "outcome": "fail", "note": reason},
                     unless=lambda: self.command_refusal(Command.ATTEST_FAILING))
        result = self._failing_attestations({item_id: self.results.get(item_id)})[item_id]
        self.results[item_id] = result
        self._journal_checks([result])
        self._decide()
        return result

    def _failing_attestations(self, results: dict[str, ProbeResult | None]) -> dict[str, ProbeResult]:
        """Items an operator attested as not met fail, whatever their probe said."""
        out = {key: value for key, value in results.items() if value is not None}
        for item_id, attestation in self.state.attestations.items():
            if attestation.outcome != "fail" or item_id not in results:
                continue
            by = f"{attestation.user} (from {attestation.ssh_client})" if attestation.ssh_client else attestation.user
            evidence = self.loaded.secrets.redact(
                f"attested NOT met by {by} at {attestation.at:%Y-%m-%dT%H:%M:%SZ}: {attestation.note}")
            out[item_id] = ProbeResult(item_id, "fail", evidence, 0.0, attestation.at,
                                       attested_by=by, attested_at=attestation.at)
        return out

    def _journal_checks(self, results: list[ProbeResult]) -> None:
        if not self.journal.can_append:
            return  # a watcher: the driver journals what it measures
        sections = {item.id: (section, item) for section, item in self.loaded.runbook.items()}
        self.journal.append("check", {"results": [
            {
                "id": r.item_id,
                "title": sections[r.item_id][1].title,
                "section": sections[r.item_id][0].id,
                "status": r.status,
                "evidence": r.evidence,
                "duration_ms": round(r.duration_ms, 1),
                **({"measured": dict(r.measured)} if r.measured else {}),
            }
            for r in results
        ]})

    def record_pos_health(self, snapshot: HealthSnapshot, impact: KpiReading | str | None = None) -> None:
        """An observation (journaled read-only too): the providers' locations connected and
        disconnected, as the report's POS Integration Health shows them, with the runbook's
        customer-impact KPI (`impact`: its reading, or why it was not measured). Not journaled
        again while nothing changed."""
        providers = [{"provider": p.provider, "total": p.total, "connected": p.connected,
                      "disconnected": p.disconnected, "failing": p.failing} for p in snapshot.providers]
        total = sum(p["total"] for p in providers)
        data = {"providers": providers,
                "health_percent": round(100.0 * sum(p["connected"] for p in providers) / total, 1) if total else None}
        kpi = self.loaded.runbook.customer_impact_kpi()
        if kpi is not None:
            data["customer_impact"] = _customer_impact(kpi, impact)
        last = next((r for r in reversed(self.journal.records) if r.kind == "pos_health"), None)
        if (last is None or last.data != data) and self.journal.can_append:
            self._append("pos_health", data)

    async def measure_pos_health(self, timeout_s: float = POS_HEALTH_TIMEOUT_S) -> None:
        """Read the providers' health now (the same query as the POS screen) and the
        customer-impact KPI (once, within its timeout), and journal them; a dead fleet source
        only means no snapshot, a dead KPI source only "not measured"."""
        feeds = Feeds(self.loaded)
        kpi = self.loaded.runbook.customer_impact_kpi()
        try:
            if feeds.health is not None:
                snapshot, impact = await asyncio.gather(
                    asyncio.wait_for(feeds.health.fetch(), timeout_s),
                    feeds.read_kpi_once(kpi) if kpi is not None else asyncio.sleep(0),
                )
                self.record_pos_health(snapshot, impact)
        except Exception:  # noqa: BLE001 - the report then says the fleet was not measured
            pass
        finally:
            await feeds.close()

    def _decide(self, *, force_journal: bool = False) -> Verdict:
        verdict = decide(self.loaded.runbook, self.results)
        changed = self.verdict is None or verdict.verdict != self.verdict.verdict or verdict.reasons != self.verdict.reasons
        self.verdict = verdict
        if changed or force_journal:
            self._journal_verdict()
        return verdict

    def _journal_verdict(self) -> None:
        if not self.journal.can_append:
            return
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
        return self.command_refusal(Command.START)

    async def start_deploy(self, version: str, override_reason: str | None = None) -> None:
        """Start the deployment of `version`. Refused when the verdict is not GO, unless an
        override reason is given (journaled with the verdict it overrode)."""
        version = version.strip()
        if not version:
            raise SessionError("give the version to deploy")
        refusal = self.start_deploy_refusal()
        if refusal:
            raise SessionError(refusal)
        pattern = self.deployment.version_pattern
        if not re.fullmatch(pattern, version):
            raise SessionError(f"{version[:70]!r} is not a version this runbook deploys (it must match {pattern})")
        reason = (override_reason or "").strip()
        verdict = self.verdict_name
        if verdict != "GO" and not reason:
            raise SessionError(f"the verdict is {verdict}, not GO: starting needs an override with a typed reason")
        git_sha = await self._git_sha(version)
        self._allow(Command.START)  # again: another window may have started one meanwhile
        self._journal_verdict()
        self._append("deploy_started", unless=lambda: self.command_refusal(Command.START), data={
            "version": version,
            "git_sha": git_sha,
            "verdict": verdict,
            "override_reason": reason if verdict != "GO" else "",
        })
        self._append("phase_started", {"phase_id": self.deployment.phases[0].id})
        self._change_event("deploy_started", f"{self.loaded.environment.name}: deployment of {version} started"
                           + (f" (verdict {verdict}, overridden: {reason})" if verdict != "GO" else ""))

    def adopt(self, version: str, reason: str) -> None:
        """Adopt a release this control room did not start (deployed by CI/CD, a colleague,
        or a window whose journal is gone): journaled with who and why; afterwards it can be
        rolled back like any other."""
        self._allow(Command.ADOPT)
        version, reason = version.strip(), reason.strip()
        if not re.fullmatch(self.deployment.version_pattern, version):
            raise SessionError(f"{version[:70]!r} is not a version this runbook deploys "
                               f"(it must match {self.deployment.version_pattern})")
        if len(reason) < 3:
            raise SessionError("adopting a release needs a reason (who deployed it, and why you take it over)")
        self._append("release_adopted", {"version": version, "reason": reason, "verdict": self.verdict_name},
                     unless=lambda: self.command_refusal(Command.ADOPT))

    async def run_step(self, step_id: str, on_output: OutputCallback | None = None) -> StepOutcome:
        """Run a step of the current phase: `step_intent` is on disk before it starts,
        `step_outcome` after. StepRefused / SessionError when it must not run."""
        self.refresh()
        refusal = self.refusal(step_id)
        if refusal:
            raise StepRefused(refusal)
        where = {"phase_id": self.phase_of(step_id).id}
        return await self._run_journaled(self.step(step_id), where, self._values(), on_output)

    async def _run_journaled(
        self, step: Step, where: dict[str, str], values: dict[str, str], on_output: OutputCallback | None
    ) -> StepOutcome:
        """Every step the operator runs, deploy or rollback, goes through here: the intent is
        journaled (fsync'ed) before the action starts and the outcome after, a cancelled step
        is journaled as failed, and probe results feed the verdict. `where` names the phase
        or the rollback plan."""
        runner = self.runner()
        intent = secrets.token_hex(8)  # ties the outcome to this one run of the step
        try:
            session = {"session": self.journal.session_key} if isinstance(self.journal, SharedJournal) else {}
            self._append("step_intent", {"step_id": step.id, **where, "action": step.action.kind,
                                         "detail": runner.describe(step, values), "intent_id": intent, **session},
                         unless=lambda: self.rollback_refusal(step.id) if "plan_id" in where else self.refusal(step.id))
        except JournalRefused as refused:  # another window took it between our check and our record
            raise StepRefused(str(refused)) from None
        self.running_step = step.id
        try:
            try:
                outcome = await runner.run(step, values, on_output)
            except asyncio.CancelledError:
                self._append("step_outcome", {"step_id": step.id, **where, "status": "failed", "intent_id": intent,
                                              "summary": "cancelled", "reason": "the control room was closed"})
                raise
            except StepRefused as refused:
                outcome = StepOutcome("failed", str(refused))
            self._append("step_outcome", {"step_id": step.id, **where, "status": outcome.status, "intent_id": intent,
                                          "summary": outcome.summary, "reason": "",
                                          **({"count": outcome.count} if outcome.count is not None else {})})
        finally:
            self.running_step = None
        if "plan_id" in where:
            self._rollback_progressed()
        for result in outcome.probe_results:
            self.results[result.item_id] = result
        if outcome.probe_results:
            # Journaled like any check: the report, and every window watching, see what the
            # step measured (a failed smoke test turns the verdict NO-GO for all of them).
            self._journal_checks(list(outcome.probe_results))
            self._decide()
        return outcome

    async def dry_run(self, step_id: str) -> DryRun:
        return await self.runner().dry_run(self.step(step_id), self._values())

    def mark_done(self, step_id: str, note: str = "") -> None:
        self._outcome_without_running(step_id, "done", note or "marked done by the operator", "")

    def skip_step(self, step_id: str, reason: str) -> None:
        reason = reason.strip()
        if not reason:
            raise SessionError("skipping a step needs a reason")
        self._outcome_without_running(step_id, "skipped", "skipped by the operator", reason)

    def _outcome_without_running(self, step_id: str, status: str, summary: str, reason: str) -> None:
        self._allow(Command.MARK_DONE if status == "done" else Command.SKIP)
        step = self.step(step_id)
        phase = self.phase_of(step_id)
        current = self.current_phase()
        if current is None or current.id != phase.id:
            raise SessionError(f"{step.title!r} belongs to another phase than the current one")
        command = Command.MARK_DONE if status == "done" else Command.SKIP

        def refused() -> str | None:
            once = rules.step_refusal(command, self.state.steps.get(step_id), modifying=is_modifying(step))
            return self.command_refusal(command) or (f"{step.title}: {once}" if once else None)

        reason_refused = refused()
        if reason_refused:
            raise SessionError(reason_refused)
        self._append("step_outcome", {"step_id": step_id, "phase_id": phase.id, "status": status,
                                      "summary": summary, "reason": reason}, unless=refused)

    def open_steps(self, phase_id: str) -> list[str]:
        phase = next(p for p in self.deployment.phases if p.id == phase_id)
        return [s.id for s in phase.steps if self.state.steps.get(s.id) is None
                or self.state.steps[s.id].status not in ("done", "skipped")]

    def next_phase(self) -> Phase | None:
        """Complete the current phase (every step done or skipped) and start the next; the
        new phase, or None when the last phase was completed."""
        self._allow(Command.NEXT_PHASE)
        current = self.current_phase()
        if current is None:
            raise SessionError("no phase is running")
        waiting = self.open_steps(current.id)
        if waiting:
            raise SessionError(f"{current.title}: {len(waiting)} step(s) not done or skipped: {', '.join(waiting)}")
        phases = self.deployment.phases
        index = next(i for i, p in enumerate(phases) if p.id == current.id)
        self._append("phase_completed", {"phase_id": current.id},
                     unless=lambda: self.command_refusal(Command.NEXT_PHASE) or (
                         None if self.current_phase() == current and not self.open_steps(current.id)
                         else f"{current.title} changed meanwhile (another window)"))
        if index + 1 < len(phases):
            self._append("phase_started", {"phase_id": phases[index + 1].id})
            return phases[index + 1]
        return None

    def finish_deploy(self, outcome: str | None = None) -> None:
        """End the deployment as `outcome` (default: what finish_outcome() says). Never a
        success after a failed step or during or after a rollback; finishing as failed while
        a rollback is open abandons it (not verified: the incident stays open)."""
        outcome = outcome or self.finish_outcome()
        self._allow(Command.FINISH, outcome=outcome)
        records: list[tuple[str, dict[str, Any]]] = []
        rollback = self.state.rollback
        if rollback is not None and rollback.ended_at is None:
            records.append(("rollback_finished", {"plan_id": rollback.plan_id, "verified": False, "abandoned": True}))
        current = self.current_phase()
        if current is not None:
            records.append(("phase_completed", {"phase_id": current.id}))
        records.append(("deploy_finished", {"outcome": outcome}))
        for index, (kind, data) in enumerate(records):  # the first decides, under the lock
            self._append(kind, data, unless=(lambda: self.command_refusal(Command.FINISH, outcome=outcome))
                         if index == 0 else None)
        self._change_event("deploy_finished", f"{self.loaded.environment.name}: deployment of {self.state.version} "
                           f"finished: {outcome}", outcome=outcome)
        minutes = self.deployment.watch_minutes
        if outcome == "success" and minutes > 0:
            baseline = open_breakers(self.breakers_latest) if self.breakers_latest is not None else None
            self._append("watch_started", {"minutes": minutes, "kpis": kpi_values(self.kpi_latest.values()),
                                           "breach_polls": self.deployment.breach_polls, "open_breakers": baseline,
                                           "sync_percent": sync_percents(self.health_latest)})

    # -- the watch after a successful finish -------------------------------------------

    def watch(self) -> WatchWindow | None:
        return self._from_records("watch", watch_window)

    def alarm(self) -> Record | None:
        """The breach that raised the alarm, which recommends the rollback now (None: none, or
        a rollback started since)."""
        breaches = self.alarms()
        return breaches[0] if breaches else None

    def alarms(self) -> list[Record]:
        """Every breach of the watch since the alarm, first first."""
        return self._from_records("alarms", alarms)

    def _from_records(self, name: str, derive: Callable[[list[Record]], Any]) -> Any:
        """`derive(records)`, read again only when the journal changed: every poll and every
        tick asks, and a long release has thousands of records."""
        records = self.journal.records
        key = records_key(records)
        cached = self._derived.get(name)
        if cached is None or cached[0] != key:
            cached = self._derived[name] = (key, derive(records))
        return cached[1]

    def observe(self, value: object) -> dict[str, Any] | None:
        """A poller's snapshot (a KPI reading, the breakers, the fleet's health). During the
        watch, judged: returns the `watch_breach` data when it raises the alarm (journaled,
        and told to Slack), else None. Watchers judge nothing: the driver journals it."""
        if isinstance(value, KpiReading):
            self.kpi_latest[value.kpi_id] = value
        elif isinstance(value, (BreakerSnapshot, BreakerCounts)):
            self.breakers_latest = value
        elif isinstance(value, HealthSnapshot):
            self.health_latest = value
        window = self.watch()
        now = self.now()
        # Judged by the control room that decides: a read-only one or a watcher journals nothing of it.
        if window is None or not window.active(now) or not self.may_notify() or self.state.rollback is not None:
            return None
        judge = self._judge(window)
        if isinstance(value, KpiReading):
            breach = judge.kpi(value, now)
        elif isinstance(value, (BreakerSnapshot, BreakerCounts)):
            breach = judge.breakers(value, now)
        else:
            return None
        if breach is None:
            return None
        plan = self.watch_plan()
        data = {**breach, "plan_id": plan.id, "provider": breach.get("provider") or self._worst_provider()}
        first = not self.alarms()
        self._append("watch_breach", data)
        if first and "slack" in self.outbox.channels and self.may_notify():  # one @here per alarm, not per KPI
            self.outbox.enqueue("slack", "info", f"@here rollback recommended: {breach['what']}",
                                dedup_key=self.incident.dedup_key, provider=str(data["provider"]),
                                details={"version": self.state.version, "phase": "watch after the deployment",
                                         "reason": f"{plan.title} recommended"})
        return data

    def watch_tick(self) -> bool:
        """End the watch when its time is up (journaled with the KPIs then); True if it ended."""
        window = self.watch()
        if window is None or window.ended_at is not None or self.now() < window.until or not self.may_notify():
            return False
        self._end_watch("time is up")
        return True

    def watch_plan(self) -> RollbackPlan:
        plan_id = self.deployment.watch_rollback_plan
        return self.plans.plan(plan_id) if plan_id else self.plans.all[0]

    def _end_watch(self, why: str) -> None:
        self._append("watch_ended", {"why": why, "kpis": {kpi.id: reading.value for kpi in self.loaded.runbook.kpis
                                                          if (reading := self.kpi_latest.get(kpi.id)) is not None}})

    def _judge(self, window: WatchWindow) -> Watch:
        if self._watch is None or self._watch[0] != window.started_at:
            started = next(r for r in reversed(self.journal.records) if r.kind == "watch_started")
            baseline = started.data.get("open_breakers")
            self._watch = (window.started_at, Watch(self.loaded.runbook, baseline if isinstance(baseline, dict) else None,
                                                    breached=[r.data for r in window.breaches]))
        return self._watch[1]

    def _worst_provider(self) -> str:
        """The provider a KPI alarm points at (`suspect_provider`), against the sync success
        journaled when the watch began."""
        view = self.loaded.runbook.views.health
        if view is None:
            return ""
        started = next((r for r in reversed(self.journal.records) if r.kind == "watch_started"), None)
        baseline = started.data.get("sync_percent") if started is not None else None
        return suspect_provider(self.health_latest, view.sync_green, view.sync_red,
                                baseline if isinstance(baseline, dict) else None)

    # -- rollback ----------------------------------------------------------------------

    def rollback_in_progress(self) -> bool:
        return self.situation().rollback_in_progress

    def rollback_plan(self, plan_id: str) -> RollbackPlan:
        return self.plans.plan(plan_id)

    def current_rollback_plan(self) -> RollbackPlan | None:
        rollback = self.state.rollback
        return self.plans.plan(rollback.plan_id) if rollback is not None else None

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
        plan = self.plans.plan(rollback.plan_id)
        return clock(plan.target_minutes, rollback.started_at, rollback.ended_at, self.now())

    def escalation(self) -> EscalationStatus | None:
        """The escalation level of this deployment's incident, while it is open (None when
        there is none, or it ended)."""
        started, ended = incident_window(self.journal.records)
        if started is None or ended is not None:
            return None
        return escalation_status(self.loaded.runbook.escalation, started, self.now())

    def alerts(self) -> Alerts:
        """What the bell answers to (controlroom.release.alerts), as things stand now."""
        steps, notifications = self._from_records("failures", failures)
        escalation = self.escalation()
        return Alerts(steps, notifications, self.verdict_name == "NO-GO", escalation.level if escalation else 0)

    def incident_window(self) -> tuple[datetime | None, datetime | None]:
        return incident_window(self.journal.records)

    def paged(self) -> list[Record]:
        """The `escalation_paged` records of the open incident, oldest first."""
        started, _ = incident_window(self.journal.records)
        return [r for r in self.journal.of_kind("escalation_paged") if started is not None and r.at >= started]

    def page_target(self) -> EscalationLevel | None:
        """The level `e` would page: the one after both the level reached by time and the
        highest one paged already (None: no incident, or the top of the ladder)."""
        status = self.escalation()
        if status is None:
            return None
        reached = max([status.level, *(int(r.data.get("level", 0)) for r in self.paged())])
        return next((level for level in self.loaded.runbook.escalation.levels if level.level > reached), None)

    def page_refusal(self) -> str | None:
        refusal = rules.refusal(Command.NOTIFY, self.situation(), scope=rules.ANY_STAGE)
        if refusal:
            return refusal
        if self.escalation() is None:
            return "no incident is open: there is nobody to escalate to"
        level = self.page_target()
        if level is None:
            return "the top of the escalation ladder is reached: there is no next level to page"
        if not level.pageable:
            return (f"L{level.level} {level.title} has no page target in the runbook (give its [[escalation.levels]] "
                    "a pagerduty_routing_key_secret or a slack_mention)")
        missing = [c for c, wanted in (("pagerduty", level.pagerduty_routing_key_secret), ("slack", level.slack_mention))
                   if wanted and c not in self.outbox.channels]
        if missing:
            return f"L{level.level} pages through {', '.join(missing)}, which [notifications] does not configure"
        return None

    def page_words(self) -> str:
        level = self.page_target()
        return f"page L{level.level}" if level is not None else "page"

    async def page_next_level(self, typed: str) -> list[str]:
        """e: page the next escalation level now (typed confirmation, journaled): its PagerDuty
        service is triggered (a dedup_key of its own, resolved with the incident) and its
        Slack mention is told. Returns what the first attempts said."""
        refusal = self.page_refusal()
        if refusal:
            raise SessionError(refusal)
        if typed.strip().lower() != self.page_words().lower():
            raise SessionError(f"type {self.page_words()!r} to confirm")
        level = self.page_target()
        assert level is not None
        status = self.escalation()
        elapsed = format_duration(status.elapsed_s) if status is not None else "?"
        def paged_meanwhile() -> str | None:  # another window paged it first: this one pages nobody twice
            target = self.page_target()
            same = target is not None and target.level == level.level
            return self.page_refusal() or (None if same else f"L{level.level} was paged meanwhile")

        self._append("escalation_paged", {"level": level.level, "title": level.title, "contacts": list(level.contacts)},
                     unless=paged_meanwhile)
        key = self.incident.dedup_key
        text = (f"{self.loaded.environment.name}: L{level.level} {level.title} paged, {elapsed} into the incident"
                + (f" of the deployment of {self.state.version}" if self.state.version else ""))
        details = {"version": self.state.version, "phase": self._phase_name(), "reason": self.suggested_reason()}
        notices = []
        if level.pagerduty_routing_key_secret:
            notices.append(self.outbox.enqueue("pagerduty", "trigger", text, dedup_key=f"{key}-L{level.level}",
                                               routing_key_secret=level.pagerduty_routing_key_secret, details=details,
                                               links=(self.report_link(),)))
        if level.slack_mention:
            notices.append(self.outbox.enqueue("slack", "info", text, dedup_key=key, mention=level.slack_mention,
                                               details=details))
        return await self.outbox.settle(notices, FIRST_ANSWER_S)

    def start_refusal(self) -> str | None:
        """Why a rollback cannot start now, or None."""
        return self.command_refusal(Command.START_ROLLBACK)

    def suggested_reason(self) -> str:
        """The watch's alarm, else the latest failure of this deployment, as a starting point
        for the reason."""
        breach = self.alarm()
        if breach is not None:
            return f"rollback recommended: {breach.data.get('what', '')}"[:240]
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
        """The provider the watch's alarm names, else (a KPI alarm raised before the fleet's
        health showed where) the one the health points at now, else the one whose checklist
        item fails now, else the one named in the latest failure, else ''."""
        breaches = sorted(self.alarms(), key=lambda b: b.data.get("kind") != "breakers")  # breakers say where
        named = next((b.data["provider"] for b in breaches if b.data.get("provider") in providers), None)
        if named is not None:
            return str(named)
        if breaches and (suspect := self._worst_provider()) in providers:
            return suspect
        for provider in providers:
            result = self.results.get(provider)
            if result is not None and result.status in ("fail", "error"):
                return provider
        reason = self.suggested_reason().lower()
        return next((p for p in providers if p.lower() in reason), "")

    async def provider_choices(self, plan_id: str) -> list[tuple[str, int | None]]:
        return await self.plans.provider_choices(plan_id, self.runner())

    async def start_rollback(self, plan_id: str, reason: str, provider: str = "", version: str | None = None) -> Record:
        """Open a rollback with `plan_id`: journaled with the reason, the provider it disables
        and the version it goes back to (found now, see StepRunner.previous_version). Every
        rollback opens the incident, unless the plan's first step does."""
        plan = self.plans.plan(plan_id)
        self._allow(Command.START_ROLLBACK)
        reason = reason.strip()
        if not reason:
            raise SessionError("a rollback needs a reason")
        provider = provider.strip()
        if self.plans.needs_provider(plan) and not provider:
            raise SessionError(f"the {plan.title} disables a provider's integrations: pick the provider")
        how = "given"
        if version is None:
            version, how = await self.runner().previous_version()
        self._allow(Command.START_ROLLBACK)  # again: the journal may have moved on meanwhile
        window = self.watch()
        if window is not None and window.ended_at is None:
            self._end_watch("a rollback started")
        self._append("rollback_started", unless=lambda: self.command_refusal(Command.START_ROLLBACK), data={
            "plan_id": plan.id, "reason": reason, "provider": provider, "version": version,
            "version_from": how, "from_version": self.state.version,
        })
        record = self.rollback_record()
        assert record is not None
        self._change_event("rollback_started", f"{self.loaded.environment.name}: rollback to {version} started "
                           f"({plan.title}): {reason}", outcome="rolling_back", reason=reason, provider=provider)
        if not self.plans.triggers_first(plan):
            await self.incident.trigger(plan, self.rollback_values(), reason)
            self._replay()
        return record

    def triggered_channels(self) -> list[str]:
        return self.incident.triggered_channels()

    def rollback_step(self, step_id: str) -> Step:
        plan = self.current_rollback_plan()
        for candidate in [plan] if plan is not None else self.plans.all:
            for step in candidate.steps:
                if step.id == step_id:
                    return step
        raise SessionError(f"no step {step_id!r} in the rollback plan")

    def describe_rollback_step(self, step_id: str) -> str:
        return self.runner().describe(self.rollback_step(step_id), self.rollback_values())

    def rollback_refusal(self, step_id: str, plan_id: str | None = None) -> str | None:
        """Why run_rollback_step would refuse this step now, or None."""
        plan = self.current_rollback_plan() if plan_id is None else self.plans.plan(plan_id)
        plan = plan or self.plans.all[0]
        step = next((s for s in plan.steps if s.id == step_id), None)
        if step is None:
            return f"no step {step_id!r} in the {plan.title}"
        refusal = self.command_refusal(Command.RUN_ROLLBACK_STEP) or self.runner().refusal(step)
        if refusal:  # READ-ONLY first: it is the reason that matters
            return refusal
        rollback = self.state.rollback
        assert rollback is not None  # the stage is ROLLING_BACK
        if rollback.plan_id != plan.id:
            return f"this rollback runs the {self.plans.plan(rollback.plan_id).title}, not the {plan.title}"
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
        self.refresh()
        refusal = self.rollback_refusal(step_id)
        if refusal:
            raise StepRefused(refusal)
        rollback = self.state.rollback
        assert rollback is not None
        where = {"plan_id": rollback.plan_id}
        return await self._run_journaled(self.rollback_step(step_id), where, self.rollback_values(), on_output)

    async def dry_run_rollback_step(self, step_id: str, plan_id: str | None = None) -> DryRun:
        plan = self.current_rollback_plan() if plan_id is None else self.plans.plan(plan_id)
        step = self.plans.step_of(plan or self.plans.all[0], step_id)
        values = self.rollback_values() if self.rollback_in_progress() else {}
        return await self.runner().dry_run(step, values)

    def skip_rollback_step(self, step_id: str, reason: str) -> None:
        reason = reason.strip()
        self._allow(Command.SKIP, scope=rules.ROLLBACK)
        if not reason:
            raise SessionError("skipping a step needs a reason")
        self._rollback_outcome_without_running(step_id, "skipped", "skipped by the operator", reason)

    def mark_rollback_step_done(self, step_id: str, note: str = "") -> None:
        self._allow(Command.MARK_DONE, scope=rules.ROLLBACK)
        self._rollback_outcome_without_running(step_id, "done", note or "marked done by the operator", "")

    def _rollback_outcome_without_running(self, step_id: str, status: str, summary: str, reason: str) -> None:
        rollback = self.state.rollback
        assert rollback is not None  # the stage is ROLLING_BACK
        step = self.rollback_step(step_id)
        command = Command.MARK_DONE if status == "done" else Command.SKIP

        def refused() -> str | None:
            current = self.state.rollback
            if current is None or current.plan_id != rollback.plan_id:
                return "that rollback is no longer in progress"
            once = rules.step_refusal(command, current.steps.get(step.id), modifying=is_modifying(step))
            return self.command_refusal(command, scope=rules.ROLLBACK) or (f"{step.title}: {once}" if once else None)

        reason_refused = refused()
        if reason_refused:
            raise SessionError(reason_refused)
        self._append("step_outcome", {"step_id": step.id, "plan_id": rollback.plan_id,
                                      "status": status, "summary": summary, "reason": reason}, unless=refused)
        self._rollback_progressed()

    def open_rollback_steps(self) -> list[str]:
        rollback, plan = self.state.rollback, self.current_rollback_plan()
        if rollback is None or plan is None:
            return []
        return [s.id for s in plan.steps
                if rollback.steps.get(s.id) is None or rollback.steps[s.id].status not in ("done", "skipped")]

    def verification_items(self, plan: RollbackPlan) -> list[str]:
        return self.plans.verification_items(plan)

    def rollback_next(self) -> NextMove:
        """What is next on the rollback console, as the release stands now: the hint line
        renders it, so that it never says what the engine would refuse."""
        rollback = self.state.rollback
        if rollback is not None and rollback.ended_at is None:
            if self.running_step == "verify":
                return NextMove("running")
            plan = self.plans.plan(rollback.plan_id)
            if self.running_step is not None:
                running = next((s for s in plan.steps if s.id == self.running_step), None)
                return NextMove("running", running)
            waiting = self.open_rollback_steps()
            if not waiting:
                return NextMove("verify", refusal=self.command_refusal(Command.VERIFY))
            return NextMove("run", self.plans.step_of(plan, waiting[0]), self.rollback_refusal(waiting[0], plan.id))
        refusal = self.start_refusal()
        if refusal is None:
            return NextMove("start")
        if rollback is not None and rollback.verified:
            return NextMove("verified")
        if rollback is not None:
            return NextMove("abandoned", refusal=refusal)
        if self.command_refusal(Command.ADOPT) is None:
            return NextMove("adopt", refusal=refusal)
        return NextMove("refused", refusal=refusal)

    async def verify_rollback(self, on_output: OutputCallback | None = None) -> tuple[bool, list[ProbeResult], list[str]]:
        """Run the verification probes again (the verdict updates). All pass (or warn): the
        rollback is finished as verified, the deployment ends `rolled_back` and the incident
        is resolved where it was triggered. Returns (verified, results, notification lines)."""
        self._allow(Command.VERIFY)
        plan = self.current_rollback_plan()
        assert plan is not None  # the stage is ROLLING_BACK
        waiting = self.open_rollback_steps()
        if waiting:
            raise SessionError(f"{len(waiting)} rollback step(s) not done or skipped: {', '.join(waiting)}")
        self._status_page_once("monitoring", "{version} is back; verifying that the integrations recover")
        items = {item.id: item for _, item in self.loaded.runbook.items()}
        wanted = self.plans.verification_items(plan)
        attestations = self.attestations()
        self.running_step = "verify"
        try:
            async with ProbeContext(self.loaded, attestations=attestations, environ=self.environ,
                                    values=self._values()) as ctx:
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
        self._allow(Command.VERIFY)  # again: another window may have ended it while the probes ran
        values = self.rollback_values()
        self._append("rollback_finished", {"plan_id": plan.id, "verified": True, "items": wanted},
                     unless=lambda: self.command_refusal(Command.VERIFY))
        if self.state.outcome != "rolled_back":
            current = self.current_phase()
            if current is not None:
                self._append("phase_completed", {"phase_id": current.id})
            self._append("deploy_finished", {"outcome": "rolled_back", "version": values.get("version", "")})
        await self.measure_pos_health()  # the fleet as the rollback left it, for the report
        lines = await self.incident.resolve(values)
        self._change_event("rollback_finished", f"{self.loaded.environment.name}: rollback to "
                           f"{values.get('version', 'the previous version')} verified", outcome="rolled_back")
        self._replay()
        return True, results, lines

    def _status_page_once(self, event: str, text: str) -> None:
        """A status page update of this deployment's incident, once per stage."""
        if not self.may_notify() or any(r.kind == "notification_queued" and r.data.get("channel") == "statuspage"
                                        and r.data.get("event") == event and r.data.get("dedup_key") == self.incident.dedup_key
                                        for r in self.journal.records):
            return
        self.incident.update(event, text, self.rollback_values())

    def _rollback_progressed(self) -> None:
        """The first rollback step done: the cause is identified and being fixed."""
        rollback = self.state.rollback
        if rollback is not None and any(step.status == "done" for step in rollback.steps.values()):
            self._status_page_once("acknowledge", "Identified: rolling back to {version}")

    # -- helpers -----------------------------------------------------------------------

    async def _git_sha(self, version: str = "") -> str:
        repository = self.loaded.runbook.rollback.previous_version.repository
        cwd = Path(repository).expanduser()
        if not cwd.is_absolute():
            cwd = self.loaded.config_path.parent / cwd
        try:
            process = await asyncio.create_subprocess_exec(
                # The deployed tag's commit when it resolves to one, else what is checked out.
                "git", "rev-parse", "--verify", "--quiet", f"{version or 'HEAD'}^{{commit}}", cwd=cwd,
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
