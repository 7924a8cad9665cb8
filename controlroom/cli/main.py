"""The `controlroom` command line: one entry point, the subcommands of DESIGN.md §2.

Every error meant for the operator is one line on stderr and an exit code; a traceback is
printed only for an internal error, and only with --debug.
"""

from __future__ import annotations

import re
import signal
import sys
import traceback
from pathlib import Path

import click

from controlroom import __version__
from controlroom.errors import ControlRoomError
from controlroom.sandbox.world.scenarios import SCENARIOS

EXIT_USAGE = 2
EXIT_INTERNAL = 1

scenario_option = click.option(
    "--scenario",
    type=click.Choice(list(SCENARIOS)),
    default="healthy",
    show_default=True,
    help="Which simulated situation the sandbox plays.",
)
locations_option = click.option(
    "--locations",
    type=click.IntRange(1, 20_000),
    default=300,
    show_default=True,
    help="How many restaurant locations the sandbox's fleet has.",
)
host_option = click.option(
    "--host",
    metavar="LABEL",
    help="How other operators of a shared release see this machine (default: its host name), e.g. bastion-2.",
)


def _set_host(host: str | None) -> None:
    if host is not None:
        import os

        from controlroom.infra.identity import HOST_VARIABLE

        label = host.strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", label):
            raise click.BadParameter("give a name such as bastion-2: letters, digits, '.', '_', ':' and '-', "
                                     "at most 64", param_hint="--host")
        os.environ[HOST_VARIABLE] = label


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file naming the environment and its runbook (see docs/runbook.md).",
)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.option("--write", is_flag=True, help="Allow modifying actions (read-only by default).")
@host_option
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.version_option(__version__, "--version", prog_name="controlroom")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, write: bool, host: str | None, debug: bool) -> None:
    """A terminal control room for production releases.

    Without a subcommand, opens the control room against the environment and runbook in
    --config FILE. Start with `controlroom demo`, which needs nothing else installed.
    """
    ctx.obj = {"debug": debug}
    _set_host(host)
    if ctx.invoked_subcommand is not None:
        return
    if config_path is None:
        raise click.UsageError("give --config FILE, or try `controlroom demo`")
    from controlroom.cli.tui import run_app

    run_app(config_path, write=write)


@cli.command()
@scenario_option
@locations_option
@click.option("--write", is_flag=True, help="Allow modifying actions (read-only by default).")
@click.option("--join", is_flag=True,
              help="Open the control room on the demo (or sandbox) already running in another terminal: "
                   "a second operator of the same release.")
@host_option
@click.pass_context
def demo(ctx: click.Context, scenario: str, locations: int, write: bool, join: bool, host: str | None) -> None:
    """Start the sandbox and open the control room against it.

    Needs nothing else installed; quitting stops the sandbox and removes what it made.
    The control rooms on one sandbox share its release: the first with --write drives,
    the others (`controlroom demo --join`, in other terminals) watch it live.
    """
    from controlroom.cli.tui import run_demo

    for option in ("scenario", "locations"):
        if join and ctx.get_parameter_source(option) is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(f"--join opens the running demo, whose {option} is already chosen: drop --{option}")
    _set_host(host)
    run_demo(scenario, locations, write=write, join=join)


@cli.command()
@scenario_option
@locations_option
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the generated fleet.")
@click.option("--no-simulate", is_flag=True, help="Keep the data still (no simulator ticks).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line with the connection details.")
def sandbox(scenario: str, locations: int, seed: int, no_simulate: bool, as_json: bool) -> None:
    """Run the sandbox (real Postgres + real HTTP server) in the foreground.

    Prints the Postgres DSN, the HTTP base URL and a config file that points the control
    room at both. Ctrl-C (or SIGTERM) stops everything and removes what it made.
    """
    from controlroom.infra.shutdown import run_guarded
    from controlroom.sandbox.foreground import run_foreground

    # A signal is how this command is meant to end: it exits 0 once everything is stopped.
    run_guarded(lambda guard: run_foreground(guard, scenario, locations=locations, seed=seed,
                                             simulate=not no_simulate, as_json=as_json))


@cli.command()
@config_option
@click.option(
    "--scenario",
    type=click.Choice(list(SCENARIOS)),
    help="Instead of --config: start the sandbox with this scenario for the run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--attest", multiple=True, metavar="ID", help="Attest a manual item as yourself (repeatable).")
