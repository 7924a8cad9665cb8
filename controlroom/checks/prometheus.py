"""Prometheus items: an instant query's number judged like an SQL value
(GET {url}/api/v1/query?query=…), read by controlroom/live/prometheus.py (vector, scalar,
matrix, string; several series reduced as the item says, or an error naming how many).

The answer's warnings and infos go into the evidence; a 4xx/5xx answer's `error` is the
evidence. The item's timeout_s covers the whole request, body included.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from controlroom.checks.base import (
    Outcome,
    ProbeContext,
    ProbeError,
    body_snippet,
    describe_exception,
    polite_request,
    secret_headers,
    shorten,
)
from controlroom.checks.thresholds import judge_number
from controlroom.config.models import AlertRulesItem, PrometheusItem
from controlroom.live.prometheus import PrometheusAnswerError, read_answer


async def api_get(item: PrometheusItem | AlertRulesItem, ctx: ProbeContext, path: str,
                  params: dict[str, str]) -> tuple[Any, float]:
    """GET {item.url}{path}: the JSON body of a 200 and the latency; ProbeError with the
    answer's own `error` (or the start of its body) otherwise."""
    url = ctx.url(item.url).rstrip("/") + path
    try:
        answer = await polite_request(ctx.http, "GET", url, params=params,
                                      headers=secret_headers(ctx, item.secret_headers, item.auth), timeout=item.timeout_s)
    except httpx.HTTPError as error:
        raise ProbeError(f"GET {url}: {describe_exception(error)}") from None
    response = answer.response
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    if response.status_code != 200:
        said = body.get("error") if isinstance(body, dict) else None
        detail = shorten(ctx.redact(str(said)), 300) if said else body_snippet(response, ctx.redact)
        raise ProbeError(f"HTTP {response.status_code} from {url}" + (f": {detail}" if detail else ""))
    if body is None:
        raise ProbeError(f"{url}: malformed JSON: {body_snippet(response, ctx.redact)}")
    return body, answer.latency_ms


async def probe(item: PrometheusItem, ctx: ProbeContext) -> Outcome:
    body, latency_ms = await api_get(item, ctx, "/api/v1/query", {"query": item.query})
    try:
        number = read_answer(body, reduce=item.reduce)
    except PrometheusAnswerError as error:
        raise ProbeError(f"{item.query}: {error}") from None
    outcome = judge_number(item, number.value, what=item.query)
    if number.value is None:
        outcome = Outcome(outcome.status, "no data (no series answered)" if number.series == 0 else
                          "no number (NaN)", outcome.measured)
    extra = [f"{number.series} series reduced by {item.reduce}"] if number.series > 1 else []
    extra += list(number.notes)
    evidence = outcome.evidence + (f"; {'; '.join(extra)}" if extra else "")
    return Outcome(outcome.status, evidence, {**outcome.measured, "series": number.series, "latency_ms": round(latency_ms, 1)})
