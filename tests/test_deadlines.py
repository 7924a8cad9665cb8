"""A probe's timeout_s is a deadline for the whole of it — connect, headers and body, a
database's session and its query — against real sockets that misbehave: a server that
accepts and never answers, one that drips its body a byte at a time, a database port that
never speaks. Each probe ends within its timeout (+ 100 ms) and says what did not arrive."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controlroom.checks.base import ProbeContext, run_probe
from controlroom.config.models import BreakersView, Kpi, Views
from controlroom.live.polling import Poller
from controlroom.live.sources import Feeds
from probe_support import make_loaded

TIMEOUT_S = 1.0
SLACK_S = 0.1


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Listens (the kernel completes every handshake) and never accepts or answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.fixture
def dripping_url() -> Iterator[str]:
    """Answers the headers at once, then the body one byte every 0.2 s (100 bytes)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
                             b"Access-Control-Allow-Origin: https://app.example\r\n\r\n")
                for _ in range(100):
                    if stop.wait(0.2):
                        return
                    conn.sendall(b" ")
            except OSError:
                return

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


async def timed(item: dict[str, Any], **loaded: Any) -> tuple[Any, float]:
    config = make_loaded([{"timeout_s": TIMEOUT_S, **item}], **loaded)
    async with ProbeContext(config) as ctx:
        began = time.perf_counter()
        result = await run_probe(config.runbook.items()[0][1], ctx)
        return result, time.perf_counter() - began


async def test_http_against_a_server_that_never_answers(silent_port: int) -> None:
    result, took = await timed({"id": "h", "title": "HTTP", "kind": "http", "url": "{urls.api}/health"},
                               urls={"api": f"http://127.0.0.1:{silent_port}"})
    print(f"\nhttp, silent server: {took:.3f} s for timeout_s={TIMEOUT_S}")
    assert result.status == "error" and took <= TIMEOUT_S + SLACK_S, (took, result.evidence)
    assert "response headers" in result.evidence


async def test_http_against_a_body_that_drips(dripping_url: str) -> None:
    result, took = await timed({"id": "h", "title": "HTTP", "kind": "http", "url": "{urls.api}/health"},
                               urls={"api": dripping_url})
    print(f"\nhttp, dripping body: {took:.3f} s for timeout_s={TIMEOUT_S}")
    assert result.status == "error" and took <= TIMEOUT_S + SLACK_S, (took, result.evidence)
    assert "the body (headers came: 200)" in result.evidence


@pytest.mark.parametrize("kind", ["prometheus", "alert_rules"])
async def test_prometheus_items_against_a_silent_server_and_a_dripping_body(kind: str, silent_port: int, dripping_url: str) -> None:
    item = {"id": "p", "title": "Prometheus", "kind": kind, "url": "{urls.prom}"}
    item.update({"query": "up", "pass_when": {"op": ">", "value": 0}} if kind == "prometheus" else {"rules": ["Up"]})
    for url, waiting_for in ((f"http://127.0.0.1:{silent_port}", "response headers"),
                             (dripping_url, "the body (headers came: 200)")):
        result, took = await timed(item, urls={"prom": url})
        print(f"\n{kind}, {waiting_for}: {took:.3f} s for timeout_s={TIMEOUT_S}")
        assert result.status == "error" and took <= TIMEOUT_S + SLACK_S, (took, result.evidence)
        assert waiting_for in result.evidence


async def test_cors_with_three_requests_shares_one_deadline(dripping_url: str) -> None:
    result, took = await timed({"id": "c", "title": "CORS", "kind": "cors", "url": "{urls.api}/rest",
                                "allowed_origin": "https://app.example"}, urls={"api": dripping_url})
    print(f"\ncors, dripping body: {took:.3f} s for timeout_s={TIMEOUT_S}")
    assert result.status == "error" and took <= TIMEOUT_S + SLACK_S, (took, result.evidence)


async def test_sql_against_a_database_port_that_never_speaks(silent_port: int) -> None:
    result, took = await timed({"id": "q", "title": "Query", "kind": "sql", "query": "SELECT 1"},
                               secrets={"database_dsn": f"postgresql://probe:pw-secret-7@127.0.0.1:{silent_port}/main"})
    print(f"\nsql, silent database: {took:.3f} s for timeout_s={TIMEOUT_S}")
    assert result.status == "error" and took <= TIMEOUT_S + SLACK_S, (took, result.evidence)
    assert "connecting timed out" in result.evidence and "pw-secret-7" not in result.evidence


async def timed_source(fetch: Any, timeout_s: float = TIMEOUT_S) -> tuple[Any, float]:
    poller = Poller("source", fetch, interval_s=5, timeout_s=timeout_s)
    began = time.perf_counter()
    state = await poller.poll_once()
    return state, time.perf_counter() - began


async def test_live_sources_end_at_their_timeout(dripping_url: str, silent_port: int) -> None:
    """A KPI read from a Prometheus whose body drips and a view read from a database that
    never speaks: the panel's poll ends at its timeout and says so (the panel goes stale,
    the app goes on)."""
    kpi = {"id": "p95", "title": "p95", "window": "realtime", "unit": "ms", "timeout_s": TIMEOUT_S,
           "green": {"op": "<", "value": 500}, "red": {"op": ">", "value": 800},
           "source": {"kind": "prometheus", "url": "{urls.metrics}", "query": "p95"}}
    config = make_loaded([{"id": "m", "title": "M", "kind": "manual"}], urls={"metrics": dripping_url},
                         secrets={"database_dsn": f"postgresql://live:pw-secret-8@127.0.0.1:{silent_port}/main"})
    runbook = config.runbook.model_copy(update={
        "kpis": [Kpi.model_validate(kpi)],
        "views": Views(breakers=BreakersView(query="SELECT 1 AS location_id, 'closed' AS state", timeout_s=TIMEOUT_S)),
    })
    feeds = Feeds(dataclasses.replace(config, runbook=runbook))
    try:
        source = feeds.kpis["p95"]
        assert source is not None and feeds.breakers is not None
        for name, fetch in (("prometheus KPI, dripping body", source.fetch), ("breakers view, silent database", feeds.breakers.fetch)):
            state, took = await timed_source(fetch)
            print(f"\n{name}: {took:.3f} s for timeout_s={TIMEOUT_S}")
            assert state.value is None and took <= TIMEOUT_S + SLACK_S, (took, state.error)
            assert state.error == f"timed out after {TIMEOUT_S:g} s" and "pw-secret-8" not in state.error
    finally:
        await feeds.close()


async def test_a_rate_limit_burst_against_a_body_that_drips(dripping_url: str) -> None:
    result, took = await timed({"id": "r", "title": "Burst", "kind": "rate_limit", "url": "{urls.api}/rest", "burst": 20},
                               urls={"api": dripping_url})
    print(f"\nrate_limit, dripping body: {took:.3f} s for timeout_s={TIMEOUT_S}")
    assert result.status == "error" and took <= TIMEOUT_S + SLACK_S, (took, result.evidence)