@click.pass_context
def check(ctx: click.Context, config_path: Path | None, scenario: str | None, as_json: bool, attest: tuple[str, ...]) -> None:
    """Run the pre-deployment checklist headless and print the verdict.

    Every probe runs at once, so the check takes about as long as its slowest probe.

    Exit codes: 0 GO, 3 DELAYED, 4 NO-GO, 5 PENDING (waiting for attestations),
    2 usage or configuration error, 1 internal error.
    """
    if (config_path is None) == (scenario is None):
        raise click.UsageError("give exactly one of --config FILE and --scenario NAME")
    from controlroom.cli.headless import run_check
    from controlroom.infra.shutdown import run_guarded

    code = run_guarded(lambda _guard: run_check(config_path, scenario, as_json=as_json, attest=attest))
    ctx.exit(code if code is not None else EXIT_INTERNAL)


@cli.command()
@click.argument("journal", required=False, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the Markdown here instead of stdout.")
@config_option
@click.option("--release", "release_id", metavar="ID",
              help="With --config on the shared journal store: this release instead of the newest.")
def report(journal: Path | None, output: Path | None, config_path: Path | None, release_id: str | None) -> None:
    """Render the post-deployment report (Markdown) from a deployment journal.

    JOURNAL defaults to the newest journal in the user's data directory. With --config
    whose [journal] is the shared store (and no JOURNAL), the environment's newest release
    is read from the store; a mirrored file of it gives the same report.
    """
    from controlroom.report.render import report_command

    if journal is not None and (config_path is not None or release_id is not None):
        raise click.UsageError("give a JOURNAL file, or --config (and --release) for the shared store, not both")
    if release_id is not None and config_path is None:
        raise click.UsageError("--release goes with --config")
    loaded = None
    if config_path is not None:
        from controlroom.config.loader import load_config

        loaded = load_config(config_path)
        if not loaded.journal.shared:
            raise click.UsageError(f"{config_path}: its journal is a file ([journal] store = \"file\"): "
                                   "name the JOURNAL file instead")
    markdown = report_command(journal, output, loaded=loaded, release_id=release_id)
    if output is None:
        click.echo(markdown)
    else:
        click.echo(f"report written to {output}", err=True)


@cli.command()
@config_option
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Read this journal instead of the newest one (of --config's environment).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--watch", is_flag=True, help="Wait until the deployment finishes (or --timeout), printing changes.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="S", help="With --watch: give up after S seconds.")
@click.pass_context
def status(ctx: click.Context, config_path: Path | None, journal_path: Path | None, as_json: bool, watch: bool,
           timeout: float | None) -> None:
    """Where the release stands: stage, version, phase, clocks, verdict, last events.

    Read from the journal (the newest, of --config's environment when given). Exit codes:
    0 finished succeeded, 3 in progress, 4 failed or rolled back, 5 no deployment,
    2 usage or configuration error. With --watch it waits for the deployment to finish.
    """
    import json as json_module
    from datetime import UTC, datetime

    from controlroom.infra.shutdown import run_guarded
    from controlroom.release import status as release

    if timeout is not None and not watch:
        raise click.UsageError("--timeout goes with --watch")
    loaded = None
    if config_path is not None:
        from controlroom.config.loader import load_config

        loaded = load_config(config_path)

    def show(state: release.ReleaseStatus) -> None:
        now = datetime.now(UTC)
        if as_json:
            click.echo(json_module.dumps(state.to_json(now), ensure_ascii=True))
        else:
            click.echo(release.render(state, now) + ("\n" if watch else ""))

    if not watch:
        state = release.release_status(loaded, journal_path)
        show(state)
        ctx.exit(state.exit_code)

    async def wait(_guard: object) -> int:
        return (await release.watch(loaded, journal_path, timeout, show)).exit_code

    code = run_guarded(wait)
    ctx.exit(code if code is not None else EXIT_INTERNAL)


@cli.command()
@click.argument("config_file", required=False, type=click.Path(path_type=Path))
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="Config file to check (or give it as the argument).",
)
def validate(config_file: Path | None, config_path: Path | None) -> None:
    """Check a config file and its runbook, and summarise them."""
    from controlroom.config.loader import attested_instead, load_config
    from controlroom.release.journal import journal_directory

    if (config_file is None) == (config_path is None):
        raise click.UsageError("give the config file, as an argument or with --config")
    config_path = config_file or config_path
    assert config_path is not None

    loaded = load_config(config_path)
    runbook, environment = loaded.runbook, loaded.environment
    items = runbook.items()
    kinds = sorted({item.kind for _, item in items})
    click.echo(f"{config_path}: valid")
    click.echo(f"  environment  {environment.name}{' (PRODUCTION)' if environment.production else ''}")
    click.echo(f"  runbook      {runbook.name} [{loaded.runbook_source}]")
    click.echo(f"  checklist    {len(items)} items in {len(runbook.checklist.sections)} sections ({', '.join(kinds)})")
    for item_id, lacking in attested_instead(runbook, environment).items():
        click.echo(f"  attested     {item_id}: not probed here (no {', no '.join(lacking)})")
    phases = " + ".join(f"{p.minutes:g}" for p in runbook.deployment.phases)
    click.echo(f"  deployment   {len(runbook.deployment.phases)} phases, {phases} min (target {runbook.deployment.target_minutes:g})")
    click.echo(f"  kpis         {len(runbook.kpis)}")
    click.echo(f"  rollback     {', '.join(f'{p.id} ({p.target_minutes:g} min)' for p in runbook.rollback.plans)}")
    missing = [f"{name} (${loaded.secrets.variable(name)})" for name in environment.secrets if not loaded.secrets.has(name)]
    if missing:
        click.echo(f"  secrets not set: {', '.join(missing)}")
    if loaded.journal.shared:
        database = loaded.journal.dsn_secret or loaded.runbook.database(loaded.journal.database)
        click.echo(f"  journal      shared store (Postgres, {'DSN secret ' if loaded.journal.dsn_secret else 'database '}"
                   f"{database}); a copy of each release in {journal_directory()}")
    else:
        click.echo(f"  journal      a file per release in {journal_directory()}")
    for warning in loaded.pooler_warnings():
        click.echo(f"  warning: {warning}")


@cli.command()
@config_option
def keys(config_path: Path | None) -> None:
    """Print the effective key map: binding id, key, screen, what it does.

    Your own keys, theme and bell are in ~/.config/controlroom/settings.toml (or the file
    $CONTROLROOM_SETTINGS names); see README, "Personal settings". With --config, the views
    its runbook does not define are left out.
    """
    from controlroom.cli.keys import keys_table

    click.echo(keys_table(config_path))


@cli.command()
@config_option
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, metavar="PORT",
              help="Port to listen on (0: any free one).")
