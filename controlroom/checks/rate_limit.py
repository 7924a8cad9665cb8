"""Rate limits: a bounded, sequential burst must get a 429 before its last request.

Bursting a production API is itself a risk, so against an environment marked production
this probe does not run unless the item sets allow_in_production; it reports `skipped`
with the reason, and the verdict then waits for an operator's attestation.

The whole burst, every request included, ends within the item's timeout_s.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from controlroom.checks.base import (
    Outcome,
    ProbeContext,
    body_snippet,
    describe_exception,
    ms,
    retry_after_seconds,
    secret_headers,
)
from controlroom.config.models import RateLimitItem


async def probe(item: RateLimitItem, ctx: ProbeContext) -> Outcome:
    if item.refused_in(ctx.loaded.environment):  # a burst refused against production
        return Outcome(
            "skipped",
            f"not run: {ctx.loaded.environment.name!r} is production and the runbook does not set "
            f"allow_in_production for this burst of {item.burst} requests; "
            f"attest that rate limits were tested (--attest {item.id})",
        )
    url = ctx.url(item.url)
    headers = secret_headers(ctx, item.secret_headers, item.auth)
    deadline = time.perf_counter() + item.timeout_s
    began = time.perf_counter()
    announced: str | None = None  # X-RateLimit-Limit, when the server says it
    resets, last_remaining = 0, None
    for n in range(1, item.burst + 1):
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return Outcome("error", f"no 429 after {n - 1} requests in {item.timeout_s:g} s (burst unfinished)", {"requests": n - 1})
        try:
            # httpx's timeout bounds each phase of a request (connect, every read), not the
            # request: a server that trickles its answer would outlast it. wait_for bounds
            # the request, and so the whole burst, by what is left of timeout_s.
            response = await asyncio.wait_for(ctx.http.get(url, headers=headers, timeout=remaining), timeout=remaining)
        except TimeoutError:
            return Outcome(
                "error",
                f"no 429 after {n - 1} requests in {item.timeout_s:g} s (burst unfinished, request {n} unanswered)",
                {"requests": n},
            )
        except httpx.HTTPError as error:
            return Outcome("error", f"request {n} of the burst: {describe_exception(error)}", {"requests": n})
        elapsed = ms((time.perf_counter() - began) * 1000)
        if response.status_code == 429:
            retry = retry_after_seconds(response)
            retry_text = f", Retry-After {retry:g} s" if retry is not None else ", no Retry-After"
            measured = {"requests": n, "retry_after_s": retry}
            if n < item.burst:
                return Outcome("pass", f"429 after {n} requests{retry_text} ({elapsed})", measured)
            return Outcome("fail", f"429 only at the last of {item.burst} requests{retry_text}", measured)
        if response.status_code >= 500:
            snippet = body_snippet(response, ctx.redact)
            return Outcome("error", f"server error {response.status_code} on request {n}: {snippet}", {"requests": n})
        if not 200 <= response.status_code < 300:
            return Outcome(
                "error",
                f"{response.status_code} on request {n} (expected 2xx until a 429): {body_snippet(response, ctx.redact)}",
                {"requests": n},
            )
        announced = response.headers.get("x-ratelimit-limit", announced)
        remaining = _int(response.headers.get("x-ratelimit-remaining"))
        if remaining is not None and last_remaining is not None and remaining > last_remaining:
            resets += 1  # a new window began during the burst
        last_remaining = remaining if remaining is not None else last_remaining
    evidence = f"no 429 in {item.burst} requests ({ms((time.perf_counter() - began) * 1000)}): no rate limit"
    if announced is not None:
        evidence = f"no 429 in {item.burst} requests ({ms((time.perf_counter() - began) * 1000)})"
        evidence += f"; the server announces X-RateLimit-Limit {announced}"
        if resets:
            evidence += f" and its window reset {resets}× during the burst: set burst to more than twice the limit"
    return Outcome("fail", evidence, {"requests": item.burst, "window_resets": resets})


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
