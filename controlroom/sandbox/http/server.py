"""The sandbox's HTTP server in its own process: uvicorn serving `http_app.create_app`.

The parent binds 127.0.0.1:0 itself and hands the listening socket's descriptor to the
child, so the port is known before the child starts and nobody can take it in between.
Secrets (DSN, keys, tokens) travel in environment variables, never in argv, which any
local user can read with `ps`. The child watches its parent and exits when it is gone,
so a crashed control room leaves no server behind.

    python -m controlroom.sandbox.http.server [--fd N | --port P]   # settings from env
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

import httpx

from controlroom.errors import ControlRoomError
from controlroom.infra import shutdown

if TYPE_CHECKING:
    import uvicorn

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
ENV_PREFIX = "CONTROLROOM_HTTP_"
PARENT_PID_ENV = ENV_PREFIX + "PARENT_PID"
# The one page of the sandbox's Statuspage (statuspage.py), as Statuspage's ids look.
STATUSPAGE_PAGE_ID = "sbxpage0cr01"


class HttpServerStartError(ControlRoomError):
    """The server did not answer /healthz in time; the message carries its stderr tail."""


def _random_secret() -> str:
    return secrets.token_urlsafe(24)


JWT_ISSUER = "supabase"  # as the platform's own API keys say
API_KEY_LIFETIME_S = 10 * 365 * 24 * 3600  # the platform's anon and service_role keys last years


def sign_jwt(secret: str, role: str, *, lifetime_s: float = API_KEY_LIFETIME_S, **claims: object) -> str:
    """An HS256 JWT as the platform issues them: role, iss, iat, exp (and any extra claims)."""
    import jwt  # PyJWT

    now = int(time.time())
    payload = {"iss": JWT_ISSUER, "role": role, "iat": now, "exp": now + int(lifetime_s), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def _publishable() -> str:
    return "sb_publishable_" + secrets.token_urlsafe(18)


def _secret_key() -> str:
    return "sb_secret_" + secrets.token_urlsafe(18)


def _chars(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _slack_bot_token() -> str:
    """Shaped as Slack's bot tokens: xoxb-<team number>-<bot number>-<24 characters>."""
    digits = string.digits
    return f"xoxb-{_chars(digits, 12)}-{_chars(digits, 13)}-{_chars(string.ascii_letters + digits, 24)}"


def _statuspage_api_key() -> str:
    return secrets.token_hex(32)


