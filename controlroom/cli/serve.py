"""`controlroom serve`: the control room in a browser, for people who watch a release.

    serve(config_path, host="127.0.0.1", port=8000)   # `controlroom serve --config FILE`

textual-serve (aiohttp) serves a page with a terminal (xterm.js) and, for each browser that
connects to its websocket, runs one control room process whose screen goes to that browser
and whose keys come from it. Here:

- that process is always read-only, whatever the config says (`write_by_default` is cleared,
  the app is opened without --write): every decision is refused by the engine with its
  READ-ONLY message, as in a terminal;
- every request needs the random token printed at start (`?token=…` on the URL, compared in
  constant time); the page's answer sets it as a cookie (HttpOnly, SameSite=Strict, path /),
  which the page's websocket and static files carry. Anything else gets 401, the websocket
  too, and a websocket opened from another origin gets 403;
- the browser's process gets only the environment the read-only view needs
  (`watcher_environment`): the secrets the checklist's probes, the live views and the shared
  journal read, and none that only decisions use (deploy and rollback commands,
  notifications, paging);
- nothing this process prints carries a secret: no access log (its lines would carry the
  token), and the token only in the one URL printed at start.

With the shared journal store ([journal] store = "postgres") each browser joins the
environment's release as a watcher and follows the driver live.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import os
import re
import secrets
import shlex
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controlroom.config.loader import LoadedConfig, load_config
from controlroom.errors import ControlRoomError
from controlroom.infra.identity import HOST_VARIABLE

COOKIE = "controlroom_token"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
HOST_HEADER = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
SESSION_CLOSE_S = 15.0  # how long a browser's control room has to quit when serve stops
# The runbook's parts whose secrets only decisions use: a read-only view never runs a deploy
# or rollback command, never sends a notification and never pages.
DECISION_PARTS = ("deployment", "rollback", "escalation", "notifications")
# What else of the serving environment a browser's control room gets: where things are
# (home, data and journal directories, temp), the locale and time zone, how to reach the
# platform (proxies, CA files, Postgres TLS files), and controlroom's own settings.
PASSED = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
          "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
          "http_proxy", "https_proxy", "no_proxy", "all_proxy"}
PASSED_PREFIXES = ("LC_", "XDG_", "PGSSL", "CONTROLROOM_")


class ServeError(ControlRoomError):
    exit_code = 2


def _strings(value: Any) -> set[str]:
    """Every string in a model's dump (dict keys and values, list items)."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return {text for key, item in value.items() for text in (_strings(key) | _strings(item))}
    if isinstance(value, (list, tuple, set)):
        return {text for item in value for text in _strings(item)}
    return set()


def watcher_secrets(loaded: LoadedConfig) -> list[str]:
    """The logical secrets a read-only control room reads: those the runbook names outside its
    decisions (checklist, databases, KPIs, views, report) and the shared journal's DSN. A
    secret named only by the deploy and rollback commands, the notifications or the paging
    is left out."""
    runbook = loaded.runbook.model_dump()
    named = _strings({part: value for part, value in runbook.items() if part not in DECISION_PARTS})
    needed = {name for name in loaded.environment.secrets if name in named}
    if loaded.journal.shared:
        needed.add(loaded.journal_dsn_secret())
    return sorted(needed)


