"""HTTP, CORS and rate-limit probes against real local servers over a socket: every failure
mode is an `error` or a `fail` with evidence, never an exception."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from controlroom.checks.run import run_checklist
from controlroom.checks import ProbeContext, run_probe
from controlroom.config.loader import LoadedConfig

from probe_support import closed_port, make_loaded, serve

pytestmark = pytest.mark.timeout(60)

API_KEY = "sk-test-4f9a8b7c6d5e4f3a2b1c"


class Counters:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}

    def hit(self, name: str) -> int:
        self.hits[name] = self.hits.get(name, 0) + 1
        return self.hits[name]


COUNTERS = Counters()


async def ok(request: Request) -> Response:
    return JSONResponse({"status": "ok", "rotation_capable": True})


async def degraded(request: Request) -> Response:
    return JSONResponse({"status": "degraded"})


async def slow(request: Request) -> Response:
    await asyncio.sleep(int(request.query_params.get("ms", "0")) / 1000)
    return JSONResponse({"status": "ok"})


async def boom(request: Request) -> Response:
    return PlainTextResponse("Internal Server Error: database exploded", status_code=500)


async def boom_echoing_the_key(request: Request) -> Response:
    # A careless server's error page: the API key comes after ~100 characters, where a
    # snippet cut at 120 characters would slice it in two.
    prefix = "Internal Server Error: the upstream POS provider refused the request; diagnostic context follows:"
    return PlainTextResponse(f"{prefix} apikey={request.headers.get('apikey')} path={request.url.path}", status_code=500)


async def provider_failing(request: Request) -> Response:
    return JSONResponse({"provider": "fudo", "status": "failing"}, status_code=503)


async def gateway_json_list(request: Request) -> Response:
    return JSONResponse(["upstream", "gone"], status_code=502)


async def missing(request: Request) -> Response:
    return JSONResponse({"message": "no such thing"}, status_code=404)


async def bad_json(request: Request) -> Response:
    return Response('{"status": "ok",', media_type="application/json")


async def a_list(request: Request) -> Response:
    return JSONResponse([1, 2, 3])


async def redirect(request: Request) -> Response:
    return RedirectResponse("/ok", status_code=307)


async def echo_secret(request: Request) -> Response:
    # A careless server that reflects the API key in an error: the probe must redact it.
    return JSONResponse({"error": f"key {request.headers.get('apikey')} is not allowed"}, status_code=403)


async def needs_key(request: Request) -> Response:
    if request.headers.get("apikey") != API_KEY:
        return JSONResponse({"message": "Invalid API key"}, status_code=401)
    return JSONResponse({"status": "ok"})


async def escapes(request: Request) -> Response:
    return JSONResponse({"status": "\x1b[31m[bold]red[/bold]\x1b[0m"}, status_code=418)


async def throttled_once(request: Request) -> Response:
    name = "throttled:" + request.query_params.get("k", "")
    if COUNTERS.hit(name) == 1:
        return JSONResponse({"message": "slow down"}, status_code=429, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ok"})


def cors_headers(request: Request, mode: str) -> dict[str, str]:
    origin = request.headers.get("origin")
    if origin is None:
        return {}
    if mode == "wildcard":
        return {"Access-Control-Allow-Origin": "*"}
    if mode == "echo":
        return {"Access-Control-Allow-Origin": origin}
    if mode == "strict" and origin == "https://app.example":
        return {"Access-Control-Allow-Origin": origin}
    if mode == "get-wildcard" and request.method == "GET":
        return {"Access-Control-Allow-Origin": "*"}
    return {}


def cors_endpoint(mode: str):  # noqa: ANN201
    async def endpoint(request: Request) -> Response:
        headers = cors_headers(request, mode)
        if request.method == "OPTIONS":
            return Response(status_code=204 if headers else 403, headers=headers)
        return JSONResponse({"ok": True}, headers=headers)

    return endpoint


def limited(limit: int):  # noqa: ANN201
    async def endpoint(request: Request) -> Response:
        if request.headers.get("apikey") != API_KEY:
            return JSONResponse({"message": "Invalid API key"}, status_code=401)
        n = COUNTERS.hit(f"limited:{limit}:{request.query_params.get('k', '')}")
        if n > limit:
            return JSONResponse({"message": "rate limit"}, status_code=429, headers={"Retry-After": "7"})
        return JSONResponse({"n": n})

    return endpoint


def app() -> Starlette:
    routes = [
        Route("/ok", ok, methods=["GET", "POST"]),
        Route("/degraded", degraded),
        Route("/slow", slow),
        Route("/500", boom, methods=["GET", "POST"]),
        Route("/500-echo", boom_echoing_the_key),
        Route("/503-failing", provider_failing),
        Route("/502-list", gateway_json_list),
        Route("/404", missing),
        Route("/badjson", bad_json),
        Route("/list", a_list),
        Route("/redirect", redirect),
        Route("/echo-secret", echo_secret),
        Route("/needs-key", needs_key),
        Route("/escapes", escapes),
        Route("/throttled-once", throttled_once),
        Route("/limited-5", limited(5), methods=["GET"]),
        Route("/limited-1000", limited(1000), methods=["GET"]),
        Route("/crash-mid-burst", limited(10**6), methods=["GET"]),
    ]
    for mode in ("wildcard", "echo", "strict", "get-wildcard"):
        routes.append(Route(f"/cors/{mode}", cors_endpoint(mode), methods=["GET", "OPTIONS"]))
    return Starlette(routes=routes)


@pytest.fixture(scope="module")
async def base_url() -> AsyncIterator[str]:
    async with serve(app()) as url:
        yield url


async def check(loaded: LoadedConfig, item_id: str | None = None):  # noqa: ANN201
    async with ProbeContext(loaded) as ctx:
        _, item = loaded.runbook.items()[0] if item_id is None else next(p for p in loaded.runbook.items() if p[1].id == item_id)
        return await run_probe(item, ctx)


def http_item(path: str, **extra: Any) -> dict[str, Any]:
    return {"id": "h", "title": "HTTP", "kind": "http", "url": "{urls.api}" + path, **extra}


async def http(base_url: str, path: str, **extra: Any):  # noqa: ANN201
    return await check(make_loaded([http_item(path, **extra)], urls={"api": base_url}, secrets={"api_key": API_KEY}))


# -- HTTP ----------------------------------------------------------------------------------


async def test_pass_names_status_latency_and_matched_fields(base_url: str) -> None:
    result = await http(base_url, "/ok", expect_json={"status": "ok", "rotation_capable": True}, max_latency_ms=1000)
    assert result.status == "pass", result
    assert result.evidence.startswith("200 in ") and " ms" in result.evidence
    assert "status=ok" in result.evidence and "rotation_capable=true" in result.evidence
    assert result.measured["http_status"] == 200 and result.duration_ms > 0


async def test_connection_refused_is_an_error(base_url: str) -> None:
    result = await check(make_loaded([http_item("/ok")], urls={"api": f"http://127.0.0.1:{closed_port()}"}))
    assert result.status == "error"
    assert "cannot connect" in result.evidence


async def test_timeout_is_an_error(base_url: str) -> None:
    result = await http(base_url, "/slow?ms=3000", timeout_s=0.3)
    assert result.status == "error"
    assert "timeout" in result.evidence
    assert result.duration_ms < 2000


async def test_500_is_an_error_with_the_body(base_url: str) -> None:
    result = await http(base_url, "/500")
    assert result.status == "error"
    assert "500" in result.evidence and "database exploded" in result.evidence


async def test_a_secret_straddling_the_snippet_cut_is_redacted(base_url: str) -> None:
    result = await http(base_url, "/500-echo", secret_headers={"apikey": "api_key"})
    assert result.status == "error" and "server error 500" in result.evidence
    assert "apikey=[redacted" in result.evidence
    assert API_KEY[:8] not in result.evidence  # not even the part before the cut


async def test_a_5xx_whose_json_says_failing_is_a_measured_failure(base_url: str) -> None:
    result = await http(base_url, "/503-failing", expect_json={"status": "ok"}, warn_json={"status": "degraded"})
    assert result.status == "fail", result.evidence
    assert result.evidence.startswith("503 in ") and result.evidence.endswith("(expected 200): status=failing")
    assert result.measured["http_status"] == 503
    bare = await http(base_url, "/503-failing")  # no fields to judge: the body is shown
    assert bare.status == "fail" and '"status":"failing"' in bare.evidence


async def test_a_5xx_without_a_json_object_could_not_be_verified(base_url: str) -> None:
    listed = await http(base_url, "/502-list", expect_json={"status": "ok"})
    assert listed.status == "error" and listed.evidence.startswith("server error 502 in ")
    plain = await http(base_url, "/500", expect_json={"status": "ok"})
    assert plain.status == "error" and "database exploded" in plain.evidence


async def test_wrong_status_fails(base_url: str) -> None:
    result = await http(base_url, "/404")
    assert result.status == "fail"
    assert result.evidence.startswith("404 in ") and "expected 200" in result.evidence and "no such thing" in result.evidence


async def test_redirect_is_not_followed(base_url: str) -> None:
    result = await http(base_url, "/redirect")
    assert result.status == "fail"
    assert "307" in result.evidence


async def test_slow_answer_just_over_the_limit_fails(base_url: str) -> None:
    result = await http(base_url, "/slow?ms=250", max_latency_ms=200)
    assert result.status == "fail"
    assert "slower than 200 ms" in result.evidence
    fast = await http(base_url, "/slow?ms=0", max_latency_ms=200)
    assert fast.status == "pass"


async def test_slow_answer_over_the_warn_limit_warns(base_url: str) -> None:
    result = await http(base_url, "/slow?ms=150", max_latency_ms=2000, warn_latency_ms=100)
    assert result.status == "warn"
    assert "slower than 100 ms" in result.evidence


async def test_malformed_json_is_an_error(base_url: str) -> None:
    result = await http(base_url, "/badjson", expect_json={"status": "ok"})
    assert result.status == "error"
    assert "malformed JSON" in result.evidence


async def test_json_that_is_not_an_object_is_an_error(base_url: str) -> None:
    result = await http(base_url, "/list", expect_json={"status": "ok"})
    assert result.status == "error" and "JSON object" in result.evidence


async def test_json_mismatch_fails(base_url: str) -> None:
    result = await http(base_url, "/ok", expect_json={"status": "healthy", "version": 3})
    assert result.status == "fail"
    assert "status=ok (expected healthy)" in result.evidence and "version missing" in result.evidence


async def test_warn_json_wins_over_expect_json_for_the_same_field(base_url: str) -> None:
    result = await http(base_url, "/degraded", expect_json={"status": "ok"}, warn_json={"status": "degraded"})
    assert result.status == "warn"
    assert "status=degraded" in result.evidence


async def test_secret_header_is_sent_and_never_shown(base_url: str) -> None:
    ok_result = await http(base_url, "/needs-key", secret_headers={"apikey": "api_key"})
    assert ok_result.status == "pass"
    leaked = await http(base_url, "/echo-secret", secret_headers={"apikey": "api_key"})
    assert leaked.status == "fail"
    assert API_KEY not in leaked.evidence and "[redacted]" in leaked.evidence


async def test_missing_secret_is_an_error_naming_the_variable(base_url: str) -> None:
    loaded = make_loaded([http_item("/ok", secret_headers={"apikey": "other_key"})], urls={"api": base_url}, secrets={"other_key": ""})
    result = await check(loaded)
    assert result.status == "error"
    assert "TEST_OTHER_KEY" in result.evidence


async def test_body_text_cannot_inject_escapes(base_url: str) -> None:
    result = await http(base_url, "/escapes")
    assert result.status == "fail"
    assert "\x1b" not in result.evidence
    assert "[bold]red[/bold]" in result.evidence  # kept as text; the renderer never parses it


async def test_a_short_retry_after_is_waited_out_once(base_url: str) -> None:
    result = await http(base_url, "/throttled-once?k=a", max_latency_ms=500)
    assert result.status == "pass", result.evidence
    assert "after a 429" in result.evidence


# -- CORS ----------------------------------------------------------------------------------


def cors_item(path: str, **extra: Any) -> dict[str, Any]:
    return {"id": "c", "title": "CORS", "kind": "cors", "url": "{urls.api}" + path, **extra}


async def cors(base_url: str, path: str, **extra: Any):  # noqa: ANN201
    return await check(make_loaded([cors_item(path, **extra)], urls={"api": base_url}))


async def test_cors_strict_passes(base_url: str) -> None:
    result = await cors(base_url, "/cors/strict", allowed_origin="https://app.example")
    assert result.status == "pass", result.evidence
    assert "refused (403" in result.evidence and "https://app.example allowed" in result.evidence


async def test_cors_wildcard_fails(base_url: str) -> None:
    result = await cors(base_url, "/cors/wildcard")
    assert result.status == "fail"
    assert "Access-Control-Allow-Origin: *" in result.evidence


async def test_cors_echoing_any_origin_fails(base_url: str) -> None:
    result = await cors(base_url, "/cors/echo")
    assert result.status == "fail"
    assert "https://attacker.invalid" in result.evidence


async def test_cors_wildcard_on_plain_get_fails(base_url: str) -> None:
    result = await cors(base_url, "/cors/get-wildcard")
    assert result.status == "fail"
    assert "GET with Origin" in result.evidence


async def test_cors_refusing_our_own_origin_warns(base_url: str) -> None:
    result = await cors(base_url, "/cors/strict", allowed_origin="https://other.example")
    assert result.status == "warn"


async def test_cors_connection_refused_is_an_error() -> None:
    result = await check(make_loaded([cors_item("/")], urls={"api": f"http://127.0.0.1:{closed_port()}"}))
    assert result.status == "error" and "cannot connect" in result.evidence


# -- rate limits ---------------------------------------------------------------------------


def burst_item(path: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "r",
        "title": "Rate limits",
        "kind": "rate_limit",
        "url": "{urls.api}" + path,
        "secret_headers": {"apikey": "api_key"},
        **extra,
    }


async def burst(base_url: str, path: str, *, production: bool = False, **extra: Any):  # noqa: ANN201
    loaded = make_loaded([burst_item(path, **extra)], urls={"api": base_url}, secrets={"api_key": API_KEY}, production=production)
    return await check(loaded)


async def test_rate_limit_passes_when_429_comes_before_the_end(base_url: str) -> None:
    result = await burst(base_url, "/limited-5?k=pass", burst=20)
    assert result.status == "pass"
    assert result.evidence.startswith("429 after 6 requests, Retry-After 7 s")
    assert result.measured["requests"] == 6


async def test_rate_limit_fails_without_a_429(base_url: str) -> None:
    result = await burst(base_url, "/limited-1000?k=none", burst=10)
    assert result.status == "fail"
    assert "no 429 in 10 requests" in result.evidence


async def test_rate_limit_429_only_at_the_last_request_fails(base_url: str) -> None:
    result = await burst(base_url, "/limited-5?k=last", burst=6)
    assert result.status == "fail" and "only at the last" in result.evidence


async def test_rate_limit_refuses_production(base_url: str) -> None:
    result = await burst(base_url, "/limited-5?k=prod", production=True, burst=20)
    assert result.status == "skipped"
    assert "production" in result.evidence and "--attest r" in result.evidence
    assert "limited:5:prod" not in COUNTERS.hits  # not a single request was sent
    allowed = await burst(base_url, "/limited-5?k=prod2", production=True, burst=20, allow_in_production=True)
    assert allowed.status == "pass"


async def test_rate_limit_server_errors_and_refusals_are_errors(base_url: str) -> None:
    assert (await burst(base_url, "/500", burst=5)).status == "error"
    wrong_key = make_loaded([burst_item("/limited-5?k=key")], urls={"api": base_url}, secrets={"api_key": "wrong-key-123"})
    result = await check(wrong_key)
    assert result.status == "error" and "401 on request 1" in result.evidence
    refused = await check(make_loaded([burst_item("/")], urls={"api": f"http://127.0.0.1:{closed_port()}"}, secrets={"api_key": API_KEY}))
    assert refused.status == "error"


async def test_rate_limit_burst_is_bounded_by_the_timeout(base_url: str) -> None:
    result = await burst(base_url, "/slow?ms=100", burst=100, timeout_s=0.5)
    assert result.status == "error"
    assert result.duration_ms < 2500


class HungApi:
    """An API that accepts connections and never answers."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.release = asyncio.Event()

    async def hang(self, request: Request) -> Response:
        self.hits[request.url.path] = self.hits.get(request.url.path, 0) + 1
        await self.release.wait()
        return JSONResponse({"status": "late"})


