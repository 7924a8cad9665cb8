"""Several control rooms on one release, through the shared journal store on the sandbox's
real Postgres: each engine below has its own connection and its own store thread, as
control rooms on different bastions have. Exactly one drives; the others watch what it
journals within a second and are refused every decision with who drives; a takeover needs the
driver gone and is journaled; notifications go out once."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from controlroom.config.loader import load_config
from controlroom.errors import SessionError
from controlroom.release.engine import ReleaseEngine
from controlroom.release.journal import read_records, verify_chain
from controlroom.release.pg_journal import PgJournal, read_release
from controlroom.release.rules import Command
from controlroom.release.state import Stage
from controlroom.release.steps import StepRefused
from controlroom.report.render import render_report
from controlroom.sandbox.pg.postgres import EmbeddedPostgres
from controlroom.sandbox.runner import Sandbox
from shared_support import ALICE, BOB, CAROL, TcpProxy, environment_config, eventually

FAN_OUT_BUDGET_S = 1.0


def notice(kind: str) -> bool:
    """A notification's records land when its sink answers: their place among the others varies."""
    return kind.startswith("notification")


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=30, simulate=False, journal_store="postgres") as running:
        yield running


def open_engine(config: Path, journals: Path, operator: dict[str, str], *, write: bool = True) -> ReleaseEngine:
    return ReleaseEngine.open(load_config(config), write=write, journal_dir=journals / operator["host"],
                              operator=operator)


@contextlib.asynccontextmanager
async def driver_behind_a_proxy(sandbox: Sandbox, tmp_path: Path,
                                environment: str) -> AsyncIterator[tuple[TcpProxy, ReleaseEngine, ReleaseEngine]]:
    """alice, who drives through a proxy the test can cut or partition, and bob, connected
    to the store directly, on a release of `environment`."""
    proxy = TcpProxy(sandbox.postgres.port).start()  # type: ignore[union-attr]
    engines: list[ReleaseEngine] = []
    try:
        engines.append(open_engine(environment_config(sandbox.config_path, tmp_path / "a", environment,
                                                      dsn=proxy.dsn(sandbox.dsn)), tmp_path, ALICE))
        engines.append(open_engine(environment_config(sandbox.config_path, tmp_path / "b", environment),
                                   tmp_path, BOB))
        yield proxy, engines[0], engines[1]
    finally:
        for engine in engines:
            engine.close()
        proxy.stop()


