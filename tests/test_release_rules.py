"""The engine's safety rules (DESIGN.md §5), each through the session against a real sandbox:
the defects of the release-engine issue, tried again as described."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlroom.live.sources import HealthSnapshot, ProviderHealth
from controlroom.release.rules import ALLOWED, OBSERVATIONS, Command, Situation, refusal
from controlroom.release.state import FINISHED_STAGES, DeploymentState, RollbackState, Stage
from controlroom.config.loader import LoadedConfig, load_config
from controlroom.sandbox.runner import Sandbox
from controlroom.release.engine import ReleaseEngine, SessionError, find_resumable
from controlroom.release.status import EXIT_IN_PROGRESS, release_status
from controlroom.release.journal import Journal, JournalRefused, read_records
from controlroom.release.steps import StepRefused
from release_support import complete_every_phase

PHASE_ONE = ("env-health", "breaker-status", "rotation-capability")


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=40, simulate=False) as running:
        yield running


@pytest.fixture
async def admin(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {sandbox.settings.admin_token}"}
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=headers, timeout=5) as client:
        (await client.delete("/_sandbox/sinks")).raise_for_status()
        yield client


async def events(admin: httpx.AsyncClient) -> dict[str, list[str]]:
    sinks = (await admin.get("/_sandbox/sinks")).json()
    return {
        "pagerduty": [r["body"]["event_action"] for r in sinks["pagerduty"] if r["accepted"]],
        "slack": [r["body"]["text"] for r in sinks["slack_api"] if r["accepted"]],
    }


def loaded(sandbox: Sandbox) -> LoadedConfig:
    return load_config(sandbox.config_path)


async def started(sandbox: Sandbox, tmp_path: Path) -> ReleaseEngine:
    session = ReleaseEngine.open(loaded(sandbox), write=True, journal_dir=tmp_path)
    await session.start_deploy("v2.15.0", override_reason="rules test")
    return session


async def in_phase_two(sandbox: Sandbox, tmp_path: Path) -> ReleaseEngine:
    """A deployment started, its first phase done, the Deployment phase running."""
    session = await started(sandbox, tmp_path)
    for step_id in PHASE_ONE:
        session.mark_done(step_id)
    session.next_phase()
    return session


# -- rule 1: read-only journals only observations ---------------------------------------------

def test_every_decision_is_refused_read_only_and_only_dry_run_is_allowed() -> None:
    situation = Situation(DeploymentState(), write=False)
    for command in Command:
        answer = refusal(command, situation)
        if command in OBSERVATIONS:
            assert answer is None, command
        else:
            assert answer is not None and answer.startswith("READ-ONLY"), command


def _state_in(stage: Stage) -> tuple[DeploymentState, str | None]:
    """A replayed state for each stage of the state machine, and the step running in it."""
    at = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    state = DeploymentState()
    running = None
    if stage is Stage.CHECKED:
        state.verdict = "GO"
    if stage in (Stage.DEPLOYING, Stage.STEP_RUNNING, Stage.ROLLING_BACK, *FINISHED_STAGES):
        state.version, state.started_at = "v2.15.0", at
    if stage is Stage.STEP_RUNNING:
        running = "deploy-code"
    if stage in (Stage.ROLLING_BACK, Stage.ROLLED_BACK, Stage.ROLLBACK_ABANDONED):
        state.rollback = RollbackState(plan_id="emergency", started_at=at)
    if stage.finished:
        state.ended_at = at
        state.outcome = {Stage.SUCCEEDED: "success", Stage.ROLLED_BACK: "rolled_back"}.get(stage, "failed")
        if state.rollback is not None:
            state.rollback.ended_at, state.rollback.verified = at, stage is Stage.ROLLED_BACK
    return state, running


@pytest.mark.parametrize("stage", list(Stage))
def test_each_stage_allows_only_its_commands_and_names_why_not(stage: Stage) -> None:
    """The transition table is the rule: with --write, a command outside a stage's set is
    refused with a reason that is not READ-ONLY; one inside it is allowed (FINISH may still
    refuse a success, which is rule 2's own test)."""
    state, running = _state_in(stage)
    situation = Situation(state, write=True, running_step=running)
    assert situation.stage is stage
    for command in Command:
        answer = refusal(command, situation, outcome="failed", scope="rollback" if stage is Stage.ROLLING_BACK else "deploy")
        if command in ALLOWED[stage]:
            assert answer is None, (stage, command, answer)
        else:
            assert answer and not answer.startswith("READ-ONLY") and len(answer) > 15, (stage, command, answer)
    # A decision nobody may take once it has been rolled back: not even a new rollback.
    if stage is Stage.ROLLED_BACK:
        assert "already rolled back" in (refusal(Command.START_ROLLBACK, situation) or "")


async def test_read_only_cannot_resolve_an_incident_started_with_write(sandbox: Sandbox, tmp_path: Path,
                                                                        admin: httpx.AsyncClient) -> None:
    """Defect 1: start a deployment and the emergency rollback with --write, skip its steps,
    quit; reopen without --write: verify, finish, attest, every key refused; nothing sent."""
    writer = await started(sandbox, tmp_path)
    await writer.start_rollback("emergency", "rules test", "fudo", version="v2.14.0")
    for step_id in ("switch-version", "disable-provider", "notify-incident-team"):
        writer.skip_rollback_step(step_id, "rules test")
    writer.close()
    sent_before = await events(admin)

    reader = ReleaseEngine.open(loaded(sandbox), write=False, journal_path=writer.journal.path)
    kinds_before = [r.kind for r in reader.journal.records]
    with pytest.raises(SessionError, match="READ-ONLY"):
        await reader.verify_rollback()
    for call in (lambda: reader.finish_deploy(), lambda: reader.finish_deploy("failed"),
                 lambda: reader.attest("on-call"), lambda: reader.skip_step("env-health", "x"),
                 lambda: reader.mark_done("env-health"), lambda: reader.next_phase(),
                 lambda: reader.skip_rollback_step("switch-version", "again"),
                 lambda: reader.mark_rollback_step_done("switch-version")):
        with pytest.raises(SessionError, match="READ-ONLY"):
            call()
    with pytest.raises(StepRefused, match="READ-ONLY"):
        await reader.run_step("env-health")
    with pytest.raises(StepRefused, match="READ-ONLY"):
        await reader.run_rollback_step("switch-version")
    assert reader.start_refusal() is not None and "READ-ONLY" in reader.start_refusal()
    assert [r.kind for r in reader.journal.records] == kinds_before  # only its opening was journaled
    assert await events(admin) == sent_before  # no resolve went anywhere
    assert reader.state.rollback is not None and reader.state.rollback.verified is None


# -- rule 2: a failed deployment never finishes as a success ---------------------------------

async def test_a_failed_step_or_a_rollback_never_finishes_as_a_success(sandbox: Sandbox, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    session = await in_phase_two(sandbox, tmp_path)
    session._append("step_outcome", {"step_id": "smoke-tests", "phase_id": "deploy", "status": "failed",
                                     "summary": "fudo 502", "reason": ""})
    assert session.finish_outcome() == "failed"
    with pytest.raises(SessionError, match="cannot finish as a success: step smoke-tests failed"):
        session.finish_deploy("success")
    # Defect 2: with the rollback started (0 of 3 steps done), success is refused outright.
    await session.start_rollback("emergency", "smoke tests failed", "fudo", version="v2.14.0")
    assert session.stage is Stage.ROLLING_BACK
    with pytest.raises(SessionError, match="a rollback is in progress"):
        session.finish_deploy("success")
    assert session.state.in_progress and session.state.outcome == ""
    # It may end as failed: that abandons the rollback, unverified, and the incident stays open.
    assert session.finish_outcome() == "failed"
    session.finish_deploy()
    assert session.stage is Stage.ROLLBACK_ABANDONED and session.state.outcome == "failed"
    assert session.state.rollback is not None and session.state.rollback.verified is False
    assert session.escalation() is not None  # not resolved: nobody verified the rollback
    assert not [r for r in session.journal.of_kind("notification") if r.data.get("event") == "resolve"]
    with pytest.raises(SessionError, match="finished"):
        session.finish_deploy("failed")


async def test_a_rollback_after_a_success_cannot_be_finished_as_failed(sandbox: Sandbox, tmp_path: Path) -> None:
    """The 30-minute watch may call for a rollback after the deployment finished: it ends by
    its verification, not by a second finish."""
    session = await started(sandbox, tmp_path)
    complete_every_phase(session)
    session.observe(HealthSnapshot((ProviderHealth("fudo", 10, 10, 0, 0, 99.1), ProviderHealth("bistrsoft", 2, 2, 0, 0, None)), 0.0))
    session.finish_deploy()
    assert session.stage is Stage.SUCCEEDED
    # The watch began with the fleet's sync success: what a KPI alarm's provider is judged against.
    assert [r.data["sync_percent"] for r in session.journal.of_kind("watch_started")] == [{"fudo": 99.1}]
    await session.start_rollback("graceful", "error rate above 1 % in the watch", version="v2.14.0")
    assert session.stage is Stage.ROLLING_BACK
    with pytest.raises(SessionError, match="already finished"):
        session.finish_deploy("failed")
    # Unfinished: reopening offers to resume it, and a pipeline waiting on the release waits on.
    assert session.state.unfinished and not session.state.in_progress
    assert find_resumable(session.loaded.environment.name, tmp_path,
                          config_path=session.loaded.config_path) == session.journal.path
    assert release_status(session.loaded, session.journal.path).exit_code == EXIT_IN_PROGRESS


async def test_without_a_failure_finish_is_a_success(sandbox: Sandbox, tmp_path: Path) -> None:
    session = await started(sandbox, tmp_path)
    # Not before every phase is complete: then it can only be aborted.
    assert session.finish_outcome() == "aborted"
    with pytest.raises(SessionError, match="before its phases are complete.*phase Deployment not started"):
        session.finish_deploy("success")
    complete_every_phase(session)
    assert session.finish_outcome() == "success"
    session.finish_deploy()
    assert session.state.outcome == "success"
    with pytest.raises(SessionError, match=r"is finished \(success\)"):
        session.finish_deploy()


# -- rule 3: resolve only what was triggered; every rollback triggers --------------------------

async def test_starting_any_rollback_triggers_and_verifying_resolves_the_same_incident(
        sandbox: Sandbox, tmp_path: Path, admin: httpx.AsyncClient) -> None:
    """Defect 3: the graceful plan has no notify step; starting it opens the incident anyway,
    and verifying resolves that incident (same dedup_key), on the channels it was opened on."""
    session = await started(sandbox, tmp_path)
    await session.start_rollback("graceful", "latency after v2.15.0", version="v2.14.0")
    triggered = session.triggered_channels()
    assert sorted(triggered) == ["pagerduty", "slack", "statuspage"]
    assert (await events(admin))["pagerduty"] == ["trigger"]
    for step_id in session.open_rollback_steps():
        session.skip_rollback_step(step_id, "rules test: done by hand")
    verified, _, lines = await session.verify_rollback()
    assert verified, lines
    sent = await events(admin)
    assert sent["pagerduty"] == ["trigger", "resolve"]
    keys = {r.data["dedup_key"] for r in session.journal.of_kind("notification")}
    assert len(keys) == 1


async def test_no_resolve_for_an_incident_that_was_never_triggered(sandbox: Sandbox, tmp_path: Path,
                                                                    admin: httpx.AsyncClient) -> None:
    """The trigger could not be delivered (every sink answers 400, which is final): verifying
    sends no resolve, and the journal says why."""
    for sink in ("slack_api", "pagerduty", "statuspage"):
        body = {"sink": sink, "status": 400, "count": 1, "retry_after": None}
        (await admin.post("/_sandbox/sinks/faults", json=body)).raise_for_status()
    session = await started(sandbox, tmp_path)
    await session.start_rollback("graceful", "latency after v2.15.0", version="v2.14.0")
    assert session.triggered_channels() == []
    for step_id in session.open_rollback_steps():
        session.skip_rollback_step(step_id, "rules test")
    verified, _, lines = await session.verify_rollback()
    assert verified
    assert lines == ["resolve: not sent — no incident was triggered for this deployment"]
    assert (await events(admin))["pagerduty"] == []
    assert any(r.kind == "notification_not_sent" for r in session.journal.records)


# -- rule 4: every action at most once per release; an intent without an outcome is unknown ---

async def test_a_step_interrupted_by_a_dead_window_is_outcome_unknown_and_never_rerun(
        sandbox: Sandbox, tmp_path: Path) -> None:
    session = await in_phase_two(sandbox, tmp_path)
    # The window died after journaling the intent of deploy-code (kill -9): no outcome.
    session._append("step_intent", {"step_id": "deploy-code", "phase_id": "deploy", "action": "deploy",
                                    "detail": "$ deploy v2.15.0", "intent_id": "0123456789abcdef"})
    session.close()

    again = ReleaseEngine.open(loaded(sandbox), write=True, journal_path=session.journal.path)
    assert again.state.steps["deploy-code"].status == "unknown"
    refused = again.refusal("deploy-code")
    assert refused is not None and "outcome unknown" in refused and "mark it done (m) or skip it (z)" in refused
    with pytest.raises(StepRefused, match="outcome unknown"):
        await again.run_step("deploy-code")
    intents = [r for r in again.journal.records if r.kind == "step_intent" and r.data["step_id"] == "deploy-code"]
    assert len(intents) == 1  # not run again
    again.mark_done("deploy-code", "checked: v2.15.0 is live")  # the operator resolves it
    assert again.state.steps["deploy-code"].status == "done"
    assert "already done" in (again.refusal("deploy-code") or "")
    with pytest.raises(SessionError, match="already done"):
        again.mark_done("deploy-code")


async def test_a_modifying_step_runs_once_even_when_x_is_pressed_twice(sandbox: Sandbox, tmp_path: Path) -> None:
    import asyncio

    session = await in_phase_two(sandbox, tmp_path)
    first = asyncio.ensure_future(session.run_step("deploy-code"))
    second = asyncio.ensure_future(session.run_step("deploy-code"))
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert sum(isinstance(r, StepRefused) for r in results) == 1
    assert [r.status for r in results if not isinstance(r, BaseException)] == ["done"]
    with pytest.raises(StepRefused, match="already done"):
        await session.run_step("deploy-code")
    intents = [r for r in session.journal.records if r.kind == "step_intent"]
    outcomes = [r for r in session.journal.records if r.kind == "step_outcome" and r.data["step_id"] == "deploy-code"]
    assert len(intents) == 1 and outcomes[0].data["intent_id"] == intents[0].data["intent_id"]


async def test_two_windows_on_one_journal_decide_on_what_is_on_disk(sandbox: Sandbox, tmp_path: Path) -> None:
    """Rule 4 across windows: a second control room on the same journal, whose view is a
    step behind, is refused on what the first one journaled, never on its stale view."""
    first = await in_phase_two(sandbox, tmp_path)
    second = ReleaseEngine.open(loaded(sandbox), write=True, journal_path=first.journal.path)
    assert second.journal.other_holder is not None  # the app asks before going on; both go on here
    await first.run_step("deploy-code")
    assert second.state.steps.get("deploy-code") is None  # its view is stale...
    with pytest.raises(StepRefused, match="already done"):
        await second.run_step("deploy-code")  # ...but the journal decides
    with pytest.raises(SessionError, match="already done"):
        second.skip_step("deploy-code", "looks done to me")
    intents = [r for r in first.journal.of_kind("step_intent") if r.data["step_id"] == "deploy-code"]
    first.refresh()
    assert len([r for r in first.journal.of_kind("step_intent") if r.data["step_id"] == "deploy-code"]) == 1 == len(intents)
    first.finish_deploy("failed")
    with pytest.raises(SessionError, match="finished"):
        second.next_phase()
    assert second.stage is Stage.FAILED  # caught up on the way
    records, problems, _ = read_records(first.journal.path)
    assert not problems and [r.seq for r in records] == list(range(1, len(records) + 1))


def test_an_append_decided_under_the_lock_sees_the_other_window(tmp_path: Path) -> None:
    """The check and the record are one step: what another process appended just before
    counts, even though this one has not read it yet."""
    path = tmp_path / "shared.jsonl"
    one, two = Journal.open(path), Journal.open(path)
    one.append("step_intent", {"step_id": "deploy-code"})

    def taken(records: list[Any]) -> str | None:
        return "deploy-code was started elsewhere" if any(r.kind == "step_intent" for r in records) else None

    with pytest.raises(JournalRefused, match="started elsewhere"):
        two.append("step_intent", {"step_id": "deploy-code"}, unless=taken)
    assert [r.kind for r in read_records(path)[0]] == ["step_intent"]
    assert len(two.records) == 1  # and it caught up while deciding


async def test_a_failed_step_marked_done_afterwards_still_does_not_make_a_success(sandbox: Sandbox,
                                                                                  tmp_path: Path) -> None:
    """Found by the property test: failing, then m on the failed step, then f recorded a
    success. A failure stays a failure for the outcome, whatever paperwork follows."""
    session = await in_phase_two(sandbox, tmp_path)
    session._append("step_outcome", {"step_id": "smoke-tests", "phase_id": "deploy", "status": "failed",
                                     "summary": "fudo 502", "reason": ""})
    session.mark_done("smoke-tests", "looked fine to me")
    assert session.state.steps["smoke-tests"].status == "done"
    with pytest.raises(SessionError, match="smoke-tests failed"):
        session.finish_deploy("success")
    assert session.finish_outcome() == "failed"


# -- adopt: a release deployed elsewhere can be rolled back -------------------------------------

async def test_a_release_deployed_elsewhere_is_adopted_then_rolled_back(sandbox: Sandbox, tmp_path: Path) -> None:
    """Defect 4: no deployment in this window (CI/CD deployed it). Rollback is refused with the
    way out; adopting (version and why, journaled) makes it rollback-able."""
    session = ReleaseEngine.open(loaded(sandbox), write=True, journal_dir=tmp_path)
    refused = session.start_refusal()
    assert refused is not None and "adopt it first (a)" in refused
    with pytest.raises(SessionError, match="not a version"):
        session.adopt("v2.15.0 && curl evil", "deployed by CI")
    with pytest.raises(SessionError, match="needs a reason"):
        session.adopt("v2.15.0", "")
    session.adopt("v2.15.0", "deployed by CI at 03:02, Fudo failing since")
    adopted = next(r for r in session.journal.records if r.kind == "release_adopted")
    assert adopted.data["version"] == "v2.15.0" and "CI" in adopted.data["reason"] and adopted.operator["user"]
    assert session.state.in_progress and session.state.adopted and session.start_refusal() is None
    with pytest.raises(SessionError, match="already has the deployment"):
        session.adopt("v2.15.1", "again")
    record = await session.start_rollback("emergency", "fudo failing", "fudo", version="v2.14.0")
    assert record.data["from_version"] == "v2.15.0"
    reader = ReleaseEngine.open(loaded(sandbox), write=False, journal_dir=tmp_path / "other")
    with pytest.raises(SessionError, match="READ-ONLY"):
        reader.adopt("v2.15.0", "read-only try")


async def test_a_manual_item_attested_as_not_met_fails_and_its_rule_decides(sandbox: Sandbox, tmp_path: Path) -> None:
    """A critical vulnerability unpatched: recorded with who, when and why; the item fails,
    its on_fail makes the verdict NO-GO, re-running the checks keeps it failed, and attesting
    it as met later replaces it."""
    session = ReleaseEngine.open(loaded(sandbox), write=True, journal_dir=tmp_path)
    await session.run_checks()
    with pytest.raises(SessionError, match="needs a reason"):
        session.attest_failing("vulnerabilities", "")
    result = session.attest_failing("vulnerabilities", "CVE-2024-3094 unpatched, no fix yet")
    assert result.status == "fail" and "attested NOT met by" in result.evidence and "unpatched" in result.evidence
    assert session.verdict_name == "NO-GO"
    assert any("Critical vulnerabilities unpatched — vulnerabilities" in reason for reason in session.verdict.reasons)
    record = [r for r in session.journal.records if r.kind == "attested"][-1]
    assert record.data == {"item_id": "vulnerabilities", "outcome": "fail", "note": "CVE-2024-3094 unpatched, no fix yet"}
    await session.run_checks()  # the probes run again: the operator's word stands
    assert session.results["vulnerabilities"].status == "fail" and session.verdict_name == "NO-GO"
    session.attest("vulnerabilities")
    assert session.results["vulnerabilities"].status == "pass"
    with pytest.raises(SessionError, match="cannot be attested"):
        session.attest_failing("on-call", "probed here: PagerDuty says who is on call")
    reader = ReleaseEngine.open(loaded(sandbox), write=False, journal_path=session.journal.path)
    with pytest.raises(SessionError, match="READ-ONLY"):
        reader.attest_failing("vulnerabilities", "read-only try")


# -- the escalation ladder: e pages the next level now -----------------------------------------

async def test_e_pages_the_next_level_once_confirmed_and_the_ladder_says_who_was_paged(
        sandbox: Sandbox, tmp_path: Path, admin: httpx.AsyncClient) -> None:
    session = await started(sandbox, tmp_path)
    assert session.page_refusal() == "no incident is open: there is nobody to escalate to"
    await session.start_rollback("graceful", "latency after v2.15.0", version="v2.14.0")
    assert session.page_target().level == 2 and session.page_words() == "page L2"
    with pytest.raises(SessionError, match="type 'page L2' to confirm"):
        await session.page_next_level("page")
    lines = await session.page_next_level("page L2")
    assert lines == ["slack info: sent (1 attempt)"]
    (paged,) = session.paged()
    assert paged.data["level"] == 2 and paged.operator["user"]
    assert session.page_target().level == 3  # the next e pages L3, before the ladder reaches it
    slack = (await events(admin))["slack"]
    assert slack[-1].startswith("<!here> sandbox (healthy): L2 SRE team lead paged, 0:00 into the incident of the deployment of v2.15.0")
    read_only = ReleaseEngine.open(loaded(sandbox), write=False, journal_path=session.journal.path)
    assert read_only.page_refusal().startswith("READ-ONLY")
    read_only.close()
    await session.aclose()