async def test_a_burst_at_an_api_that_did_not_answer_is_not_sent() -> None:
    api = HungApi()
    app = Starlette(routes=[Route("/health", api.hang), Route("/rest", api.hang)])
    async with serve(app) as url:
        loaded = make_loaded(
            # The burst shares the health probe's key: it waits for the first pass.
            [http_item("/health", timeout_s=1, secret_headers={"apikey": "api_key"}), burst_item("/rest", burst=5, timeout_s=1)],
            urls={"api": url},
            secrets={"api_key": API_KEY},
        )
        began = time.monotonic()
        try:
            report = await run_checklist(loaded)
        finally:
            api.release.set()
        elapsed = time.monotonic() - began
    results = report.results
    assert results["h"].status == "error" and "timeout" in results["h"].evidence
    assert results["r"].status == "error"
    assert results["r"].evidence == f"skipped: {url} did not answer in the first pass (h); the burst was not sent"
    assert api.hits == {"/health": 1}  # not one request of the burst was sent
    assert elapsed < 1.8, f"the check took {elapsed:.2f} s: the hung API cost two timeouts"


@pytest.mark.parametrize(("http_key", "burst_key", "alongside"), [
    (None, "api_key", True),            # the burst's key is its own: it runs with the others
    ("api_key", "api_key", False),      # shared with another probe: it waits for the first pass
    (None, None, False),                # no key: counted by address with everyone else
])
async def test_a_burst_with_an_identity_of_its_own_runs_alongside_the_others(
    base_url: str, http_key: str | None, burst_key: str | None, alongside: bool
) -> None:
    slow_item = http_item("/slow?ms=400", **({"auth": {"apikey": http_key}} if http_key else {}))
    burst = burst_item(f"/limited-5?k=alongside-{alongside}-{http_key}", burst=20, secret_headers={})
    if burst_key:
        burst["auth"] = {"apikey": burst_key}
    loaded = make_loaded([slow_item, burst], urls={"api": base_url}, secrets={"api_key": API_KEY})
    report = await run_checklist(loaded)
    h, r = report.results["h"], report.results["r"]
    assert h.status == "pass" and r.status == ("pass" if burst_key else "error"), (h.evidence, r.evidence)  # no key: 401
    h_done = h.started_at.timestamp() + h.duration_ms / 1000
    assert (r.started_at.timestamp() < h_done - 0.2) is alongside