async def test_one_drives_the_others_watch_every_record_within_a_second(sandbox: Sandbox, tmp_path: Path) -> None:
    config = environment_config(sandbox.config_path, tmp_path, "shared three windows")
    alice = open_engine(config, tmp_path, ALICE)
    bob = open_engine(config, tmp_path, BOB)
    carol = open_engine(config, tmp_path, CAROL, write=False)
    try:
        # One release for all three; alice opened first with --write: she drives.
        assert alice.journal.release_id == bob.journal.release_id == carol.journal.release_id
        assert [e.crew().driving for e in (alice, bob, carol)] == [True, False, False]
        await eventually(lambda: alice.crew().watchers == 2, alice, what="alice sees two watchers")
        assert alice.crew().headline() == ("YOU DRIVE +2 watch", "driving")
        await eventually(lambda: bob.crew().headline() == ("WATCHING alice@bastion-1 · 2 watch", "watching"), bob,
                         what="bob's header")

        # Every decision of a watcher is refused with who drives and since when; read-only first.
        refusal = bob.command_refusal(Command.START)
        assert refusal is not None and refusal.startswith("driven by alice@bastion-1 since ")
        assert refusal.endswith("UTC — T takes over when its control room is gone")
        with pytest.raises(SessionError, match="driven by alice@bastion-1"):
            bob.attest("backups")
        with pytest.raises(SessionError, match="driven by alice@bastion-1"):
            await bob.start_deploy("v2.15.0", override_reason="bob tries")
        with pytest.raises(SessionError, match="you watch this release"):
            await bob.run_checks()  # a watcher's checklist is the driver's
        assert carol.command_refusal(Command.ATTEST, ).startswith("READ-ONLY")  # type: ignore[union-attr]
        assert bob.command_refusal(Command.DRY_RUN) is None  # an observation

        # The driver's checks, attestation and start reach the watchers within a second each.
        await alice.run_checks()
        seen = await eventually(lambda: bob.results.keys() == alice.results.keys(), bob, carol,
                                what="bob shows alice's checklist")
        assert seen < FAN_OUT_BUDGET_S
        assert {i: r.status for i, r in bob.results.items()} == {i: r.status for i, r in alice.results.items()}
        alice.attest("backups")
        seen = await eventually(lambda: "backups" in carol.state.attestations, carol, what="carol sees the attestation")
        assert seen < FAN_OUT_BUDGET_S and carol.results["backups"].attested_by == "alice"
        await alice.start_deploy("v2.15.0", override_reason="shared test")
        outcome = await alice.run_step("env-health")
        seen = await eventually(lambda: bob.state.steps.get("env-health") is not None
                                and bob.state.steps["env-health"].status == outcome.status, bob, carol,
                                what="bob sees the step's outcome")
        assert seen < FAN_OUT_BUDGET_S
        assert bob.stage is Stage.DEPLOYING and bob.state.version == "v2.15.0"
        # What the step measured is the watchers' too (a failed smoke test turns their verdict).
        assert outcome.probe_results  # journaled right after the step's outcome
        await eventually(lambda: all(r.item_id in bob.results and bob.results[r.item_id].evidence == r.evidence
                                     for r in outcome.probe_results), bob, what="bob shows what the step measured")
        assert bob.verdict_name == alice.verdict_name

        # One chain: the store's, and each bastion's mirror holds exactly the same records.
        await eventually(lambda: len(carol.journal.records) == len(alice.journal.records), carol, bob)
        stored = await read_release(sandbox.dsn, "shared three windows")
        assert stored is not None and verify_chain(stored.records) == []
        for engine in (alice, bob, carol):
            on_disk, problems, _ = read_records(engine.journal.path)
            assert problems == [] and on_disk == stored.records
        assert len({e.journal.path.parent for e in (alice, bob, carol)}) == 3  # three bastions, three copies
    finally:
        for engine in (alice, bob, carol):
            engine.close()


async def test_a_takeover_needs_the_driver_gone_and_is_journaled_and_shown_to_all(sandbox: Sandbox, tmp_path: Path) -> None:
    config = environment_config(sandbox.config_path, tmp_path, "shared takeover")
    alice = open_engine(config, tmp_path, ALICE)
    bob = open_engine(config, tmp_path, BOB)
    carol = open_engine(config, tmp_path, CAROL, write=False)
    try:
        await alice.start_deploy("v2.15.0", override_reason="takeover test")
        refusal = bob.take_over_refusal()
        assert refusal is not None and refusal.startswith("alice@bastion-1 still drives")
        with pytest.raises(SessionError, match="still drives"):
            bob.take_over("take over")
        assert carol.take_over_refusal().startswith("READ-ONLY")  # type: ignore[union-attr]

        alice.close()  # she quits: her lock and session end with her connection
        await eventually(lambda: bob.crew().driver is None, bob, carol, what="bob sees nobody drive")
        assert bob.crew().banner() == ("Nobody drives this release (alice@bastion-1's control room is gone) — "
                                       "T takes over", "nobody")
        assert "alice@bastion-1's control room is gone" in " ".join(bob.take_notices())
        assert bob.command_refusal(Command.RUN_STEP).startswith("nobody drives this release")  # type: ignore[union-attr]
        with pytest.raises(SessionError, match="type 'take over' to confirm"):
            bob.take_over("yes")
        record = bob.take_over("take over")
        assert record.kind == "driver_changed"
        assert record.data == {"driver": "bob@bastion-2", "how": "took over", "from": "alice@bastion-1",
                               "reason": "take over"}
        assert bob.crew().driving and bob.command_refusal(Command.RUN_STEP) is None
        await eventually(lambda: carol.crew().driver is not None and carol.crew().driver.label == "bob@bastion-2",  # type: ignore[union-attr]
                         carol, what="carol sees bob drive")
        assert any(r.kind == "driver_changed" and r.data["driver"] == "bob@bastion-2" for r in carol.journal.records)

        # alice comes back: bob drives now, so she watches (and is told who drives).
        alice = open_engine(config, tmp_path, ALICE)
        assert not alice.crew().driving and alice.crew().driver.label == "bob@bastion-2"  # type: ignore[union-attr]
        assert alice.command_refusal(Command.NEXT_PHASE).startswith("driven by bob@bastion-2")  # type: ignore[union-attr]
    finally:
        for engine in (alice, bob, carol):
            engine.close()


