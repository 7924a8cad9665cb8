"""The session core against a real sandbox: checks, attestations, the GO gate and its
override, intent-before-action, READ-ONLY refusals, bound SQL parameters and resume."""

from __future__ import annotations

import re

import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from controlroom.config.loader import LoadedConfig, load_config
from controlroom.config.models import Deployment, Step
from controlroom.sandbox.runner import Sandbox
from controlroom.release.engine import ReleaseEngine, SessionError, find_resumable
from controlroom.release.steps import StepRefused, StepRunner

MANUAL = ["secret-scanning", "vulnerabilities", "backups", "emergency-procedures"]  # on-call: PagerDuty, probed
EVIL = "'; DROP TABLE pos_integrations_location; --"


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=40, simulate=False) as running:
        yield running


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def kinds(path: Path) -> list[str]:
    return [json.loads(line)["kind"] for line in path.read_text().splitlines()]


def with_steps(loaded: LoadedConfig, steps: list[dict]) -> LoadedConfig:
    """The default runbook with a one-phase deployment made of `steps`."""
    deployment = Deployment.model_validate({"phases": [{"id": "only", "title": "Only", "minutes": 5, "steps": steps}]})
    return dataclasses.replace(loaded, runbook=loaded.runbook.model_copy(update={"deployment": deployment}))


async def test_checks_attest_override_and_resume(sandbox: Sandbox, tmp_path: Path) -> None:
    clock = FakeClock()
    loaded = load_config(sandbox.config_path)
    session = ReleaseEngine.open(loaded, journal_dir=tmp_path, clock=clock, write=True)
    assert session.journal.path.name.startswith("sandbox-healthy-20250301T030000Z")

    report = await session.run_checks()
    assert report.verdict.verdict == "PENDING", report.verdict.reasons
    assert {r.status for r in session.results.values()} <= {"pass", "pending"}

    # Not GO: refused without a reason, and nothing journaled for it.
    with pytest.raises(SessionError, match="override"):
        await session.start_deploy("v2.15.0")
    assert "deploy_started" not in kinds(session.journal.path)

    assert session.attestable() == MANUAL
    for item_id in MANUAL[:-1]:
        session.attest(item_id, note="checked")
    assert session.verdict_name == "PENDING"
    session.attest(MANUAL[-1])
    assert session.verdict_name == "GO"
    attested = [r for r in session.journal.records if r.kind == "attested"]
    assert [r.data["item_id"] for r in attested] == MANUAL and attested[0].operator["user"]

    await session.start_deploy("v2.15.0")
    started = next(r for r in session.journal.records if r.kind == "deploy_started")
    assert started.data["verdict"] == "GO" and started.data["override_reason"] == ""
    assert session.current_phase().id == "pre"
    outcome = await session.run_step("env-health")
    assert outcome.status == "done", outcome.summary
    clock.advance(minutes=6)
    assert session.phase_clock("pre").level == "amber"
    assert find_resumable(loaded.environment.name, tmp_path) == session.journal.path

    # Reopened (a new process would do the same): same phase, clocks and attestations.
    again = ReleaseEngine.open(loaded, journal_path=session.journal.path, clock=clock, write=True)
    assert again.resumed and again.current_phase().id == "pre"
    assert again.state.started_at == session.state.started_at
    assert again.deploy_clock().elapsed_s == session.deploy_clock().elapsed_s == 360
    assert set(again.attestations()) == set(MANUAL)
    assert again.state.steps["env-health"].status == "done"
    assert not again.journal.problems

    # Steps must be done or skipped before the next phase; skipping needs a reason.
    with pytest.raises(SessionError, match="not done or skipped"):
        again.next_phase()
    with pytest.raises(SessionError, match="reason"):
        again.skip_step("breaker-status", "  ")
    again.skip_step("breaker-status", "checked by hand")
    again.mark_done("rotation-capability")
    assert again.next_phase().id == "deploy"
    again.finish_deploy("aborted")
    assert find_resumable(loaded.environment.name, tmp_path) is None
    tail = [kind for kind in kinds(again.journal.path) if not kind.startswith("notification")][-4:]
    assert tail == ["phase_completed", "phase_started", "phase_completed", "deploy_finished"]


async def test_override_is_journaled(sandbox: Sandbox, tmp_path: Path) -> None:
    session = ReleaseEngine.open(load_config(sandbox.config_path), journal_dir=tmp_path, write=True)
    await session.run_checks()
    assert session.verdict_name == "PENDING"
    await session.start_deploy("v2.15.1", override_reason="hotfix for the card outage")
    records = session.journal.records
    verdict = [r for r in records if r.kind == "verdict"][-1]
    started = next(r for r in records if r.kind == "deploy_started")
    assert verdict.data["verdict"] == "PENDING" and verdict.seq < started.seq
    assert started.data == {**started.data, "verdict": "PENDING", "override_reason": "hotfix for the card outage",
                            "version": "v2.15.1"}
    assert session.state.override_reason == "hotfix for the card outage"