async def test_a_burst_still_runs_when_another_origin_did_not_answer(base_url: str) -> None:
    loaded = make_loaded(
        [
            {**http_item("/ok"), "url": f"http://127.0.0.1:{closed_port()}/ok"},
            burst_item("/limited-5?k=other-origin", burst=20),
        ],
        urls={"api": base_url},
        secrets={"api_key": API_KEY},
    )
    report = await run_checklist(loaded)
    assert report.results["h"].status == "error"
    assert report.results["r"].status == "pass", report.results["r"].evidence


async def test_a_trickling_burst_is_bounded_by_its_timeout() -> None:
    """httpx's timeout bounds each read, not a request: a server that trickles its answer
    would outlast it. The burst as a whole ends at timeout_s."""

    async def trickle(scope, receive, send) -> None:  # noqa: ANN001 - a raw ASGI app
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(100):
            await send({"type": "http.response.body", "body": b".", "more_body": True})
            await asyncio.sleep(0.1)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with serve(trickle) as url:  # type: ignore[arg-type]
        loaded = make_loaded([burst_item("/", burst=5, timeout_s=0.5)], urls={"api": url}, secrets={"api_key": API_KEY})
        began = time.monotonic()
        async with ProbeContext(loaded) as ctx:
            result = await run_probe(loaded.runbook.items()[0][1], ctx)
        elapsed = time.monotonic() - began
    assert result.status == "error" and "burst unfinished" in result.evidence, result.evidence
    assert elapsed < 1.5, f"the burst ran {elapsed:.2f} s with timeout_s = 0.5"