async def test_notifications_go_out_once_whatever_the_number_of_windows(sandbox: Sandbox, tmp_path: Path) -> None:
    config = environment_config(sandbox.config_path, tmp_path, "shared notifications")
    headers = {"Authorization": f"Bearer {sandbox.settings.admin_token}"}
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=headers) as client:
        await client.delete("/_sandbox/sinks")
        engines = [open_engine(config, tmp_path, who) for who in (ALICE, BOB, CAROL)]
        driver, *watchers = engines
        try:
            await driver.start_deploy("v2.15.0", override_reason="notification test")
            await driver.start_rollback("emergency", "smoke tests failed", provider="fudo", version="v2.14.0")
            for watcher in watchers:
                await eventually(lambda w=watcher: w.stage is Stage.ROLLING_BACK, watcher)  # type: ignore[misc]
                with pytest.raises(SessionError, match="driven by alice@bastion-1"):
                    await watcher.start_rollback("emergency", "me too", provider="fudo", version="v2.14.0")
                with pytest.raises(StepRefused, match="driven by alice@bastion-1"):
                    await watcher.run_rollback_step("switch-version")
            sinks = (await client.get("/_sandbox/sinks")).json()
        finally:
            for engine in engines:
                engine.close()
    triggers = [r["body"] for r in sinks["pagerduty"] if r["accepted"] and r["body"]["event_action"] == "trigger"]
    slack = [r for r in sinks["slack_api"] if r["accepted"]]
    assert len(triggers) == 1 and len(slack) == 1  # one incident opened, by the driver, once
    journaled = [r for r in driver.journal.records if r.kind == "notification"]
    assert sorted(r.data["channel"] for r in journaled if r.data["event"] != "change") == ["pagerduty", "slack", "statuspage"]
    assert sorted(r.data["details"]["event"] for r in driver.journal.records
                  if r.kind == "notification_queued" and r.data["event"] == "change") == ["deploy_started", "rollback_started"]
    assert {r.operator["user"] for r in journaled} == {"alice"}


async def test_a_finished_release_nobody_is_on_is_not_joined(sandbox: Sandbox, tmp_path: Path) -> None:
    config = environment_config(sandbox.config_path, tmp_path, "shared next release")
    first = open_engine(config, tmp_path, ALICE)
    release = first.journal.release_id
    await first.start_deploy("v2.15.0", override_reason="finish test")
    first.finish_deploy("aborted")
    second = open_engine(config, tmp_path, BOB)  # while alice is still on it: the same release
    assert second.journal.release_id == release
    first.close()
    second.close()
    third = open_engine(config, tmp_path, CAROL)  # finished, nobody on it: a new one
    try:
        assert third.journal.release_id != release and third.crew().driving
        assert [r.kind for r in third.journal.records] == ["session_opened", "driver_changed"]
    finally:
        third.close()


