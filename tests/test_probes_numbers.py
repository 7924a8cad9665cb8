"""Numbers from anywhere: an HTTP item's JSON path, a Prometheus instant query and the alert
rules Prometheus has loaded, judged by the one threshold code (checks/thresholds.py) — all
against a real local server over a socket that answers as Prometheus does."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlroom.checks import ProbeContext, run_probe
from controlroom.config.models import HttpItem
from controlroom.infra.jsonpath import PathNotFound, parse_path, resolve
from probe_support import make_loaded, serve

pytestmark = pytest.mark.timeout(60)

TOKEN = "prom-token-5e4f3a2b1c0d"


def _vector(*values: str) -> dict[str, Any]:
    return {"resultType": "vector", "result": [{"metric": {"instance": f"i{n}"}, "value": [time.time(), v]}
                                                 for n, v in enumerate(values)]}


QUERIES: dict[str, tuple[int, dict[str, Any]]] = {
    "p95_fast": (200, {"status": "success", "data": _vector("412")}),
    "p95_slow": (200, {"status": "success", "data": _vector("712.5")}),
    "p95_awful": (200, {"status": "success", "data": _vector("1400")}),
    "two_series": (200, {"status": "success", "data": _vector("100", "300")}),
    "nothing": (200, {"status": "success", "data": _vector()}),
    "nan": (200, {"status": "success", "data": _vector("NaN")}),
    "scalar": (200, {"status": "success", "data": {"resultType": "scalar", "result": [time.time(), "0.05"]}}),
    "matrix": (200, {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {}, "values": [[time.time() - 30, "900"], [time.time(), "320"]]}]}}),
    "warned": (200, {"status": "success", "warnings": ["PromQL info: metric might not be a counter"],
                     "infos": ["input to rate() is not a counter"], "data": _vector("12")}),
    "bad{": (400, {"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unexpected end of input"}),
}


def _rule(name: str, *, state: str = "inactive", health: str = "ok", last_error: str = "") -> dict[str, Any]:
    return {"name": name, "query": "up == 0", "state": state, "health": health, "lastError": last_error,
            "type": "alerting", "alerts": [], "labels": {}, "annotations": {}, "duration": 60}


RULES = {
    "status": "success",
    "data": {"groups": [
        {"name": "pos", "file": "pos.yml", "rules": [
            _rule("PosRotationFailing"), _rule("CircuitBreakerOpen", state="firing"),
            _rule("PosApiLatencyHigh", state="pending"),
            {"name": "job:latency:p95", "query": "x", "health": "ok", "type": "recording"},
        ]},
        {"name": "broken", "file": "b.yml", "rules": [
            _rule("PosErrorRateHigh", health="err", last_error="vector contains metrics with the same labelset"),
        ]},
    ]},
}


async def prom_query(request: Request) -> Response:
    if request.headers.get("authorization") != f"Bearer {TOKEN}" and request.url.path.startswith("/secured"):
        return JSONResponse({"status": "error", "errorType": "unauthorized", "error": "missing token"}, status_code=401)
    status, body = QUERIES.get(request.query_params["query"], (400, {"status": "error", "error": "unknown"}))
    return JSONResponse(body, status_code=status)


async def prom_rules(request: Request) -> Response:
    assert request.query_params.get("type") == "alert"
    return JSONResponse(RULES)


async def service_stats(request: Request) -> Response:
    return JSONResponse({"data": {"p95_ms": 412, "samples": [3, 7.5], "name": "api", "none": None}})


@pytest.fixture(scope="module")
async def base_url() -> AsyncIterator[str]:
    app = Starlette(routes=[
        Route("/api/v1/query", prom_query), Route("/secured/api/v1/query", prom_query),
        Route("/api/v1/rules", prom_rules), Route("/stats", service_stats),
    ])
    async with serve(app) as url:
        yield url


async def probe(base_url: str, item: dict[str, Any]):  # noqa: ANN201
    loaded = make_loaded([{"id": "n", "title": "Number", **item}], urls={"prom": base_url},
                         secrets={"prom_token": f"Bearer {TOKEN}"})
    async with ProbeContext(loaded) as ctx:
        return await run_probe(loaded.runbook.items()[0][1], ctx)


LATENCY = {"unit": "ms", "pass_when": {"op": "<", "value": 500}, "fail_when": {"op": ">", "value": 1000}}


def prometheus(query: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "prometheus", "url": "{urls.prom}", "query": query, **LATENCY, **extra}


# -- the JSON path -----------------------------------------------------------------------------


def test_json_path_steps_and_where_it_stops() -> None:
    document = {"data": {"p95_ms": 412, "list": [{"v": 1}, {"v": 2}], "odd key": 3}}
    assert resolve(document, "$.data.p95_ms") == 412
    assert resolve(document, "$.data.list[1].v") == 2 and resolve(document, "$.data.list[-1].v") == 2
    assert resolve(document, '$.data["odd key"]') == 3 and resolve(document, "$") == document
    with pytest.raises(PathNotFound, match=r"\$\.data has no key 'p95' \(its keys: p95_ms, list, odd key\)"):
        resolve(document, "$.data.p95")
    with pytest.raises(PathNotFound, match=r"\$\.data\.list has 2 element\(s\), no \[5\]"):
        resolve(document, "$.data.list[5]")
    with pytest.raises(PathNotFound, match=r"\$\.data\.p95_ms is int 412, not an object"):
        resolve(document, "$.data.p95_ms.x")
    for bad in ("data.p95", "$.data..x", "$[x]", "$.a b"):
        with pytest.raises(ValueError):
            parse_path(bad)


def test_http_value_needs_a_threshold_and_a_path_that_parses() -> None:
    base = {"id": "h", "title": "H", "kind": "http", "url": "http://x.example/stats"}
    with pytest.raises(pydantic.ValidationError, match="value needs pass_when"):
        HttpItem.model_validate({**base, "value": "$.p95"})
    with pytest.raises(pydantic.ValidationError, match="set value"):
        HttpItem.model_validate({**base, "pass_when": {"op": "<", "value": 1}})
    with pytest.raises(pydantic.ValidationError, match="starts with"):
        HttpItem.model_validate({**base, "value": "p95", "pass_when": {"op": "<", "value": 1}})


# -- HTTP items with a number --------------------------------------------------------------------


async def test_http_value_is_judged_like_an_sql_value(base_url: str) -> None:
    item = {"kind": "http", "url": "{urls.prom}/stats", "value": "$.data.p95_ms", **LATENCY}
    result = await probe(base_url, item)
    assert result.status == "pass", result
    assert result.evidence.startswith("200 in ") and result.evidence.endswith("$.data.p95_ms = 412 ms (< 500 ms)")
    assert result.measured["value"] == 412.0 and result.measured["http_status"] == 200

    warn = await probe(base_url, {**item, "pass_when": {"op": "<", "value": 400}})
    assert warn.status == "warn" and "412 ms (not < 400 ms, fails > 1000 ms)" in warn.evidence
    fail = await probe(base_url, {**item, "fail_when": {"op": ">", "value": 410}})
    assert fail.status == "fail" and "412 ms (> 410 ms: fails)" in fail.evidence
    indexed = await probe(base_url, {**item, "value": "$.data.samples[1]", "unit": ""})
    assert indexed.status == "pass" and "$.data.samples[1] = 7.5 (< 500)" in indexed.evidence


async def test_http_value_missing_null_or_not_a_number(base_url: str) -> None:
    item = {"kind": "http", "url": "{urls.prom}/stats", **LATENCY}
    missing = await probe(base_url, {**item, "value": "$.data.p99_ms"})
    assert missing.status == "error"
    assert "$.data.p99_ms: $.data has no key 'p99_ms' (its keys: p95_ms, samples, name, none)" in missing.evidence
    null = await probe(base_url, {**item, "value": "$.data.none", "when_null": "fail"})
    assert null.status == "fail" and "$.data.none = no value (NULL)" in null.evidence
    text = await probe(base_url, {**item, "value": "$.data.name"})
    assert text.status == "error" and "expected a number in $.data.name, got str 'api'" in text.evidence


# -- Prometheus items --------------------------------------------------------------------------------


async def test_prometheus_pass_warn_fail_by_the_thresholds(base_url: str) -> None:
    fast, slow, awful = [await probe(base_url, prometheus(q)) for q in ("p95_fast", "p95_slow", "p95_awful")]
    assert (fast.status, fast.evidence) == ("pass", "412.0 ms (< 500 ms)")
    assert (slow.status, slow.evidence) == ("warn", "712.5 ms (not < 500 ms, fails > 1000 ms)")
    assert (awful.status, awful.evidence) == ("fail", "1400.0 ms (> 1000 ms: fails)")
    assert fast.measured["value"] == 412.0 and fast.measured["series"] == 1


async def test_prometheus_result_types_and_series(base_url: str) -> None:
    scalar = await probe(base_url, prometheus("scalar", unit="%", pass_when={"op": "<", "value": 0.1}))
    assert scalar.status == "pass" and scalar.evidence == "0.05 % (< 0.1 %)"
    matrix = await probe(base_url, prometheus("matrix"))
    assert matrix.status == "pass" and matrix.evidence.startswith("320.0 ms")  # the latest sample
    several = await probe(base_url, prometheus("two_series"))
    assert several.status == "error" and "2 series answered" in several.evidence
    reduced = await probe(base_url, prometheus("two_series", reduce="max"))
    assert reduced.status == "pass" and reduced.evidence == "300.0 ms (< 500 ms); 2 series reduced by max"
    nothing = await probe(base_url, prometheus("nothing"))
    assert (nothing.status, nothing.evidence) == ("warn", "no data (no series answered)")
    nan = await probe(base_url, prometheus("nan", when_null="fail"))
    assert (nan.status, nan.evidence) == ("fail", "no number (NaN)")


async def test_prometheus_warnings_and_error_bodies_are_evidence(base_url: str) -> None:
    warned = await probe(base_url, prometheus("warned"))
    assert warned.status == "pass"
    assert warned.evidence == ("12.0 ms (< 500 ms); warning: PromQL info: metric might not be a counter; "
                               "info: input to rate() is not a counter")
    bad = await probe(base_url, prometheus("bad{"))
    assert bad.status == "error"
    assert bad.evidence == f"HTTP 400 from {base_url}/api/v1/query: 1:5: parse error: unexpected end of input"


async def test_prometheus_auth_from_secret_headers(base_url: str) -> None:
    item = prometheus("p95_fast", url="{urls.prom}/secured")
    refused = await probe(base_url, item)
    assert refused.status == "error" and "HTTP 401" in refused.evidence and "missing token" in refused.evidence
    allowed = await probe(base_url, {**item, "secret_headers": {"Authorization": "prom_token"}})
    assert allowed.status == "pass", allowed


# -- alert rules -------------------------------------------------------------------------------------


def alert_rules(*rules: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "alert_rules", "url": "{urls.prom}", "rules": list(rules), **extra}


async def test_alert_rules_loaded_quiet_pass_and_pending_is_noted(base_url: str) -> None:
    result = await probe(base_url, alert_rules("PosRotationFailing", "PosApiLatencyHigh"))
    assert result.status == "pass", result
    assert result.evidence.startswith("2 of 2 rules loaded, health ok, none firing; pending: PosApiLatencyHigh (")
    assert result.measured["missing"] == 0 and result.measured["firing"] == 0


async def test_alert_rules_firing_fails_or_warns_as_the_item_says(base_url: str) -> None:
    fails = await probe(base_url, alert_rules("PosRotationFailing", "CircuitBreakerOpen"))
    assert fails.status == "fail" and fails.evidence.startswith("firing: CircuitBreakerOpen; 2 rules loaded, health ok")
    warns = await probe(base_url, alert_rules("PosRotationFailing", "CircuitBreakerOpen", firing="warn"))
    assert warns.status == "warn" and warns.measured["firing"] == 1


async def test_alert_rules_missing_or_unhealthy_fail_naming_them(base_url: str) -> None:
    missing = await probe(base_url, alert_rules("PosRotationFailing", "TokenZombieAccepted", "job:latency:p95"))
    assert missing.status == "fail"
    # A recording rule of that name is not an alerting rule.
    assert missing.evidence.startswith("not loaded: TokenZombieAccepted, job:latency:p95 (")
    broken = await probe(base_url, alert_rules("PosErrorRateHigh", firing="warn"))
    assert broken.status == "fail"
    assert broken.evidence.startswith("PosErrorRateHigh health err: vector contains metrics with the same labelset")
