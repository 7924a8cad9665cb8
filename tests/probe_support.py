"""Helpers for the probe tests: a LoadedConfig built from a few items, and small real HTTP
servers (Starlette served by uvicorn on 127.0.0.1, in this process's event loop)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from controlroom.config.loader import LoadedConfig
from controlroom.config.models import Environment, Runbook
from controlroom.config.secrets import SecretStore

MINIMAL = {
    "deployment": {"phases": [{"id": "p", "title": "P", "minutes": 5, "steps": [{"id": "s", "title": "S", "action": {"kind": "manual"}}]}]},
    "rollback": {"plans": [{"id": "r", "title": "R", "target_minutes": 5, "steps": [{"id": "rs", "title": "RS", "action": {"kind": "manual"}}]}]},
    "escalation": {"levels": [{"level": 1, "title": "L1", "from_minutes": 0, "contacts": ["someone"]}]},
}


def make_runbook(sections: list[dict[str, Any]], *, databases: dict[str, str] | None = None, health_min: float = 95.0) -> Runbook:
    data = {
        "name": "test runbook",
        "databases": {"main": "database_dsn"} if databases is None else databases,
        "checklist": {"sections": sections},
        "verdict": {"health_min_percent": health_min},
        **MINIMAL,
    }
    return Runbook.model_validate(data)


def make_loaded(
    items: list[dict[str, Any]] | None = None,
    *,
    sections: list[dict[str, Any]] | None = None,
    urls: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    production: bool = False,
    config_dir: Path | None = None,
) -> LoadedConfig:
    """A LoadedConfig for these items (one section) or sections; secrets are given by value
    and exported under TEST_<NAME> variables (in the SecretStore only, not os.environ)."""
    if sections is None:
        sections = [{"id": "s", "title": "Section", "items": items or []}]
    secrets = dict(secrets or {})
    secrets.setdefault("database_dsn", "postgresql://nobody:unset-password@127.0.0.1:1/none")
    names = {logical: "TEST_" + logical.upper() for logical in secrets}
    environ = {names[logical]: value for logical, value in secrets.items()}
    environment = Environment(name="test env", production=production, urls=urls or {}, secrets=names)
    store = SecretStore(names, environ, {})
    config_path = (config_dir or Path.cwd()) / "controlroom.toml"
    return LoadedConfig(config_path, "test", environment, make_runbook(sections), store)


def closed_port() -> int:
    """A port nobody listens on (bound, then released): connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1:<free port> until the block ends; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "test server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True
        try:
            await asyncio.wait_for(task, timeout=5)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            task.cancel()
        sock.close()
