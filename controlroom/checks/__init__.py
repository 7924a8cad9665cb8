"""Probes: one way of knowing per module, each answering a checklist item with a status and
its measured value as evidence. `run_probe` never raises; see base.py."""

from controlroom.checks.base import (
    STATUSES,
    Attestation,
    ProbeContext,
    ProbeResult,
    Status,
    run_probe,
    with_attestation,
)

__all__ = ["STATUSES", "Attestation", "ProbeContext", "ProbeResult", "Status", "run_probe", "with_attestation"]
