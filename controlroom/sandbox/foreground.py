"""`controlroom sandbox`: run the sandbox until Ctrl-C, SIGTERM or SIGHUP (a second one, or
a stop that takes too long, ends it at once: see controlroom.infra.shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex

import click

from controlroom.infra.shutdown import ExitGuard
from controlroom.sandbox.joining import advertised
from controlroom.sandbox.runner import SECRET_VARIABLES, Sandbox


async def run_foreground(guard: ExitGuard, scenario: str, *, locations: int, seed: int, simulate: bool,
                         as_json: bool) -> None:
    stop = asyncio.Event()
    guard.graceful = stop.set  # a close signal stops the sandbox, as Ctrl-C does
    sandbox = Sandbox(scenario, locations=locations, seed=seed, simulate=simulate, journal_store="postgres")
    try:
        if not as_json:
            click.echo(f"Starting the sandbox (scenario {scenario}, {locations} locations)...", err=True)
        starting = asyncio.create_task(sandbox.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # a signal during start-up: stop what has started
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return
        starting.result()
        _announce(sandbox, as_json)
        with advertised(sandbox.config_path, sandbox.scenario.name):  # `controlroom demo --join` opens on it
            await stopping
    finally:
        await sandbox.stop()
        if not as_json:
            with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
                click.echo("Sandbox stopped; its processes and files are gone.", err=True)


def _announce(sandbox: Sandbox, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({
            "scenario": sandbox.scenario.name,
            "dsn": sandbox.dsn,
            "base_url": sandbox.base_url,
            "config": str(sandbox.config_path),
            "env_file": str(sandbox.env_path),
            # The variables sandbox.env sets, by the config's secret names (never values).
            "secrets": dict(SECRET_VARIABLES),
            "startup_s": round(sandbox.timings.total_s, 3) if sandbox.timings else None,
        }), nl=True)
        return
    timings = sandbox.timings
    env_file = shlex.quote(str(sandbox.env_path))
    api_key = SECRET_VARIABLES["supabase_api_key"]
    click.echo(f"""
controlroom sandbox: scenario {sandbox.scenario.name} ({sandbox.scenario.summary})

  Postgres DSN   {sandbox.dsn}
  HTTP base URL  {sandbox.base_url}
  Config file    {sandbox.config_path}
  Secrets        {sandbox.env_path}
  Fleet          {sandbox.locations} locations across Fudo, MaxiRest and BistrSoft
  Started in     {timings.total_s:.1f} s (Postgres {timings.postgres_s:.1f} s, data {timings.seed_s:.1f} s, HTTP {timings.http_s:.1f} s)

Try, in another terminal:
  psql "{sandbox.dsn}" -c "SELECT provider, count(*) FROM pos_integrations_location GROUP BY provider"
  set -a; . {env_file}; set +a
  curl -H "apikey: ${api_key}" "{sandbox.base_url}/rest/v1/pos_integrations_location?select=location_id&limit=1"
  curl -X POST -H "Authorization: Bearer ${api_key}" -d '{{"test": true}}' "{sandbox.base_url}/functions/v1/pos-credentials-rotation"
  controlroom validate --config {sandbox.config_path}

Open the control room on it (several terminals share one release: the first with --write
drives, the others watch live):
  controlroom --config {sandbox.config_path} --write --host bastion-1
  controlroom demo --join --host bastion-2

Ctrl-C stops the sandbox and removes everything it made.""")
