"""HTTP health: status in expect_status, latency against max (fail) and warn limits,
top-level JSON fields against expect_json (fail) and warn_json (warn), and a number at a
JSON path (`value`) against pass_when / fail_when (checks/thresholds.py).

A refused connection, a timeout, a 5xx (unless expected) without a JSON object as its body,
or a body that should be JSON and is not: `error` (we could not verify). A wrong non-5xx
status, a 5xx whose body is a JSON object (the service answered and said it is failing, e.g.
503 {"provider": "fudo", "status": "failing"}), a field that differs, a latency over
max_latency_ms: `fail`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from controlroom.checks.base import (
    Outcome,
    ProbeContext,
    body_snippet,
    describe_exception,
    ms,
    polite_request,
    secret_headers,
)
from controlroom.checks.thresholds import judge_number
from controlroom.config.models import HttpItem
from controlroom.infra.jsonpath import PathNotFound, resolve


async def probe(item: HttpItem, ctx: ProbeContext) -> Outcome:
    url = ctx.url(item.url)
    headers = secret_headers(ctx, item.secret_headers, item.auth)
    kwargs: dict[str, Any] = {"headers": headers, "timeout": item.timeout_s}
    if item.json_body is not None:
        kwargs["json"] = ctx.json(item.json_body)
    began = time.perf_counter()
    try:
        answer = await polite_request(ctx.http, item.method, url, **kwargs)
    except httpx.HTTPError as error:
        return Outcome("error", f"{item.method} {url}: {describe_exception(error)} after {ms(_since(began))}")
    return judge(item, answer.response, answer.latency_ms, redact=ctx.redact, note=answer.note)


def judge(
    item: HttpItem, response: httpx.Response, latency_ms: float, *, redact: Callable[[str], str], note: str = ""
) -> Outcome:
    """The verdict on one answer (pure: no I/O). `redact` is applied before any cut."""
    status = response.status_code
    measured: dict[str, Any] = {"http_status": status, "latency_ms": round(latency_ms, 1)}
    head = f"{status} in {ms(latency_ms)}{note}"
    if status not in item.expect_status:
        detail = f"{head} (expected {' or '.join(str(s) for s in item.expect_status)})"
        if status >= 500:
            said = _json_object(response)
            if said is None:  # a bare 5xx (a proxy's HTML page, nothing): we could not verify
                snippet = body_snippet(response, redact)
                return Outcome("error", f"server error {detail}" + (f": {snippet}" if snippet else ""), measured)
            # The service answered, in its own words, that it is failing: a measured failure.
            return Outcome("fail", f"{detail}: {_said(item, said, response, redact)}", measured)
        snippet = body_snippet(response, redact)
        return Outcome("fail", detail + (f": {snippet}" if snippet else ""), measured)

    body: Any = None
    if item.expect_json or item.warn_json or item.value is not None:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            snippet = body_snippet(response, redact)
            return Outcome("error", f"{head}, malformed JSON" + (f": {snippet}" if snippet else " (empty body)"), measured)
        if not isinstance(body, dict) and (item.expect_json or item.warn_json):
            return Outcome("error", f"{head}, expected a JSON object, got {type(body).__name__}", measured)

    problems: list[str] = []
    warnings: list[str] = []
    notes: list[str] = []
    if item.value is not None:
        try:
            number = judge_number(item, resolve(body, item.value), what=item.value, label=f"{item.value} = ")
        except PathNotFound as error:
            return Outcome("error", f"{head}, {redact(str(error))}", measured)
        measured["value"] = number.measured.get("value")
        {"fail": problems, "warn": warnings}.get(number.status, notes).append(number.evidence)
    for key, expected in item.expect_json.items():
        actual = body.get(key, _MISSING)
        if key in item.warn_json and actual is not _MISSING and _equal(actual, item.warn_json[key]):
            continue  # e.g. status=degraded: a warning (below), not a failure
        if actual is _MISSING:
            problems.append(f"{key} missing (expected {_show(expected)})")
        elif not _equal(actual, expected):
            problems.append(f"{key}={_show(actual)} (expected {_show(expected)})")
        else:
            notes.append(f"{key}={_show(actual)}")
    for key, value in item.warn_json.items():
        actual = body.get(key, _MISSING)
        if actual is not _MISSING and _equal(actual, value):
            warnings.append(f"{key}={_show(actual)}")

    if item.max_latency_ms is not None and latency_ms > item.max_latency_ms:
        problems.append(f"slower than {item.max_latency_ms:g} ms")
    elif item.warn_latency_ms is not None and latency_ms > item.warn_latency_ms:
        warnings.append(f"slower than {item.warn_latency_ms:g} ms")

    if problems:
        return Outcome("fail", f"{head}: " + ", ".join(problems), measured)
    if warnings:
        # A field that matched expect_json and also warns (status=degraded) is said once.
        notes = [n for n in notes if n not in warnings]
        return Outcome("warn", f"{head}: " + ", ".join(warnings + notes), measured)
    return Outcome("pass", head + (", " + ", ".join(notes) if notes else ""), measured)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _said(item: HttpItem, body: dict[str, Any], response: httpx.Response, redact: Callable[[str], str]) -> str:
    """What a failing service's JSON says: the fields the item judges (status=failing) when
    the body has them, else the start of the body."""
    keys = [key for key in {**item.expect_json, **item.warn_json} if key in body]
    if keys:
        return ", ".join(f"{key}={_show(body[key])}" for key in keys)
    return body_snippet(response, redact)


class _Missing:
    pass


_MISSING = _Missing()


def _equal(actual: Any, expected: Any) -> bool:
    # JSON true is not 1: compare types for booleans, values otherwise.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    return actual == expected


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def _since(began: float) -> float:
    return (time.perf_counter() - began) * 1000.0