@dataclass(frozen=True)
class HttpSettings:
    """What the sandbox server needs. Secrets are left out of repr()."""

    dsn: str = field(repr=False)
    scenario: str = "healthy"
    # The project's JWT secret: anon and service_role keys and location tokens are signed with
    # it, and the functions' gateway verifies with it.
    jwt_secret: str = field(default_factory=_random_secret, repr=False)
    # Legacy API keys: JWTs (role anon / service_role), usable in `apikey` and as the bearer.
    # Empty: signed with jwt_secret.
    anon_key: str = field(default="", repr=False)
    service_key: str = field(default="", repr=False)
    # The new API keys: not JWTs, for the `apikey` header only (publishable = anon's rights,
    # secret = service_role's). The burst key is a second publishable key, so a rate-limit
    # burst has a client identity of its own and cannot use up anyone else's limit.
    publishable_key: str = field(default_factory=_publishable, repr=False)
    secret_key: str = field(default_factory=_secret_key, repr=False)
    burst_key: str = field(default_factory=_publishable, repr=False)
    # The key of PagerDuty's REST API (GET /oncalls): `Authorization: Token token=<key>`.
    pagerduty_api_token: str = field(default_factory=lambda: secrets.token_urlsafe(15), repr=False)
    admin_token: str = field(default_factory=_random_secret, repr=False)
    pagerduty_routing_key: str = field(default_factory=_random_secret, repr=False)
    # Slack's Web API (chat.postMessage) takes this bot token; Statuspage's API this key.
    slack_bot_token: str = field(default_factory=_slack_bot_token, repr=False)
    statuspage_api_key: str = field(default_factory=_statuspage_api_key, repr=False)
    allowed_origins: tuple[str, ...] = ("https://app.posplatform.example",)
    cors_allow_any: bool = False  # the wildcard misconfiguration, for probes to catch
    rate_limit: int = 60
    rate_window_s: float = 1.0
    # How long after the deploy_finished change event a scenario's fail_during_watch providers
    # fail; None: the scenario's own watch_failure_delay_s. Tests shorten it.
    watch_failure_delay_s: float | None = None

    def __post_init__(self) -> None:
        if not self.anon_key:
            object.__setattr__(self, "anon_key", sign_jwt(self.jwt_secret, "anon"))
        if not self.service_key:
            object.__setattr__(self, "service_key", sign_jwt(self.jwt_secret, "service_role"))

    def secret_values(self) -> tuple[str, ...]:
        return (self.dsn, self.jwt_secret, self.anon_key, self.service_key, self.publishable_key, self.secret_key,
                self.burst_key, self.pagerduty_api_token, self.admin_token, self.pagerduty_routing_key,
                self.slack_bot_token, self.statuspage_api_key)

    def to_env(self) -> dict[str, str]:
        return {
            ENV_PREFIX + "DSN": self.dsn,
            ENV_PREFIX + "SCENARIO": self.scenario,
            ENV_PREFIX + "JWT_SECRET": self.jwt_secret,
            ENV_PREFIX + "ANON_KEY": self.anon_key,
            ENV_PREFIX + "SERVICE_KEY": self.service_key,
            ENV_PREFIX + "PUBLISHABLE_KEY": self.publishable_key,
            ENV_PREFIX + "SECRET_KEY": self.secret_key,
            ENV_PREFIX + "BURST_KEY": self.burst_key,
            ENV_PREFIX + "PAGERDUTY_API_TOKEN": self.pagerduty_api_token,
            ENV_PREFIX + "ADMIN_TOKEN": self.admin_token,
            ENV_PREFIX + "PAGERDUTY_ROUTING_KEY": self.pagerduty_routing_key,
            ENV_PREFIX + "SLACK_BOT_TOKEN": self.slack_bot_token,
            ENV_PREFIX + "STATUSPAGE_API_KEY": self.statuspage_api_key,
            ENV_PREFIX + "ALLOWED_ORIGINS": ",".join(self.allowed_origins),
            ENV_PREFIX + "CORS_ALLOW_ANY": "1" if self.cors_allow_any else "0",
            ENV_PREFIX + "RATE_LIMIT": str(self.rate_limit),
            ENV_PREFIX + "RATE_WINDOW_S": repr(self.rate_window_s),
            ENV_PREFIX + "WATCH_FAILURE_DELAY_S": "" if self.watch_failure_delay_s is None else repr(self.watch_failure_delay_s),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> HttpSettings:
        def get(name: str) -> str | None:
            return environ.get(ENV_PREFIX + name)

        if not get("DSN"):
            raise ValueError(f"{ENV_PREFIX}DSN is not set")
        defaults = cls(dsn="")
        origins = get("ALLOWED_ORIGINS")
        return cls(
            dsn=get("DSN") or "",
            scenario=get("SCENARIO") or defaults.scenario,
            jwt_secret=get("JWT_SECRET") or defaults.jwt_secret,
            anon_key=get("ANON_KEY") or "",
            service_key=get("SERVICE_KEY") or "",
            publishable_key=get("PUBLISHABLE_KEY") or defaults.publishable_key,
            secret_key=get("SECRET_KEY") or defaults.secret_key,
            burst_key=get("BURST_KEY") or defaults.burst_key,
            pagerduty_api_token=get("PAGERDUTY_API_TOKEN") or defaults.pagerduty_api_token,
            admin_token=get("ADMIN_TOKEN") or defaults.admin_token,
            pagerduty_routing_key=get("PAGERDUTY_ROUTING_KEY") or defaults.pagerduty_routing_key,
            slack_bot_token=get("SLACK_BOT_TOKEN") or defaults.slack_bot_token,
            statuspage_api_key=get("STATUSPAGE_API_KEY") or defaults.statuspage_api_key,
            allowed_origins=tuple(o for o in origins.split(",") if o) if origins is not None else defaults.allowed_origins,
            cors_allow_any=get("CORS_ALLOW_ANY") == "1",
            rate_limit=int(get("RATE_LIMIT") or defaults.rate_limit),
            rate_window_s=float(get("RATE_WINDOW_S") or defaults.rate_window_s),
            watch_failure_delay_s=float(delay) if (delay := get("WATCH_FAILURE_DELAY_S")) else None,
        )


class HttpServerProcess:
    """The sandbox HTTP server as a child process. start() returns once /healthz answers."""

    def __init__(self, settings: HttpSettings, *, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.settings = settings
        self.start_timeout_s = start_timeout_s
        self.port: int | None = None
        self.startup_s: float | None = None  # how long start() took, for the curious
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: BinaryIO | None = None  # read side of the child's stderr file
        self._emergency: int | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle --

    def start(self) -> HttpServerProcess:
        if self._process is not None:
            raise RuntimeError("already started")
        began = time.monotonic()
        listener = _bind_listener()
        self.port = listener.getsockname()[1]
        atexit.register(self.stop)
        self._emergency = shutdown.on_emergency(self._kill_now)
        try:
            self._spawn(listener)
        finally:
            listener.close()  # the child holds its own copy now
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began
        return self

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL if it lingers. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_S)
        elif process is not None:
            process.wait()
        stderr, self._stderr = self._stderr, None
        if stderr is not None:
            stderr.close()
        shutdown.discard(self._emergency)
        self._emergency = None
        atexit.unregister(self.stop)

    def _kill_now(self) -> None:
        if self._process is not None:
            shutdown.kill_group(self._process.pid)

    def __enter__(self) -> HttpServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- steps --

    def _spawn(self, listener: socket.socket) -> None:
        # A file, not a pipe: nobody has to drain it. Unlinked at once, so it disappears
        # with the last descriptor even if both processes are killed.
        fd, name = tempfile.mkstemp(prefix="controlroom-http-", suffix=".stderr")
        self._stderr = open(name, "rb")
        os.unlink(name)
        env = {**os.environ, **self.settings.to_env(), PARENT_PID_ENV: str(os.getpid())}
        with os.fdopen(fd, "wb") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "controlroom.sandbox.http.server", "--fd", str(listener.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
                pass_fds=(listener.fileno(),),
                start_new_session=True,  # Ctrl-C in the terminal is the parent's to handle
            )

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout_s
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise HttpServerStartError(f"the HTTP server exited with {self._process.returncode}:\n{self._tail()}")
                try:
                    if client.get(self.base_url + "/healthz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass  # not accepting yet; the socket queues us until it is
                time.sleep(0.02)
        raise HttpServerStartError(f"the HTTP server did not answer /healthz within {self.start_timeout_s:.0f} s:\n{self._tail()}")

    def _tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(max(0, os.fstat(self._stderr.fileno()).st_size - 3000))
        tail = self._stderr.read().decode(errors="replace")
        for secret in self.settings.secret_values():  # a traceback must not leak what env carried
            if secret:
                tail = tail.replace(secret, "***")
        return tail


def _bind_listener() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # connections queue from now on, before the child is up
    return listener


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)  # its own session: the group is just the server
    except ProcessLookupError:
        pass


# -- the child ------------------------------------------------------------------------------


async def _watch_parent(server: uvicorn.Server, parent_pid: int) -> None:
    """Stop serving when the parent is gone (we would be reparented)."""
    while not server.should_exit:
        if os.getppid() != parent_pid:
            server.should_exit = True
            return
        await asyncio.sleep(0.5)


async def _serve(settings: HttpSettings, sock: socket.socket, parent_pid: int | None) -> None:
    import uvicorn  # here, not at the top: the parent never needs it

    from controlroom.sandbox.http.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        access_log=False,
        lifespan="on",  # a database that cannot be reached fails the start, visibly
        timeout_graceful_shutdown=2,
        server_header=False,
    )
    server = uvicorn.Server(config)
    watcher = asyncio.create_task(_watch_parent(server, parent_pid)) if parent_pid else None
    try:
        # socket(fileno=) detects the family (uvicorn's own fd= path assumes AF_UNIX, which
        # loses client addresses and TCP_NODELAY on a TCP socket).
        await server.serve(sockets=[sock])
    finally:
        if watcher is not None:
            watcher.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The controlroom sandbox HTTP server (settings from CONTROLROOM_HTTP_* env).")
    parser.add_argument("--fd", type=int, help="an already listening socket inherited from the parent")
    parser.add_argument("--port", type=int, default=0, help="bind 127.0.0.1:PORT when no --fd (0: any)")
    args = parser.parse_args(argv)
    try:
        settings = HttpSettings.from_env(os.environ)
    except ValueError as error:
        parser.error(str(error))
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        sock = _bind_listener() if args.port == 0 else socket.create_server(("127.0.0.1", args.port))
        print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    parent = os.environ.get(PARENT_PID_ENV)
    asyncio.run(_serve(settings, sock, int(parent) if parent else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
