"""`controlroom check`: the checklist without a screen, for people and for CI pipelines."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from rich.console import Console

from controlroom.checks.run import CheckReport, render_report, run_checklist
from controlroom.config.loader import load_config


async def run_check(config_path: Path | None, scenario: str | None, *, as_json: bool, attest: tuple[str, ...]) -> int:
    """Run the checklist once, print it, and return the verdict's exit code."""
    if scenario is not None:
        from controlroom.sandbox.runner import Sandbox

        async with Sandbox(scenario, simulate=False) as sandbox:
            report = await _check(sandbox.config_path, attest)
    else:
        assert config_path is not None
        report = await _check(config_path, attest)
    # A bastion's terminal may not be UTF-8: the verdict's exit code must survive that.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=True, indent=2))  # the CI contract: ASCII-safe
    else:
        Console(highlight=False, safe_box=True).print(render_report(report))
    return report.exit_code


async def _check(config_path: Path, attest: tuple[str, ...]) -> CheckReport:
    loaded = load_config(config_path)
    for warning in loaded.pooler_warnings():
        print(f"controlroom: warning: {warning}", file=sys.stderr, flush=True)
    return await run_checklist(loaded, attest)
