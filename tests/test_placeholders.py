"""Placeholders: {urls.NAME}, {environment}, {version}, {provider} filled in every URL, command,
message and JSON body, each quoted for where it goes; SQL gets values only as bound parameters."""

from __future__ import annotations

import shlex

import pytest

from controlroom.config.placeholders import MissingValue, fill, names_in, template_problem, url_quote
from controlroom.checks.base import ProbeContext, ProbeError
from probe_support import make_loaded

URLS = {"api": "https://api.example/v1"}


def test_names_escapes_and_shell_variables() -> None:
    assert names_in("{urls.api}/x/{version}?e={environment}") == ["urls.api", "version", "environment"]
    assert names_in("echo ${HOME} {{literal}} awk '{ print $1 }'") == []
    assert fill("{{version}} is {version}", {"version": "v2"}, URLS) == "{version} is v2"


def test_each_place_quotes_the_values_for_itself() -> None:
    values = {"version": "v1.2 & rm -rf /", "environment": "staging eu"}
    url = fill("{urls.api}/releases/{version}?env={environment}", values, URLS, quote_value=url_quote,
               quote_url=lambda base: base)
    assert url == "https://api.example/v1/releases/v1.2%20%26%20rm%20-rf%20%2F?env=staging%20eu"
    command = fill("deploy {version} --to {urls.api}", values, URLS, quote_value=shlex.quote)
    assert shlex.split(command) == ["deploy", "v1.2 & rm -rf /", "--to", "https://api.example/v1"]


def test_a_value_not_known_here_is_said_not_guessed() -> None:
    with pytest.raises(MissingValue, match=r"\{version\} has no value here \(known once a deployment has started\)"):
        fill("{urls.api}/{version}", {"environment": "x"}, URLS)
    assert fill("rolled back to {version}", {}, URLS, keep_missing=True) == "rolled back to {version}"


def test_where_a_placeholder_may_be_used() -> None:
    item = "checklist.sections[0].items[1]"
    assert template_problem(f"{item}.url", "{urls.api}/{version}", URLS) is None
    assert "not a placeholder here" in (template_problem(f"{item}.url", "{urls.api}/{provider}", URLS) or "")
    assert template_problem("rollback.plans[0].steps[1].action.run", "disable {provider}", URLS) is None
    assert "bound parameters" in (template_problem(f"{item}.query", "SELECT '{version}'", URLS) or "")
    assert template_problem(f"{item}.query", "SELECT '{a}'::text[]", URLS) is None  # an array literal
    assert template_problem(f"{item}.title", "Release {whatever}", URLS) is None  # not a template


async def test_probes_fill_urls_commands_and_json_bodies() -> None:
    loaded = make_loaded([{"id": "a", "title": "A", "kind": "manual"}], urls=URLS)
    async with ProbeContext(loaded, values={"version": "v9"}) as ctx:
        assert ctx.url("{urls.api}/version/{version}?env={environment}") == "https://api.example/v1/version/v9?env=test%20env"
        assert ctx.shell("check {version} {environment}") == "check v9 'test env'"
        assert ctx.json({"release": "{version}", "tags": ["{environment}"], "n": 1}) == {
            "release": "v9", "tags": ["test env"], "n": 1}
    async with ProbeContext(loaded) as ctx:  # `check` before any deployment: no version yet
        with pytest.raises(ProbeError, match=r"\{version\} has no value here"):
            ctx.url("{urls.api}/version/{version}")