async def test_results_serialise_to_json(base_url: str) -> None:
    result = await http(base_url, "/ok")
    data = json.loads(json.dumps(result.to_json()))
    assert data["id"] == "h" and data["status"] == "pass" and data["duration_ms"] >= 0


async def test_each_result_is_heard_as_it_lands_before_the_slowest_probe_answers() -> None:
    """The control room shows a check's row as soon as its probe answers: `on_result` hears
    the quick item while the slow one still waits (released only after), and the report is
    the same as without it."""
    api = HungApi()
    heard: list[tuple[str, str, bool]] = []  # (item, status, had the slow one been released)

    def on_result(result: Any) -> None:
        heard.append((result.item_id, result.status, api.release.is_set()))
        if result.item_id == "quick":
            api.release.set()  # the slow probe answers only once the quick one was heard

    app = Starlette(routes=[Route("/ok", ok), Route("/slow", api.hang)])
    async with serve(app) as url:
        loaded = make_loaded(
            [{**http_item("/slow", timeout_s=10), "id": "slow"}, {**http_item("/ok", timeout_s=10), "id": "quick"}],
            urls={"api": url},
        )
        try:
            report = await run_checklist(loaded, on_result=on_result)
        finally:
            api.release.set()
    assert heard == [("quick", "pass", False), ("slow", "pass", True)]
    assert [check.item.id for check in report.checks] == ["slow", "quick"]
    assert {k: r.status for k, r in report.results.items()} == {"slow": "pass", "quick": "pass"}
