"""CORS: production origins only, no wildcards.

A preflight (OPTIONS, Origin: foreign_origin, Access-Control-Request-Method: GET) must not
be allowed: no Access-Control-Allow-Origin echoing the foreign origin, and no "*". A plain
GET with that Origin must not be answered with either. When allowed_origin is set, a
preflight from it should be allowed (a warning otherwise: the app's own origin refused).
"""

from __future__ import annotations

import time

import httpx

from controlroom.checks.base import Outcome, ProbeContext, describe_exception, ms, request_within_deadline, secret_headers
from controlroom.config.models import CorsItem


async def probe(item: CorsItem, ctx: ProbeContext) -> Outcome:
    url = ctx.url(item.url)
    foreign = item.foreign_origin
    credentials = secret_headers(ctx, {}, item.auth)
    began = time.perf_counter()
    try:
        # Three requests, one deadline between them (the probe's timeout_s).
        preflight = await request_within_deadline(ctx.http, "OPTIONS", url, headers=_preflight(foreign),
                                                  timeout=item.timeout_s)
        simple = await request_within_deadline(ctx.http, "GET", url, headers={**credentials, "Origin": foreign}, timeout=item.timeout_s)
        own = (
            await request_within_deadline(ctx.http, "OPTIONS", url, headers=_preflight(item.allowed_origin),
                                          timeout=item.timeout_s)
            if item.allowed_origin
            else None
        )
    except httpx.HTTPError as error:
        return Outcome("error", f"{url}: {describe_exception(error)} after {ms((time.perf_counter() - began) * 1000)}")

    problems: list[str] = []
    pre_acao = preflight.headers.get("access-control-allow-origin")
    get_acao = simple.headers.get("access-control-allow-origin")
    if pre_acao is not None and pre_acao.strip() in ("*", foreign):
        problems.append(f"preflight from {foreign} allowed (Access-Control-Allow-Origin: {pre_acao})")
    if get_acao is not None and get_acao.strip() in ("*", foreign):
        problems.append(f"GET with Origin {foreign} answered Access-Control-Allow-Origin: {get_acao}")
    measured = {"preflight_status": preflight.status_code, "preflight_acao": pre_acao, "get_acao": get_acao}
    if problems:
        return Outcome("fail", "; ".join(problems), measured)
    if preflight.status_code >= 500:
        return Outcome("error", f"preflight answered server error {preflight.status_code}", measured)
    evidence = f"preflight from {foreign} refused ({preflight.status_code}, no Access-Control-Allow-Origin), no wildcard"
    if own is not None:
        own_acao = own.headers.get("access-control-allow-origin")
        if own_acao != item.allowed_origin:
            return Outcome("warn", evidence + f"; but the allowed origin {item.allowed_origin} is refused too ({own.status_code})", measured)
        evidence += f"; {item.allowed_origin} allowed"
    return Outcome("pass", evidence, measured)


def _preflight(origin: str | None) -> dict[str, str]:
    return {"Origin": origin or "", "Access-Control-Request-Method": "GET"}