def watcher_environment(loaded: LoadedConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a browser's control room: the harmless part of `environ` (PASSED),
    and the secrets of watcher_secrets() that are set (from the environment or the config's
    env_file), under their variable names. No other variable that names a secret."""
    secret_variables = set(loaded.environment.secrets.values())
    env = {name: value for name, value in environ.items()
           if (name in PASSED or name.startswith(PASSED_PREFIXES)) and name not in secret_variables}
    for logical in watcher_secrets(loaded):
        if loaded.secrets.has(logical):
            env[loaded.secrets.variable(logical)] = loaded.secrets.get(logical)
    # Other control rooms of the release see the browser's as user@<host>-browser.
    host = env.get(HOST_VARIABLE, "").strip() or socket.gethostname().split(".")[0]
    env[HOST_VARIABLE] = f"{host[:56]}-browser"
    return env


def read_only(loaded: LoadedConfig) -> LoadedConfig:
    """The config with `write_by_default` cleared: the control room opens read-only."""
    return replace(loaded, environment=loaded.environment.model_copy(update={"write_by_default": False}))


def session_command(config_path: Path) -> str:
    """The shell command textual-serve runs for each browser: this module, read-only."""
    return f"exec {shlex.quote(sys.executable)} -m controlroom.cli.serve {shlex.quote(str(config_path.resolve()))}"


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def make_server(command: str, token: str, title: str) -> Any:
    """A textual-serve Server behind the token, whose page connects back to the host it was
    loaded from (an SSH tunnel's local port need not be the served one)."""
    import aiohttp_jinja2
    from aiohttp import web
    from textual_serve.server import Server

    @web.middleware
    async def require_token(request: web.Request, handler: Any) -> web.StreamResponse:
        by_query = token_matches(request.query.get("token"), token)
        if not (by_query or token_matches(request.cookies.get(COOKIE), token)):
            return web.Response(status=401, text="401 Unauthorized: open the URL that `controlroom serve` printed, "
                                                 "with its token\n")
        if not HOST_HEADER.fullmatch(request.host):  # it goes into the page (the websocket's URL)
            return web.Response(status=400, text="400 Bad Request: a malformed Host header\n")
        origin = request.headers.get("Origin")
        if request.path == "/ws" and origin is not None and urlsplit(origin).netloc != request.host:
            return web.Response(status=403, text="403 Forbidden: the websocket is for the served page only\n")
        response = await handler(request)
        if not response.prepared:  # a websocket's answer has gone already
            response.headers["Cache-Control"] = "no-store"
            response.headers["Referrer-Policy"] = "no-referrer"  # the page's URL carries the token
            if by_query:
                response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    class WatchServer(Server):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.sessions: set[asyncio.Task[Any]] = set()  # the websockets' handlers: one per browser

        async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
            task = asyncio.current_task()
            assert task is not None
            self.sessions.add(task)
            try:
                return await super().handle_websocket(request)
            finally:
                self.sessions.discard(task)

        async def close_sessions(self) -> None:
            """End every browser's session as textual-serve does on a cancel: its websocket
            closed, its control room told to quit and waited for (at most SESSION_CLOSE_S)."""
            for task in self.sessions:
                task.cancel()
            if self.sessions:
                await asyncio.wait(set(self.sessions), timeout=SESSION_CLOSE_S)

        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            app.middlewares.append(require_token)
            return app

        async def on_startup(self, app: web.Application) -> None:
            """Quiet: `serve` prints the URL itself."""

        @aiohttp_jinja2.template("app_index.html")
        async def handle_index(self, request: web.Request) -> dict[str, Any]:
            font_size = request.query.get("fontsize", "16")
            base = f"{request.scheme}://{request.host}"
            return {
                "font_size": int(font_size) if font_size.isdigit() else 16,
                "app_websocket_url": f"{'wss' if request.scheme == 'https' else 'ws'}://{request.host}/ws",
                "config": {"static": {"url": f"{base}/static/"}},
                "application": {"name": self.title},
            }

    return WatchServer(command, title=title)


async def _serve(server: Any, host: str, port: int, token: str, stop: asyncio.Event) -> None:
    from aiohttp import web

    runner = web.AppRunner(await server._make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ServeError(f"port {port} on {host} is in use: give another with --port") from None
            raise ServeError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        print(f"controlroom serve: the control room, read-only, for browsers on {host}:{bound}", flush=True)
        print(f"open: http://{shown}:{bound}/?token={token}", flush=True)
        print("Ctrl-C stops it (and the browsers' control rooms).", flush=True)
        await stop.wait()
        await server.close_sessions()
    finally:
        await runner.cleanup()


def serve(config_path: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the control room on `config_path` to browsers, read-only, until Ctrl-C or SIGTERM."""
    loaded = load_config(config_path)  # a bad config: one line (ConfigError), before anything listens
    for warning in loaded.pooler_warnings():
        print(f"controlroom: warning: {warning}", file=sys.stderr, flush=True)
    environment = watcher_environment(loaded, os.environ)
    # textual-serve gives each browser's process a copy of this process's environment: this
    # process keeps only that (it needs no secret itself).
    os.environ.clear()
    os.environ.update(environment)
    token = secrets.token_urlsafe(32)
    server = make_server(session_command(config_path), token,
                         title=f"controlroom: {loaded.environment.name} (read-only)")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)
        await _serve(server, host, port, token, stop)

    asyncio.run(main())


def _browser_session(config_path: str) -> None:
    """One browser's control room (run by textual-serve, see session_command): read-only, its
    secrets from the environment `serve` gave it, never from the config's env_file."""
    from controlroom.cli.tui import run_read_only

    try:
        loaded = read_only(load_config(config_path, env_file=False))
    except ControlRoomError as error:
        print(f"controlroom: error: {error}", file=sys.stderr, flush=True)
        sys.exit(error.exit_code)
    run_read_only(loaded)


if __name__ == "__main__":
    _browser_session(sys.argv[1])
