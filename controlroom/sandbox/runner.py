"""The whole sandbox, started and stopped as one: Postgres, schema, fleet, HTTP server,
simulator, and a config file that points the control room at them.

    async with Sandbox(scenario="healthy") as sandbox:
        sandbox.dsn, sandbox.base_url, sandbox.config_path

This is the API behind `controlroom sandbox`, `controlroom demo`, `check --scenario` and the
tests. Everything it starts it stops, and everything it writes it removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import asyncpg

from controlroom.infra import shutdown
from controlroom.sandbox.world.fleet import DEPLOYED_VERSION, seed_fleet
from controlroom.sandbox.http.server import STATUSPAGE_PAGE_ID, HttpServerProcess, HttpSettings
from controlroom.sandbox.http.pagerduty_api import POLICY_ID as ONCALL_POLICY_ID
from controlroom.sandbox.pg.postgres import EmbeddedPostgres
from controlroom.sandbox.pg.reaper import spawn_reaper, stop_reaper
from controlroom.sandbox.world.scenarios import Scenario, get_scenario
from controlroom.sandbox.pg.schema import apply_schema
from controlroom.sandbox.world.simulator import Simulator
from controlroom.sandbox.world.traffic import generate_traffic

MAX_LOCATIONS = 20_000

# The names of the environment variables the sandbox's config file refers to. Their values
# are in sandbox.env beside it (mode 0600); an exported variable of the same name wins.
SECRET_VARIABLES = {
    "database_dsn": "CONTROLROOM_SANDBOX_DSN",
    # The anon key (a JWT: role anon), in `apikey` and as the functions' bearer.
    "supabase_api_key": "CONTROLROOM_SANDBOX_API_KEY",
    # A publishable key (sb_publishable_…, not a JWT) of the rate-limit burst's own, so the
    # burst uses up its own limit, never the other probes'.
    "burst_api_key": "CONTROLROOM_SANDBOX_BURST_API_KEY",
    "slack_webhook_url": "CONTROLROOM_SANDBOX_SLACK_WEBHOOK_URL",
    "pagerduty_routing_key": "CONTROLROOM_SANDBOX_PAGERDUTY_ROUTING_KEY",
    # A Slack bot token (xoxb-…) for the Web API's chat.postMessage, and a Statuspage API key.
    "slack_bot_token": "CONTROLROOM_SANDBOX_SLACK_BOT_TOKEN",
    "statuspage_api_key": "CONTROLROOM_SANDBOX_STATUSPAGE_API_KEY",
    # PagerDuty's REST API key: the on-call item asks GET /oncalls with it.
    "pagerduty_api_token": "CONTROLROOM_SANDBOX_PAGERDUTY_API_TOKEN",
    "sandbox_admin_token": "CONTROLROOM_SANDBOX_ADMIN_TOKEN",
}


@dataclass(frozen=True)
class SandboxTimings:
    postgres_s: float
    seed_s: float
    http_s: float
    total_s: float


async def _finish_in_thread(start: Callable[[], object]) -> None:
    """Run a blocking start in a thread. If we are cancelled meanwhile (a close signal during
    start-up), let the thread finish first, so that what it started is there to be stopped."""
    running = asyncio.ensure_future(asyncio.to_thread(start))
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await running
        raise


class Sandbox:
    """One running simulated POS platform. Not reusable once stopped."""

    def __init__(
        self,
        scenario: str | Scenario = "healthy",
        *,
        locations: int = 300,
        seed: int = 7,
        simulate: bool = True,
        tick_s: float = 2.0,
        journal_store: str = "file",
        watch_failure_delay_s: float | None = None,
    ) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else get_scenario(scenario)
        if not 1 <= locations <= MAX_LOCATIONS:
            raise ValueError(f"locations must be between 1 and {MAX_LOCATIONS}, not {locations}")
        self.locations = locations
        self.seed = seed
        self.simulate = simulate
        self.tick_s = tick_s
        if journal_store not in ("file", "postgres"):
            raise ValueError(f"journal_store is 'file' or 'postgres', not {journal_store!r}")
        # "postgres": the control rooms opened on this sandbox's config share one release in
        # the shared journal store, on the sandbox's own Postgres (what `controlroom sandbox`
        # and `controlroom demo` do); "file": each has a journal file of its own.
        self.journal_store = journal_store
        # fudo-outage-watch: seconds from the deploy_finished change event to the failure
        # (None: the scenario's own); tests shorten it.
        self.watch_failure_delay_s = watch_failure_delay_s
        self.postgres: EmbeddedPostgres | None = None
        self.http: HttpServerProcess | None = None
        self.simulator: Simulator | None = None
        self.workdir: Path | None = None
        self.timings: SandboxTimings | None = None
        self._simulation: asyncio.Task[None] | None = None
        self._traffic: asyncio.Task[None] | None = None
        self._settings: HttpSettings | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self._emergency: int | None = None
        self._slack_hook_id = "T0SANDBOX/B0CONTROLROOM/" + secrets.token_hex(12)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> "Sandbox":
        began = time.perf_counter()
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix="controlroom-sandbox-"))
            # The secrets file must not outlive us even if we are killed with SIGKILL.
            self._reaper = spawn_reaper(kill_groups=[], remove=[self.workdir])
            self._emergency = shutdown.on_emergency(partial(shutil.rmtree, self.workdir, ignore_errors=True))
            self.postgres = EmbeddedPostgres()
            await _finish_in_thread(self.postgres.start)
            postgres_done = time.perf_counter()
            await self._load_data()
            seed_done = time.perf_counter()
            self._settings = HttpSettings(dsn=self.postgres.dsn, scenario=self.scenario.name,
                                          watch_failure_delay_s=self.watch_failure_delay_s)
            self.http = HttpServerProcess(self._settings)
            await _finish_in_thread(self.http.start)
            http_done = time.perf_counter()
            self._write_config()
            if self.simulate:
                self.simulator = Simulator(self.postgres.dsn, self.scenario)
                self._simulation = asyncio.create_task(self.simulator.run(self.tick_s), name="sandbox-simulator")
                self._traffic = asyncio.create_task(
                    generate_traffic(self.base_url, self.settings.anon_key, interval_s=self.tick_s), name="sandbox-traffic"
                )
        except BaseException:
            await self.stop()
            raise
        self.timings = SandboxTimings(
            postgres_s=postgres_done - began,
            seed_s=seed_done - postgres_done,
            http_s=http_done - seed_done,
            total_s=time.perf_counter() - began,
        )
        return self

    async def stop(self) -> None:
        """Stop everything started, remove everything written. Safe to call twice."""
        for task in (self._simulation, self._traffic):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._simulation = self._traffic = None
        simulator, self.simulator = self.simulator, None
        if simulator is not None:
            with contextlib.suppress(Exception):
                await simulator.close()
        http, self.http = self.http, None
        if http is not None:
            await asyncio.to_thread(http.stop)
        postgres, self.postgres = self.postgres, None
        if postgres is not None:
            await asyncio.to_thread(postgres.stop)
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        reaper, self._reaper = self._reaper, None
        stop_reaper(reaper)
        shutdown.discard(self._emergency)
        self._emergency = None

    async def __aenter__(self) -> "Sandbox":
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- what it offers ----------------------------------------------------------------

    @property
    def dsn(self) -> str:
        assert self.postgres is not None, "sandbox not started"
        return self.postgres.dsn

    @property
    def base_url(self) -> str:
        assert self.http is not None, "sandbox not started"
        return self.http.base_url

    @property
    def config_path(self) -> Path:
        assert self.workdir is not None, "sandbox not started"
        return self.workdir / "controlroom.toml"

    @property
    def env_path(self) -> Path:
        assert self.workdir is not None, "sandbox not started"
        return self.workdir / "sandbox.env"

    @property
    def settings(self) -> HttpSettings:
        assert self._settings is not None, "sandbox not started"
        return self._settings

    def secret_environment(self) -> dict[str, str]:
        """The sandbox's secrets under the variable names its config file uses."""
        settings = self.settings
        values = {
            "database_dsn": self.dsn,
            "supabase_api_key": settings.anon_key,
            "burst_api_key": settings.burst_key,
            "slack_webhook_url": f"{self.base_url}/sinks/slack/{self._slack_hook_id}",
            "pagerduty_routing_key": settings.pagerduty_routing_key,
            "slack_bot_token": settings.slack_bot_token,
            "statuspage_api_key": settings.statuspage_api_key,
            "pagerduty_api_token": settings.pagerduty_api_token,
            "sandbox_admin_token": settings.admin_token,
        }
        return {SECRET_VARIABLES[name]: value for name, value in values.items()}

    # -- steps -------------------------------------------------------------------------

    async def _load_data(self) -> None:
        assert self.postgres is not None
        conn = await asyncpg.connect(self.postgres.dsn, timeout=10)
        try:
            await apply_schema(conn)
            await seed_fleet(conn, self.scenario, locations=self.locations, seed=self.seed)
        finally:
            await conn.close()

    def _write_config(self) -> None:
        assert self.workdir is not None
        lines = [f"{name}={json.dumps(value)}" for name, value in self.secret_environment().items()]
        self.env_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.env_path.chmod(0o600)
        self.config_path.write_text(self._config_toml(), encoding="utf-8")

    def _config_toml(self) -> str:
        url = self.base_url
        admin = SECRET_VARIABLES["sandbox_admin_token"]
        control = f"{sys.executable} -m controlroom.sandbox.control --url {url} --token-env {admin}"
        deploy = f"{control} deploy {{version}}"
        rollback = f"{control} rollback {{version}}"
        secrets_table = "\n".join(f'{name} = "{variable}"' for name, variable in SECRET_VARIABLES.items())
        return f"""\
# Written by `controlroom sandbox` (scenario {self.scenario.name!r}); removed when it stops.
# Secrets are not in this file: it names environment variables, whose values are in
# sandbox.env beside it.
runbook = "default"
env_file = "sandbox.env"

[environment]
name = "sandbox ({self.scenario.name})"
production = false
description = {json.dumps(self.scenario.summary)}
write_by_default = false
deploy_command = {json.dumps(deploy)}
# The deploy and rollback commands get this secret (the sandbox's admin token), and no other.
deploy_secrets = ["sandbox_admin_token"]
# A rollback deploys the previous version through the sandbox's rollback endpoint, which
# also clears the providers the deployment made fail; that version is the fleet's own.
rollback_command = {json.dumps(rollback)}
previous_version = {json.dumps(DEPLOYED_VERSION)}

[environment.urls]
supabase = "{url}"
metrics = "{url}"
pagerduty = "{url}/sinks/pagerduty"
# PagerDuty's REST API (on-call schedules), Slack's Web API, and the sandbox's Statuspage page.
pagerduty_api = "{url}/sinks/pagerduty-api"
slack_api = "{url}/sinks/slack-api"
statuspage_page = "{url}/sinks/statuspage/v1/pages/{STATUSPAGE_PAGE_ID}"
# Who is on call: PagerDuty's GET /oncalls for the sandbox's escalation policy.
pagerduty_oncalls = "{url}/sinks/pagerduty-api/oncalls?escalation_policy_ids[]={ONCALL_POLICY_ID}"
sandbox = "{url}"

[environment.secrets]
{secrets_table}
{self._journal_toml()}"""

    def _journal_toml(self) -> str:
        if self.journal_store == "file":
            return ""
        return """
# Every control room opened on this config shares one release, in the shared journal store
# on the sandbox's own Postgres: the first with --write drives, the others watch live.
[journal]
store = "postgres"
database = "main"
"""
