"""Manual items: only an operator can answer them. `pending` until attested; an attestation
records who ($USER, plus the SSH client's address when there is one) and when (UTC)."""

from __future__ import annotations

from controlroom.checks.base import Outcome, ProbeContext
from controlroom.config.models import ManualItem


async def probe(item: ManualItem, ctx: ProbeContext) -> Outcome:
    attestation = ctx.attestations.get(item.id)
    if attestation is None:
        prompt = item.prompt or item.title
        return Outcome("pending", f"awaits an operator's attestation: {prompt}")
    return Outcome("pass", attestation.describe(), attestation=attestation)