async def test_an_unfinished_deployment_is_joined_after_everybody_left(sandbox: Sandbox, tmp_path: Path) -> None:
    config = environment_config(sandbox.config_path, tmp_path, "shared resume")
    first = open_engine(config, tmp_path, ALICE)
    await first.start_deploy("v2.15.0", override_reason="resume test")
    release = first.journal.release_id
    first.close()
    await asyncio.sleep(0.1)
    again = open_engine(config, tmp_path, BOB)
    try:
        assert again.journal.release_id == release and again.crew().driving
        assert again.stage is Stage.DEPLOYING and again.resumed
        changed = [r for r in again.journal.records if r.kind == "driver_changed"]
        assert [(r.data["driver"], r.data["from"]) for r in changed] == [("alice@bastion-1", ""),
                                                                         ("bob@bastion-2", "alice@bastion-1")]
    finally:
        again.close()


async def test_kill_9_of_the_driver_mid_step_hands_over_within_2_s_outcome_unknown(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """The driver is a process of its own, killed with SIGKILL while its deploy step runs: its
    connection, and with it its lock, are gone at once; a watcher takes over within 2 s; the
    step it left running is "outcome unknown" and never re-run; the chain verifies."""
    config = environment_config(sandbox.config_path, tmp_path, "shared kill -9", deploy_command="sleep 31.4159")
    driver = subprocess.Popen([sys.executable, str(Path(__file__).parent / "shared_driver.py"), str(config),
                               str(tmp_path / "bastion-1")], stdout=subprocess.PIPE, text=True)
    bob = None
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "RUNNING"
        bob = open_engine(config, tmp_path, BOB)
        await eventually(lambda: bob.state.steps.get("deploy-code") is not None, bob, what="bob sees the intent")
        # While its driver lives, a step it runs shows as running, not unknown.
        assert bob.state.steps["deploy-code"].status == "running"
        assert bob.crew().driver.label == "alice@bastion-1"  # type: ignore[union-attr]
        children = psutil.Process(driver.pid).children(recursive=True)

        killed_at = time.monotonic()
        driver.kill()
        driver.wait(timeout=10)
        await eventually(lambda: bob.take_over_refusal() is None, bob, timeout=5, what="the lock is free")
        bob.take_over("take over")
        handed_over = time.monotonic() - killed_at
        print(f"\nkill -9 of the driver -> the watcher drives: {handed_over * 1000:.0f} ms")
        assert handed_over < 2.0

        step = bob.state.steps["deploy-code"]
        assert step.status == "unknown" and step.by == "alice"
        refusal = bob.refusal("deploy-code")
        assert refusal is not None and "outcome unknown" in refusal
        with pytest.raises(StepRefused, match="outcome unknown"):
            await bob.run_step("deploy-code")
        stored = await read_release(sandbox.dsn, "shared kill -9")
        assert stored is not None and verify_chain(stored.records) == []
        assert [r.kind for r in stored.records].count("step_intent") == 1
        for mirror in (tmp_path / "bastion-1", tmp_path / "bastion-2"):
            on_disk, problems, _ = read_records(mirror / f"{stored.release_id}.jsonl")
            assert problems == [] and on_disk == stored.records[:len(on_disk)] and len(on_disk) >= 9
    finally:
        if driver.poll() is None:
            driver.kill()
        for child in locals().get("children", []):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        if bob is not None:
            bob.close()


async def test_the_store_restarted_mid_release_the_driver_continues_offline_and_nothing_is_lost(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """A database restart: every control room loses the store. The driver's decisions are
    refused until it types that it continues offline (journaled); what it journals then is in
    its file, and goes to the store, as it is, when the store is back, nobody having journaled
    meanwhile. The watcher sees it all once reconnected."""
    store = EmbeddedPostgres()
    await asyncio.to_thread(store.start)
    alice = bob = None
    try:
        config = environment_config(sandbox.config_path, tmp_path / "config", "shared restart", dsn=store.dsn)
        alice = open_engine(config, tmp_path, ALICE)
        bob = open_engine(config, tmp_path, BOB)
        await alice.start_deploy("v2.15.0", override_reason="restart test")

        await asyncio.to_thread(store.halt)
        await eventually(lambda: not alice.crew().online and not bob.crew().online, alice, bob,
                         what="both see the store gone")
        refusal = alice.command_refusal(Command.MARK_DONE)
        assert refusal is not None and refusal.startswith("the shared journal is unreachable since ")
        assert "until you type that you continue offline (T)" in refusal
        assert alice.crew().banner()[1] == "offline" and alice.crew().headline() == ("JOURNAL OFFLINE", "offline")
        with pytest.raises(SessionError, match="unreachable"):
            alice.mark_done("env-health")
        assert "reconnecting; you watch" in bob.command_refusal(Command.MARK_DONE)  # type: ignore[operator]
        assert bob.take_over_refusal().startswith("the shared journal is unreachable")  # type: ignore[union-attr]

        with pytest.raises(SessionError, match="type 'offline' to confirm"):
            alice.take_over("take over")
        alice.take_over("offline")
        alice.mark_done("env-health", "checked by hand while the database restarted")
        offline = [r for r in alice.journal.records if r.kind in ("offline_continued", "step_outcome")]
        assert [r.kind for r in offline if not notice(r.kind)] == ["offline_continued", "step_outcome"]

        await asyncio.to_thread(store.resume)
        await eventually(lambda: alice.crew().online and bob.crew().online, alice, bob, timeout=15,
                         what="both reconnected")
        await eventually(lambda: bob.state.steps.get("env-health") is not None, bob, what="bob sees the offline step")
        assert alice.crew().driving and alice.command_refusal(Command.MARK_DONE) is None
        assert any("journaled here meanwhile are in it" in n for n in alice.take_notices())
        stored = await read_release(store.dsn, "shared restart")
        assert stored is not None and verify_chain(stored.records) == []
        kinds = [r.kind for r in stored.records]
        assert [k for k in kinds if not notice(k)][-3:] == ["offline_continued", "step_outcome", "store_back"]
        assert [r for r in stored.records if r.kind in ("offline_continued", "step_outcome")] == offline
        await eventually(lambda: len(bob.journal.records) == len(stored.records), bob)
        for engine in (alice, bob):
            on_disk, problems, _ = read_records(engine.journal.path)
            assert problems == [] and on_disk == stored.records
    finally:
        for engine in (alice, bob):
            if engine is not None:
                engine.close()
        await asyncio.to_thread(store.stop)


async def test_a_driver_cut_off_while_another_drove_keeps_its_offline_records_as_a_branch(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """The driver's network goes (a proxy between it and the store is cut), the store stays up
    for the others: a watcher takes over and drives on. The cut-off driver continues offline.
    When its network is back its records cannot follow the store's: they are kept whole, as an
    `offline_branch` record in the store and as the set-aside local file (its chain intact,
    ending with where they went); its new local copy is the store's; it watches, and says so."""
    async with driver_behind_a_proxy(sandbox, tmp_path, "shared branch") as (proxy, alice, bob):
        await alice.start_deploy("v2.15.0", override_reason="branch test")
        await eventually(lambda: bob.stage is Stage.DEPLOYING, bob)

        proxy.cut()
        await eventually(lambda: not alice.crew().online, alice, what="alice offline")
        await eventually(lambda: bob.take_over_refusal() is None, bob, what="alice's lock released")
        bob.take_over("take over")
        bob.mark_done("env-health", "bob checked it")
        alice.take_over("offline")
        alice.mark_done("breaker-status", "alice checked it, offline")
        alice_offline = [r for r in alice.journal.records if r.kind in ("offline_continued", "step_outcome")]

        proxy.restore()
        await eventually(lambda: alice.crew().online, alice, timeout=15, what="alice back")
        assert not alice.crew().driving and alice.crew().driver.label == "bob@bastion-2"  # type: ignore[union-attr]
        notices = " ".join(alice.take_notices())
        assert "kept as a branch" in notices and "you watch now" in notices
        assert alice.command_refusal(Command.MARK_DONE).startswith("driven by bob@bastion-2")  # type: ignore[union-attr]

        stored = await read_release(sandbox.dsn, "shared branch")
        assert stored is not None and verify_chain(stored.records) == []
        branch = next(r for r in stored.records if r.kind == "offline_branch")
        assert branch.operator["user"] == "alice" and branch.data["journaled_by"] == "alice@bastion-1"
        assert [body["kind"] for body in branch.data["records"] if not notice(body["kind"])] == ["offline_continued",
                                                                                                  "step_outcome"]
        assert [body["hash"] for body in branch.data["records"] if not notice(body["kind"])] == [r.hash for r in alice_offline]
        assert "breaker-status" not in replay_steps(stored.records)  # a branch decides nothing
        assert replay_steps(stored.records)["env-health"] == "done"

        on_disk, problems, _ = read_records(alice.journal.path)
        assert problems == [] and on_disk == stored.records  # the new local copy: the store's
        aside = list(alice.journal.path.parent.glob("*.offline-branch-*.jsonl"))
        assert len(aside) == 1
        kept, problems, _ = read_records(aside[0])
        assert problems == [] and kept[-1].kind == "offline_branch_kept" and kept[-1].data["store_seq"] == branch.seq
        assert [r.hash for r in kept if r.kind in ("offline_continued", "step_outcome")] == [r.hash for r in alice_offline]

        report = render_report(stored.records, load_config(sandbox.config_path).runbook)
        assert "Offline branch" in report and "alice@bastion-1" in report and "breaker-status" in report


def replay_steps(records: list) -> dict[str, str]:  # type: ignore[type-arg]
    from controlroom.release.state import replay

    return {step_id: step.status for step_id, step in replay(records).steps.items()}


async def test_opened_while_the_store_is_down_a_release_opens_from_this_machines_copy(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """The driver's control room died during a database outage and is opened again before the
    database is back: it opens the release from this machine's copy, offline; decisions wait for
    the typed `offline`; when the store is back what it journaled goes there. With no copy of an
    unfinished release here it cannot open, and says so in one line."""
    store = EmbeddedPostgres()
    await asyncio.to_thread(store.start)
    alice = None
    try:
        config = environment_config(sandbox.config_path, tmp_path / "config", "shared cold offline", dsn=store.dsn)
        alice = open_engine(config, tmp_path, ALICE)
        bob = open_engine(config, tmp_path, BOB)  # watches: bastion-2 has a copy too
        await alice.start_deploy("v2.15.0", override_reason="cold offline test")
        release = alice.journal.release_id
        await eventually(lambda: bob.stage is Stage.DEPLOYING, bob)
        await asyncio.to_thread(store.halt)
        alice.close()  # gone, and opened again while the store is still down
        bob.close()

        # bob did not drive it last: opened offline he watches, so two drivers cannot run a step twice.
        bob = open_engine(config, tmp_path, BOB)
        assert bob.journal.release_id == release and not bob.crew().driving
        assert any("alice@bastion-1 drove it last: you watch" in n for n in bob.take_notices())
        assert "reconnecting; you watch" in bob.command_refusal(Command.MARK_DONE)  # type: ignore[operator]
        assert bob.take_over_refusal().startswith("the shared journal is unreachable")  # type: ignore[union-attr]
        bob.close()

        with pytest.raises(SessionError, match="no unfinished release of 'shared cold offline' has a copy in"):
            open_engine(config, tmp_path / "elsewhere", BOB)
        alice = open_engine(config, tmp_path, ALICE)
        assert alice.journal.release_id == release and alice.stage is Stage.DEPLOYING
        crew = alice.crew()
        assert not crew.online and crew.driving and not crew.offline_continued
        assert any("opened release" in n and "you drove it last: T continues offline" in n for n in alice.take_notices())
        assert alice.command_refusal(Command.MARK_DONE).startswith("the shared journal is unreachable")  # type: ignore[union-attr]
        alice.take_over("offline")
        alice.mark_done("env-health", "checked by hand")

        await asyncio.to_thread(store.resume)
        await eventually(lambda: alice.crew().online, alice, timeout=15, what="alice reconnected")
        assert alice.crew().driving
        stored = await read_release(store.dsn, "shared cold offline")
        assert stored is not None and verify_chain(stored.records) == []
        assert [r.kind for r in stored.records if not notice(r.kind)][-3:] == ["offline_continued", "step_outcome",
                                                                                "store_back"]
        on_disk, problems, _ = read_records(alice.journal.path)
        assert problems == [] and on_disk == stored.records
    finally:
        if alice is not None:
            alice.close()
        await asyncio.to_thread(store.stop)


async def test_control_rooms_on_one_machine_share_its_copy_and_keep_following(sandbox: Sandbox, tmp_path: Path) -> None:
    """Three control rooms on one bastion write the same copy of the release; each still
    follows every record of the driver's (a watcher once stopped following when another
    process's lines reached its copy first), and a line torn by a control room killed mid-write
    is cut off the copy, which stays the store's."""
    config = environment_config(sandbox.config_path, tmp_path / "config", "shared one machine")
    journals = tmp_path / "bastion"
    alice = ReleaseEngine.open(load_config(config), write=True, journal_dir=journals, operator=ALICE)
    bob = ReleaseEngine.open(load_config(config), write=True, journal_dir=journals, operator=BOB)
    carol = ReleaseEngine.open(load_config(config), write=False, journal_dir=journals, operator=CAROL)
    try:
        assert alice.journal.path == bob.journal.path == carol.journal.path
        await alice.start_deploy("v2.15.0", override_reason="one machine")
        for step_id in ("env-health", "breaker-status"):
            alice.mark_done(step_id, "by hand")
            await eventually(lambda s=step_id: all(e.state.steps.get(s) is not None for e in (bob, carol)),  # type: ignore[misc]
                             bob, carol, what=f"the watchers follow {step_id}")
        with alice.journal.path.open("ab") as copy:  # a control room killed while writing its copy
            copy.write(b'{"seq": 99, "ts": "2026-')
        alice.mark_done("rotation-capability", "by hand")
        alice.next_phase()
        await eventually(lambda: bob.current_phase() is not None and bob.current_phase().id == "deploy",  # type: ignore[union-attr]
                         bob, carol, what="the watchers follow into the next phase")
        await eventually(lambda: len(carol.journal.records) == len(alice.journal.records), carol)
        stored = await read_release(sandbox.dsn, "shared one machine")
        assert stored is not None
        on_disk, problems, torn = read_records(alice.journal.path)
        assert problems == [] and torn is None and on_disk == stored.records
        assert not any("could not be written" in n for e in (alice, bob, carol) for n in e.take_notices())
    finally:
        for engine in (alice, bob, carol):
            engine.close()


async def test_a_driver_back_from_a_short_partition_drives_on_with_its_offline_records(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """A partition between the driver and the store: the server still holds the driver's old
    session (and the driver's lock) when the network is back. Nobody else drove: the driver ends
    its own old session, keeps its session, sends what it journaled offline and drives on — not
    a branch, not "someone else drove"."""
    async with driver_behind_a_proxy(sandbox, tmp_path, "shared partition") as (proxy, alice, bob):
        await alice.start_deploy("v2.15.0", override_reason="partition test")
        session = alice.journal.session_key

        proxy.partition(True, server_notices_after_s=10.0)
        await eventually(lambda: not alice.crew().online, alice, what="alice offline")
        assert bob.take_over_refusal().startswith("alice@bastion-1 still drives")  # type: ignore[union-attr]
        alice.take_over("offline")
        alice.mark_done("env-health", "checked by hand during the partition")
        proxy.partition(False, server_notices_after_s=10.0)

        await eventually(lambda: alice.crew().online, alice, timeout=10, what="alice back")
        crew = alice.crew()
        assert crew.driving and alice.journal.session_key == session
        notices = " ".join(alice.take_notices())
        assert "journaled here meanwhile are in it" in notices and "someone else" not in notices
        stored = await read_release(sandbox.dsn, "shared partition")
        assert stored is not None and verify_chain(stored.records) == []
        assert [r.kind for r in stored.records if not notice(r.kind)][-3:] == ["offline_continued", "step_outcome",
                                                                                "store_back"]
        assert not any(r.kind == "offline_branch" for r in stored.records)
        await eventually(lambda: bob.state.steps.get("env-health") is not None
                         and bob.crew().driver is not None and bob.crew().driver.label == "alice@bastion-1",  # type: ignore[union-attr]
                         bob, what="bob sees alice drive on")


async def test_an_outcome_journaled_while_the_driver_reconnects_slowly_is_not_lost(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store is back but reconnecting takes long (a slow server): an action's outcome
    journaled meanwhile lands (here, then in the store), never "nothing was decided"."""
    store = EmbeddedPostgres()
    await asyncio.to_thread(store.start)
    alice = None
    try:
        config = environment_config(sandbox.config_path, tmp_path / "config", "shared slow reconnect", dsn=store.dsn)
        alice = open_engine(config, tmp_path, ALICE)
        await alice.start_deploy("v2.15.0", override_reason="slow reconnect test")
        await asyncio.to_thread(store.halt)
        await eventually(lambda: not alice.crew().online, alice, what="alice offline")
        slow_join = PgJournal.join

        async def join_slowly(self: PgJournal, *args: object, **kwargs: object) -> int:
            await asyncio.sleep(4.0)
            return await slow_join(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(PgJournal, "join", join_slowly)
        await asyncio.to_thread(store.resume)
        await asyncio.sleep(1.5)  # the reconnection has begun, and waits in join
        outcome = alice.journal.append("step_outcome", {"step_id": "env-health", "phase_id": "pre",
                                                        "status": "done", "summary": "ran before the outage"})
        await eventually(lambda: alice.crew().online, alice, timeout=15, what="alice back")
        stored = await read_release(store.dsn, "shared slow reconnect")
        assert stored is not None and outcome in stored.records and verify_chain(stored.records) == []
    finally:
        if alice is not None:
            alice.close()
        await asyncio.to_thread(store.stop)


async def test_a_read_only_window_on_a_release_nobody_drove_checks_for_itself(sandbox: Sandbox, tmp_path: Path) -> None:
    """The README's first command: a read-only demo, alone on its release. With no driver to
    follow it probes the checklist itself (journaling nothing) and shows no alarm; once a driver
    journals what it measured, it shows that instead."""
    config = environment_config(sandbox.config_path, tmp_path, "shared first look")
    carol = open_engine(config, tmp_path, CAROL, write=False)
    alice = None
    try:
        assert carol.watching and not carol.follows_driver
        assert carol.crew().banner() == ("", "") and carol.crew().headline() == ("NO DRIVER · 1 watch", "nobody")
        before = len(carol.journal.records)
        await carol.run_checks()
        assert carol.verdict is not None and carol.results
        assert len(carol.journal.records) == before  # an observation, kept to itself
        alice = open_engine(config, tmp_path, ALICE)
        await alice.run_checks()
        await eventually(lambda: carol.follows_driver and any(r.kind == "check" for r in carol.journal.records), carol,
                         what="carol follows alice")
        with pytest.raises(SessionError, match="you watch this release"):
            await carol.run_checks()
        alice.close()
        await eventually(lambda: carol.crew().driver is None, carol)
        assert carol.crew().banner()[1] == "nobody"  # a driver went: now it is said
    finally:
        carol.close()
        if alice is not None:
            alice.close()