async def test_intent_is_on_disk_before_the_action_runs(sandbox: Sandbox, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    # The command reads the journal while it runs and prints the intent it finds there.
    probe = f"grep -c '\"kind\":\"step_intent\".*\"step_id\":\"look\"' {journal}; echo secret=$CONTROLROOM_SANDBOX_API_KEY"
    loaded = with_steps(load_config(sandbox.config_path), [
        {"id": "look", "title": "Read the journal",
         "action": {"kind": "command", "run": probe, "modifying": False, "secrets": ["supabase_api_key"]}},
        {"id": "slow", "title": "Too slow", "action": {"kind": "command", "run": "sleep 30", "timeout_s": 0.5, "modifying": False}},
    ])
    session = ReleaseEngine.open(loaded, journal_path=journal, write=True)
    await session.start_deploy("v1", override_reason="test")
    seen: list[str] = []
    outcome = await session.run_step("look", on_output=seen.append)
    assert outcome.status == "done", outcome.summary
    assert seen[0] == "1"  # its own intent was already on disk
    assert seen[1] == "secret=[redacted]"  # the listed secret exported, and redacted from output
    assert sandbox.settings.anon_key not in journal.read_text()
    intent, result = [r for r in session.journal.records if r.data.get("step_id") == "look"]
    assert (intent.kind, result.kind, result.data["status"]) == ("step_intent", "step_outcome", "done")

    slow = await session.run_step("slow")
    assert slow.status == "failed" and "timed out after 0.5 s" in slow.summary


async def test_read_only_refuses_modifying_steps(sandbox: Sandbox, tmp_path: Path) -> None:
    writer = ReleaseEngine.open(load_config(sandbox.config_path), journal_dir=tmp_path, write=True)
    await writer.start_deploy("v2.15.0", override_reason="test")
    writer.skip_step("env-health", "n/a")
    writer.skip_step("breaker-status", "n/a")
    writer.skip_step("rotation-capability", "n/a")
    writer.next_phase()
    writer.close()
    session = ReleaseEngine.open(load_config(sandbox.config_path), journal_path=writer.journal.path, write=False)
    assert session.refusal("deploy-code") is not None and "READ-ONLY" in session.refusal("deploy-code")
    with pytest.raises(StepRefused, match="READ-ONLY"):
        await session.run_step("deploy-code")
    assert not [r for r in session.journal.records if r.kind == "step_intent"]
    # Describing and dry-running are always allowed.
    assert "deploy 'v2.15.0'" in session.describe("deploy-code") or "v2.15.0" in session.describe("deploy-code")
    assert (await session.dry_run("deploy-code")).description


async def test_deploy_runs_the_environment_command_in_write_mode(sandbox: Sandbox, tmp_path: Path) -> None:
    session = ReleaseEngine.open(load_config(sandbox.config_path), journal_dir=tmp_path, write=True)
    # A version must look like one (the runbook's version_pattern): no shell in a tag.
    for bad in ("v2.15.0; echo pwned", "[bold red]x", "-rf", "v" * 65, "v2 15"):
        with pytest.raises(SessionError, match="not a version this runbook deploys"):
            await session.start_deploy(bad, override_reason="test")
    assert not session.state.in_progress
    await session.start_deploy("v2.15.0+build/7", override_reason="test")
    for step_id in ("env-health", "breaker-status", "rotation-capability"):
        session.mark_done(step_id)
    session.next_phase()
    assert "v2.15.0+build/7" in session.describe("deploy-code")
    lines: list[str] = []
    outcome = await session.run_step("deploy-code", on_output=lines.append)
    # The sandbox's deploy command needs its admin token: the one secret it lists gets through.
    assert outcome.status == "done", outcome.summary


async def test_a_command_gets_only_the_secrets_it_lists(sandbox: Sandbox, tmp_path: Path) -> None:
    """The deploy command lists only the admin token: the DSN, the API key, the webhook and
    the routing key are not in its environment (DESIGN.md §5 rule 8)."""
    config = sandbox.config_path.read_text()
    config = config.replace('runbook = "default"', f'runbook = "default"\nenv_file = "{sandbox.env_path}"', 1)
    config = config.replace('env_file = "sandbox.env"\n', "", 1)
    config = re.sub(r'(?m)^deploy_command = .*$', 'deploy_command = "env; echo {version}"', config)
    path = tmp_path / "env-printing.toml"
    path.write_text(config)
    loaded = load_config(path)
    session = ReleaseEngine.open(loaded, journal_dir=tmp_path, write=True)
    await session.start_deploy("v2.15.0", override_reason="test")
    for step_id in ("env-health", "breaker-status", "rotation-capability"):
        session.mark_done(step_id)
    session.next_phase()
    lines: list[str] = []
    outcome = await session.run_step("deploy-code", on_output=lines.append)
    assert outcome.status == "done", outcome.summary
    names = {line.split("=", 1)[0] for line in lines if "=" in line}
    assert "CONTROLROOM_SANDBOX_ADMIN_TOKEN" in names
    for variable in ("CONTROLROOM_SANDBOX_DSN", "CONTROLROOM_SANDBOX_API_KEY",
                     "CONTROLROOM_SANDBOX_SLACK_WEBHOOK_URL", "CONTROLROOM_SANDBOX_PAGERDUTY_ROUTING_KEY"):
        assert variable not in names
    admin = sandbox.secret_environment()["CONTROLROOM_SANDBOX_ADMIN_TOKEN"]
    assert not any(admin in line for line in lines)  # and what it gets is redacted from its output


async def test_sql_parameters_are_bound_never_interpolated(sandbox: Sandbox) -> None:
    loaded = load_config(sandbox.config_path)
    plan = next(p for p in loaded.runbook.rollback.plans if p.id == "emergency")
    disable: Step = next(s for s in plan.steps if s.id == "disable-provider")
    conn = await asyncpg.connect(sandbox.dsn)
    try:
        before = await conn.fetchval("SELECT count(*) FROM pos_integrations_location WHERE connected")
        fudo = await conn.fetchval("SELECT count(*) FROM pos_integrations_location WHERE connected AND provider = 'fudo'")

        read_only = StepRunner(loaded, write=False)
        with pytest.raises(StepRefused, match="READ-ONLY"):
            await read_only.run(disable, {"provider": "fudo"})
        dry = await read_only.dry_run(disable, {"provider": "fudo"})
        assert dry.count == fudo > 0 and "$1 = 'fudo'" in dry.description

        runner = StepRunner(loaded, write=True)
        assert (await runner.dry_run(disable, {"provider": EVIL})).count == 0
        outcome = await runner.run(disable, {"provider": EVIL})
        assert outcome.status == "done" and outcome.count == 0, outcome.summary
        assert await conn.fetchval("SELECT to_regclass('pos_integrations_location') IS NOT NULL")
        assert await conn.fetchval("SELECT count(*) FROM pos_integrations_location WHERE connected") == before
    finally:
        await conn.close()


async def test_resume_is_offered_only_for_the_same_config_file(sandbox: Sandbox, tmp_path: Path) -> None:
    """Two sandboxes of one scenario share an environment name; a deployment of the first
    must not be offered when the second is opened."""
    loaded = load_config(sandbox.config_path)
    session = ReleaseEngine.open(loaded, journal_dir=tmp_path, write=True)
    await session.run_checks()
    await session.start_deploy("v2.15.0", override_reason="testing resume matching")
    name = loaded.environment.name
    assert find_resumable(name, tmp_path, config_path=sandbox.config_path) == session.journal.path
    other = tmp_path / "another-sandbox.toml"
    other.write_text(sandbox.config_path.read_text())
    assert find_resumable(name, tmp_path, config_path=other) is None


async def test_a_line_too_long_is_redacted_before_it_is_cut(sandbox: Sandbox, tmp_path: Path) -> None:
    """A 200 KB line, cut to its end: what is shown is redacted whole; no piece of the secret shows."""
    secret = sandbox.secret_environment()["CONTROLROOM_SANDBOX_API_KEY"]
    emit = ('python3 -c "import os,sys; k=os.environ[\'CONTROLROOM_SANDBOX_API_KEY\']; '
            'sys.stdout.write(\'x\' * 200000 + k + \'z\' * 280 + chr(10) + \'after\' + chr(10))"')
    loaded = with_steps(load_config(sandbox.config_path), [
        {"id": "long", "title": "A long line", "action": {"kind": "command", "run": emit, "modifying": False,
                                                        "secrets": ["supabase_api_key"]}},
    ])
    session = ReleaseEngine.open(loaded, journal_dir=tmp_path, write=True)
    await session.start_deploy("v1", override_reason="test")
    seen: list[str] = []
    outcome = await session.run_step("long", on_output=seen.append)
    assert outcome.status == "done", outcome.summary
    assert seen[-1] == "after" and seen[0].startswith("…")
    shown = "\n".join(seen) + outcome.summary + session.journal.path.read_text()
    pieces = {secret[i:i + 8] for i in range(len(secret) - 7)}
    assert not [piece for piece in pieces if piece in shown]