@click.option("--host", "bind", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address to listen on. Keep the default and reach it through an SSH tunnel.")
@click.pass_context
def serve(ctx: click.Context, config_path: Path | None, port: int, bind: str) -> None:
    """Serve the control room to browsers, read-only, for people who watch the release.

    Each browser gets its own control room on the same config, always read-only whatever
    the config says (with the shared journal store it watches the same release live), and
    only the secrets the read-only view reads. Every request needs the random token printed
    at start, in the URL to open; a wrong or missing token gets 401. From a laptop:

    \b
      ssh -L 8000:127.0.0.1:8000 bastion      # then open the printed URL:
      http://127.0.0.1:8000/?token=...

    Ctrl-C stops it. See README.md, "Watching from a browser".
    """
    if config_path is None:
        raise click.UsageError("give --config FILE: the environment and runbook to watch")
    if ctx.parent is not None and ctx.parent.params.get("write"):
        raise click.UsageError("serve is always read-only: drop --write")
    from controlroom.cli.serve import serve as serve_browsers

    serve_browsers(config_path, host=bind, port=port)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every error into one line and an exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        # Without standalone mode click returns the code of a ctx.exit() (e.g. --help).
        code = cli.main(args=argv, prog_name="controlroom", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_USAGE)
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(128 + signal.SIGINT)
    except ControlRoomError as error:
        click.echo(f"controlroom: error: {error}", err=True)
        sys.exit(error.exit_code)
    except Exception as error:  # an internal error: say so plainly, details on request
        if debug:
            traceback.print_exc()
        click.echo(f"controlroom: internal error: {type(error).__name__}: {error}", err=True)
        if not debug:
            click.echo("run again with --debug for the details", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
