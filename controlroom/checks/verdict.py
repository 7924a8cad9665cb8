"""The GO / NO-GO / DELAYED / PENDING decision, from the runbook (not hard-coded).

`decide(runbook, results)` is pure. In order:

1. NO-GO if any item with on_fail = "no-go" failed — or errored: an `error` on a NO-GO gate
   means we could not verify it, and a gate we cannot verify is not passed, so NO-GO is the
   safe answer; the reason says "could not verify".
2. DELAYED if any item with on_fail = "delayed" failed or errored, any item with
   on_warn = "delayed" warned, or a required item with on_fail = "info" did not pass.
3. PENDING if a required item is still `pending` (a manual item not attested, or a probe
   with no result yet) or `skipped` without an attestation (e.g. the rate-limit burst,
   refused against production: someone must vouch for it with --attest).
4. Otherwise GO if the health share is at or above runbook.verdict.health_min_percent,
   else DELAYED with the health as the reason.

Health is computed over the items in sections with counts_for_health = true: a pass (or an
attested skip) counts 1, a warning 0.5, anything else 0, divided by the number of items;
100 % when no section counts. `reasons` lists the checks that decided the verdict, each with
its measured value; for GO, a summary per section, the health and who attested what.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from controlroom.checks.base import ProbeResult
from controlroom.config.models import ChecklistItem, Runbook, Section

VerdictName = Literal["GO", "NO-GO", "DELAYED", "PENDING"]
EXIT_CODES: dict[str, int] = {"GO": 0, "DELAYED": 3, "NO-GO": 4, "PENDING": 5}
REASON_EVIDENCE_CHARS = 240


@dataclass(frozen=True)
class Verdict:
    verdict: VerdictName
    reasons: list[str] = field(default_factory=list)
    health_percent: float = 100.0

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


@dataclass(frozen=True)
class _Row:
    section: Section
    item: ChecklistItem
    status: str
    evidence: str
    attested: bool
    attested_by: str | None


def decide(runbook: Runbook, results: Mapping[str, ProbeResult]) -> Verdict:
    rows = [_row(section, item, results.get(item.id)) for section, item in runbook.items()]
    health = health_percent(runbook, results)

    no_go = [_no_go_reason(r) for r in rows if r.item.on_fail == "no-go" and r.status in ("fail", "error")]
    if no_go:
        return Verdict("NO-GO", no_go, health)

    delayed: list[str] = []
    for r in rows:
        if r.item.on_fail == "delayed" and r.status in ("fail", "error"):
            delayed.append(_fail_reason("DELAYED", r))
        elif r.status == "warn" and r.item.on_warn == "delayed":
            delayed.append(f"DELAYED: {r.item.warn_criterion or r.item.title} — {r.item.id}: {_first_line(r.evidence)}")
        elif r.item.on_fail == "info" and r.item.required and r.status in ("fail", "error"):
            delayed.append(f"DELAYED: required check did not pass: {r.item.title} — {r.item.id}: {_first_line(r.evidence)}")
    if delayed:
        return Verdict("DELAYED", delayed, health)

    pending = [_pending_reason(r) for r in rows if r.item.required and _waiting(r)]
    if pending:
        return Verdict("PENDING", pending, health)

    minimum = runbook.verdict.health_min_percent
    health_sections = [s for s in runbook.checklist.sections if s.counts_for_health]
    over = ", ".join(s.title for s in health_sections)
    if health < minimum:
        lacking = [f"{r.item.id} {r.status}" for r in rows if r.section.counts_for_health and _score(r) < 1]
        return Verdict(
            "DELAYED",
            [f"DELAYED: health {percent(health)} % is below {percent(minimum)} % ({over}): " + ", ".join(lacking)],
            health,
        )
    return Verdict("GO", _go_reasons(runbook, rows, health, minimum, over), health)


def health_percent(runbook: Runbook, results: Mapping[str, ProbeResult]) -> float:
    scores = [
        _score(_row(section, item, results.get(item.id)))
        for section, item in runbook.items()
        if section.counts_for_health
    ]
    if not scores:
        return 100.0
    return round(100.0 * sum(scores) / len(scores), 1)


def percent(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


# -- helpers -------------------------------------------------------------------------------


def _row(section: Section, item: ChecklistItem, result: ProbeResult | None) -> _Row:
    if result is None:
        return _Row(section, item, "pending", "not run yet", False, None)
    return _Row(section, item, result.status, result.evidence, result.attested, result.attested_by)


def _score(r: _Row) -> float:
    if r.status == "pass" or (r.status == "skipped" and r.attested):
        return 1.0
    if r.status == "warn":
        return 0.5
    return 0.0


def _waiting(r: _Row) -> bool:
    return r.status == "pending" or (r.status == "skipped" and not r.attested)


def _satisfied(r: _Row) -> bool:
    return r.status in ("pass", "warn") or (r.status == "skipped" and r.attested)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "(no evidence)"
    return line if len(line) <= REASON_EVIDENCE_CHARS else line[: REASON_EVIDENCE_CHARS - 1] + "…"


def _no_go_reason(r: _Row) -> str:
    if r.status == "error":
        return f'NO-GO: could not verify "{r.item.title}" ({r.item.criterion or "NO-GO gate"}) — {r.item.id}: {_first_line(r.evidence)}'
    return _fail_reason("NO-GO", r)


def _fail_reason(tier: str, r: _Row) -> str:
    if r.status == "error":
        return f'{tier}: could not verify "{r.item.title}" — {r.item.id}: {_first_line(r.evidence)}'
    return f"{tier}: {r.item.criterion or r.item.title} — {r.item.id}: {_first_line(r.evidence)}"


def _pending_reason(r: _Row) -> str:
    if r.status == "skipped":
        return f"PENDING: {r.item.title} — {r.item.id}: {_first_line(r.evidence)}"
    if r.item.kind == "manual":
        return f"PENDING: {r.item.title} — awaits an operator's attestation (--attest {r.item.id})"
    return f"PENDING: {r.item.title} — {r.item.id}: {_first_line(r.evidence)}"


def _go_reasons(runbook: Runbook, rows: list[_Row], health: float, minimum: float, over: str) -> list[str]:
    reasons: list[str] = []
    for section in runbook.checklist.sections:
        mine = [r for r in rows if r.section.id == section.id]
        passed = [r for r in mine if r.status == "pass" or (r.status == "skipped" and r.attested)]
        warned = [r for r in mine if r.status == "warn"]
        if len(passed) == len(mine):
            text = f"{section.title}: all {len(mine)} checks pass"
        else:
            text = f"{section.title}: {len(passed)} of {len(mine)} pass"
            if warned:
                text += f", warnings (not deciding): {', '.join(f'{r.item.id}: {_first_line(r.evidence)}' for r in warned)}"
            others = [r for r in mine if r not in passed and r not in warned]
            if others:
                text += f", not deciding: {', '.join(f'{r.item.id} {r.status}' for r in others)}"
        reasons.append(text)
    if over:
        reasons.append(f"health {percent(health)} % (≥ {percent(minimum)} %) over {over}")
    attested: dict[str, list[str]] = {}
    for r in rows:
        if r.attested and _satisfied(r):
            attested.setdefault(r.attested_by or "?", []).append(r.item.id)
    for who, ids in attested.items():
        reasons.append(f"attested by {who}: {', '.join(ids)}")
    return reasons
