"""Every key a runbook or config file may hold is documented where a team adopting
controlroom looks for it (docs/adopting.md, "Every key and its default"), so a key added to
the models without its line there fails here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pydantic

from controlroom.config import models

ADOPTING = Path(__file__).resolve().parent.parent / "docs" / "adopting.md"


def _documented_keys() -> set[str]:
    text = ADOPTING.read_text(encoding="utf-8")
    reference = text.split("## Every key and its default", 1)[1]
    # A key counts when it is written in backquotes, alone or in a section's name
    # (`[views.breakers]` documents views and breakers).
    return {word for span in re.findall(r"`([^`]+)`", reference) for word in re.findall(r"[a-z_]+", span)}


def _model_keys() -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for name, cls in inspect.getmembers(models, inspect.isclass):
        if issubclass(cls, pydantic.BaseModel) and cls.__module__ == models.__name__:
            for field, info in cls.model_fields.items():
                keys.setdefault(info.alias or field, set()).add(name)
    return keys


def test_every_key_of_the_files_is_in_the_reference() -> None:
    documented = _documented_keys()
    missing = {key: sorted(owners) for key, owners in _model_keys().items() if key not in documented}
    assert not missing, f"keys missing from {ADOPTING.name}'s reference: {missing}"



def _toml_blocks(text: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", text, flags=re.S)


def test_the_walkthrough_is_a_runbook_that_validates(tmp_path: Path) -> None:
    """The config and the runbook fragments of the walk-through, put together as a reader
    would, are a valid pair: the page's examples cannot drift from what the loader accepts."""
    import os
    import subprocess
    import sys

    text = ADOPTING.read_text(encoding="utf-8")
    walkthrough = text.split("## 3.", 1)[1].split("## 4.", 1)[0]
    config, = [block for block in _toml_blocks(text) if block.startswith("# robots-staging.toml")]
    (tmp_path / "runbook.toml").write_text("\n".join(_toml_blocks(walkthrough)), encoding="utf-8")
    (tmp_path / "robots-staging.toml").write_text(config, encoding="utf-8")
    env = {**os.environ, "ROBOTS_OPS_DSN": "postgresql://robots@localhost/ops", "ROBOTS_API_KEY": "k"}
    done = subprocess.run([sys.executable, "-m", "controlroom", "validate", "--config", str(tmp_path / "robots-staging.toml")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "6 items in 3 sections (http, pagerduty_oncall, sql, token_zombie)" in done.stdout
    # The robots' staging config names no PagerDuty: on-call is attested there, not probed.
    assert "attested     on-call: not probed here (no urls.pagerduty_oncalls, no secrets.pagerduty_api_token)" in done.stdout
    assert "kpis         1" in done.stdout


def test_every_binding_id_is_in_the_key_reference() -> None:
    """A key added to a screen without its binding id in the reference (the name a user's
    keymap remaps it by) fails here."""
    from controlroom.screens.keymap import all_bindings

    reference = ADOPTING.read_text(encoding="utf-8").split("## Every key and its default", 1)[1]
    documented = set(re.findall(r"`([a-z_]+\.[a-z_]+)`", reference))
    missing = sorted(b.id for b in all_bindings() if b.id and b.id not in documented)
    assert not missing, f"binding ids missing from {ADOPTING.name}'s key reference: {missing}"
