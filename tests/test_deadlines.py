"""A probe's timeout_s is a deadline for the whole of it — connect, headers and body, a
database's session and its query — against real sockets that misbehave: a server that
accepts and never answers, one that drips its body a byte at a time, a database port that
never speaks. Each probe ends within its timeout (+ 100 ms) and says what did not arrive."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controlroom.checks.base import ProbeContext, run_probe
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
