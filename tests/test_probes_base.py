"""The probe runner's contract: never raises, always redacts; manual items and attestations."""

from __future__ import annotations

import os

import asyncio
from datetime import datetime, timezone

import pytest

from controlroom.checks import Attestation, ProbeContext, run_probe
from controlroom.checks import base

from probe_support import make_loaded

pytestmark = pytest.mark.timeout(30)

SECRET = "very-secret-value-0987654321"


def manual_item(**extra: object) -> dict[str, object]:
    return {"id": "on-call", "title": "On-call team available", "kind": "manual", "prompt": "L1-L4 reachable", **extra}


async def test_manual_item_is_pending_until_attested() -> None:
    loaded = make_loaded([manual_item()])
    async with ProbeContext(loaded) as ctx:
        result = await run_probe(loaded.runbook.items()[0][1], ctx)
    assert result.status == "pending"
    assert "L1-L4 reachable" in result.evidence and result.attested_by is None


async def test_attested_manual_item_passes_and_records_who_and_when() -> None:
    loaded = make_loaded([manual_item()])
    attestation = Attestation(who="alice", at=datetime.now(timezone.utc), address="10.0.0.5")
    async with ProbeContext(loaded, attestations={"on-call": attestation}) as ctx:
        result = await run_probe(loaded.runbook.items()[0][1], ctx)
    assert result.status == "pass"
    assert result.attested_by == "alice (from 10.0.0.5)"
    assert result.attested_at == attestation.at and result.attested_at.tzinfo is not None
    assert result.evidence.startswith("attested by alice (from 10.0.0.5) at ") and result.evidence.endswith("Z")
    data = result.to_json()
    assert data["attested_by"] == "alice (from 10.0.0.5)" and data["attested_at"].endswith("Z")


def test_attestation_names_the_real_user_not_dollar_user() -> None:
    import pwd

    real = pwd.getpwuid(os.getuid()).pw_name
    spoofed = Attestation.now({"USER": "mallory", "SSH_CLIENT": "10.0.0.5 52144 22"})
    assert spoofed.who == real and spoofed.by == f"{real} (from 10.0.0.5)"
    local = Attestation.now({})
    assert local.address is None and local.by == real
    assert abs((datetime.now(timezone.utc) - local.at).total_seconds()) < 5
    if real != "alice":
        assert Attestation.now({"SUDO_USER": "alice"}).who == f"alice (as {real})"


async def test_a_probe_that_raises_becomes_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(item: object, ctx: object) -> base.Outcome:
        raise RuntimeError(f"kaboom with {SECRET}")

    monkeypatch.setattr(base, "_registry", lambda: {"manual": broken})
    loaded = make_loaded([manual_item()], secrets={"token": SECRET})
    async with ProbeContext(loaded) as ctx:
        result = await run_probe(loaded.runbook.items()[0][1], ctx)
    assert result.status == "error"
    assert "RuntimeError: kaboom" in result.evidence and SECRET not in result.evidence


async def test_a_probe_that_hangs_is_cut_at_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    async def hangs(item: object, ctx: object) -> base.Outcome:
        await asyncio.sleep(60)
        raise AssertionError

    monkeypatch.setattr(base, "_registry", lambda: {"manual": hangs})
    monkeypatch.setattr(base, "RUNNER_GRACE_S", 0.1)
    loaded = make_loaded([manual_item(timeout_s=0.2)])
    async with ProbeContext(loaded) as ctx:
        result = await run_probe(loaded.runbook.items()[0][1], ctx)
    assert result.status == "error" and "timed out after 0.2 s" in result.evidence


def test_clean_removes_escapes_and_controls() -> None:
    assert base.clean("a\x1b[2Jb\x1b]8;;http://x\x07c\x00d\re\nf") == "abcde\nf"
    assert len(base.clean("x" * 10_000)) == base.EVIDENCE_MAX_CHARS
