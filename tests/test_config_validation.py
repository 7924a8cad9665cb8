"""Config and runbook validation: a good file loads; each bad one gives exactly one line on
stderr naming the file, the key path and what was expected, and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from controlroom.config.loader import load_config, load_default_runbook
from controlroom.errors import ConfigError

GOOD_CONFIG = """\
runbook = "default"

[environment]
name = "staging"
production = false

[environment.urls]
supabase = "https://example.supabase.co"
metrics = "https://prometheus.example"
pagerduty = "https://events.pagerduty.com"
slack_api = "https://slack.com/api"
statuspage_page = "https://api.statuspage.io/v1/pages/kctbh9vrtdwd"

[environment.secrets]
database_dsn = "CR_DATABASE_DSN"
supabase_api_key = "SUPABASE_ANON_KEY"
burst_api_key = "SUPABASE_BURST_KEY"
slack_webhook_url = "SLACK_WEBHOOK_URL"
pagerduty_routing_key = "PAGERDUTY_ROUTING_KEY"
statuspage_api_key = "STATUSPAGE_API_KEY"
"""

MINIMAL_RUNBOOK = """\
name = "tiny"
[databases]
main = "database_dsn"

[[checklist.sections]]
id = "basics"
title = "Basics"
[[checklist.sections.items]]
id = "api"
title = "API answers"
kind = "http"
url = "{urls.supabase}/health"
[[checklist.sections.items]]
id = "no-open-breakers"
title = "No open breakers"
kind = "sql"
query = "SELECT location_id FROM rotation_cb WHERE state <> 'closed'"

[[deployment.phases]]
id = "deploy"
title = "Deploy"
minutes = 5
steps = [{ id = "ship", title = "Ship it", action = { kind = "deploy" } }]

[[rollback.plans]]
id = "emergency"
title = "Emergency"
target_minutes = 5
steps = [{ id = "back", title = "Previous version", action = { kind = "switch_version" } }]

[[escalation.levels]]
level = 1
title = "On-call"
from_minutes = 0
contacts = ["@oncall"]
"""


def write(tmp_path: Path, config: str, runbook: str | None = None) -> Path:
    path = tmp_path / "controlroom.toml"
    path.write_text(textwrap.dedent(config))
    if runbook is not None:
        (tmp_path / "runbook.toml").write_text(textwrap.dedent(runbook))
    return path


def test_the_default_runbook_carries_the_seeds_numbers() -> None:
    runbook = load_default_runbook()
    items = {item.id: item for _, item in runbook.items()}
    zombie = items["token-zombie"]
    assert (zombie.max_latency_ms, zombie.max_attempts) == (100, 1)  # 401 < 100 ms, 0 retries
    assert items["mttr"].pass_when.value == 120 and items["mttr"].fail_when.value == 240
    assert "interval '4 hours'" in items["sync-status"].query
    assert "interval '7 days'" in items["credential-expiry"].query
    assert "failure_threshold <> 10 OR window_minutes <> 15" in items["breaker-config"].query
    assert runbook.verdict.health_min_percent == 95
    # The seed's real-time KPIs decide the release as checklist items, with a warning band.
    latency, errors = items["api-latency"], items["error-rate"]
    assert (latency.kind, latency.query, str(latency.pass_when), str(latency.fail_when)) == (
        "prometheus", "api_latency_p95_ms", "< 500", "> 1000")
    assert (errors.kind, str(errors.pass_when), str(errors.fail_when)) == ("prometheus", "< 0.1", "> 1")
    assert items["monitoring"].kind == "alert_rules" and "PosRotationFailing" in items["monitoring"].rules
    assert [p.minutes for p in runbook.deployment.phases] == [5, 5, 5]
    assert runbook.deployment.target_minutes == 15
    plans = {plan.id: plan for plan in runbook.rollback.plans}
    assert plans["emergency"].target_minutes == 5
    assert (plans["graceful"].min_minutes, plans["graceful"].target_minutes) == (10, 15)
    assert [level.from_minutes for level in runbook.escalation.levels] == [0, 15, 30, 60]
    kpis = {kpi.id: kpi for kpi in runbook.kpis}
    assert str(kpis["rotation-success"].green) == "> 98"
    assert str(kpis["api-latency-p95"].green) == "< 500"
    assert str(kpis["error-rate"].green) == "< 0.1"
    assert str(kpis["pos-sync-success"].green) == "> 95"
    assert str(kpis["mttr"].green) == "< 120"
    assert str(kpis["breaker-triggers"].green) == "< 5"
    assert str(kpis["security-incidents"].green) == "== 0"
    assert str(kpis["locations-affected"].green) == "< 1"
    # the seed's "Customer Impact: <1% locations affected" is the report's customer-impact KPI
    assert runbook.customer_impact_kpi() is kpis["locations-affected"]


def test_a_good_config_loads_and_expands_urls(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, GOOD_CONFIG), environ={"SUPABASE_ANON_KEY": "anon-key-123"})
    assert loaded.environment.name == "staging"
    assert loaded.url("{urls.supabase}/rest/v1/") == "https://example.supabase.co/rest/v1/"
    assert loaded.secrets.get("supabase_api_key") == "anon-key-123"
    assert not loaded.secrets.has("database_dsn")


def test_a_minimal_runbook_of_another_team_loads(tmp_path: Path) -> None:
    config = GOOD_CONFIG.replace('runbook = "default"', 'runbook = "runbook.toml"')
    loaded = load_config(write(tmp_path, config, MINIMAL_RUNBOOK))
    assert loaded.runbook.name == "tiny"
    assert loaded.runbook_source.endswith("runbook.toml")


def test_env_file_supplies_secrets_but_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "secrets.env").write_text('SUPABASE_ANON_KEY="from-file"\nCR_DATABASE_DSN=postgresql://u:pw-in-file@h/db\n')
    path = write(tmp_path, 'env_file = "secrets.env"\n' + GOOD_CONFIG)
    loaded = load_config(path, environ={"SUPABASE_ANON_KEY": "from-environment"})
    assert loaded.secrets.get("supabase_api_key") == "from-environment"
    assert loaded.secrets.get("database_dsn") == "postgresql://u:pw-in-file@h/db"
    assert "pw-in-file" not in loaded.secrets.redact("connecting with pw-in-file failed")


# (name, config text, runbook text or None, expected fragments of the one error line)
BAD_FILES = [
    ("toml syntax", "runbook = \n", None, ["controlroom.toml", "is not valid TOML", "line 1"]),
    ("unknown top-level key", "colour = 'red'\n" + GOOD_CONFIG, None, ["colour", "is not a known key"]),
    ("unknown environment key", GOOD_CONFIG.replace("production = false", "prod = false"), None,
     ["environment.prod", "is not a known key"]),
    ("missing environment", 'runbook = "default"\n', None, ["environment", "is required"]),
    ("missing environment name", GOOD_CONFIG.replace('name = "staging"\n', ""), None,
     ["environment.name", "is required"]),
    ("production not a boolean", GOOD_CONFIG.replace("production = false", 'production = "no"'), None,
     ["environment.production", "expected true or false"]),
    ("inline secret", GOOD_CONFIG.replace('"SLACK_WEBHOOK_URL"', '"https://hooks.slack.com/services/T0/B0/abc"'), None,
     ["environment.secrets.slack_webhook_url", "name of an environment variable", "not the secret itself"]),
    ("url without scheme", GOOD_CONFIG.replace("https://example.supabase.co", "example.supabase.co"), None,
     ["environment.urls", "http"]),
    ("url without host", GOOD_CONFIG.replace("https://example.supabase.co", "http://"), None,
     ["environment.urls", "host"]),
    ("url with credentials", GOOD_CONFIG.replace("https://example.supabase.co", "https://admin:hunter2@example.supabase.co"), None,
     ["environment.urls", "credentials"]),
    ("runbook is a device", GOOD_CONFIG.replace('runbook = "default"', 'runbook = "/dev/zero"'), None,
     ["/dev/zero", "not a regular file"]),
    ("runbook item url without host", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.replace('url = "{urls.supabase}/health"', 'url = "https:///health"'),
     ["runbook.toml", "checklist.sections[0].items[0].url", "host"]),
    ("runbook needs a url the environment lacks", GOOD_CONFIG.replace('metrics = "https://prometheus.example"\n', ""), None,
     ["environment.urls.metrics", "required by the runbook"]),
    ("runbook needs a secret the environment lacks", GOOD_CONFIG.replace('pagerduty_routing_key = "PAGERDUTY_ROUTING_KEY"\n', ""), None,
     ["environment.secrets.pagerduty_routing_key", "required by the runbook"]),
    ("runbook file missing", GOOD_CONFIG.replace('runbook = "default"', 'runbook = "nowhere.toml"'), None,
     ["nowhere.toml", "no such file"]),
    ("threshold not a number", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK + '[[kpis]]\nid = "k"\ntitle = "K"\nwindow = "realtime"\ngreen = { op = ">", value = "98" }\n'
     'red = { op = "<", value = 95 }\nsource = { kind = "sql", query = "SELECT 1" }\n',
     ["runbook.toml", "kpis[0](id=k).green.value", "expected a number"]),
    ("phase minutes wrong type", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.replace("minutes = 5", 'minutes = "five"'),
     ["deployment.phases[0](id=deploy).minutes", "expected a number"]),
    ("unknown item kind", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.replace('kind = "http"', 'kind = "ping"'),
     ["checklist.sections[0](id=basics).items[0](id=api)", "ping"]),
    ("unknown item key", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.replace('url = "{urls.supabase}/health"', 'url = "{urls.supabase}/health"\ntimeout = 3'),
     ["items[0](id=api).timeout", "is not a known key"]),
    ("missing checklist", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.split("[[checklist.sections]]")[0] + "[[deployment" + MINIMAL_RUNBOOK.split("[[deployment", 1)[1],
     ["runbook.toml", "checklist", "is required"]),
    ("duplicate item ids", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.replace('id = "no-open-breakers"', 'id = "api"'), ["checklist", "'api' is used twice"]),
    ("escalation out of order", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK + '[[escalation.levels]]\nlevel = 2\ntitle = "Lead"\nfrom_minutes = 0\ncontacts = ["@lead"]\n',
     ["escalation", "strictly increasing"]),
    ("sql item on an undeclared database", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.replace('kind = "sql"', 'kind = "sql"\ndatabase = "warehouse"'),
     ["runbook.toml", "'warehouse'", "[databases]"]),
    ("bad threshold operator", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK + '[[kpis]]\nid = "k"\ntitle = "K"\nwindow = "realtime"\ngreen = { op = "above", value = 98 }\n'
     'red = { op = "<", value = 95 }\nsource = { kind = "sql", query = "SELECT 1" }\n',
     ["kpis[0](id=k).green.op", "expected"]),
    ("customer-impact kpi that is not a kpi", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK + '[[kpis]]\nid = "orders-failing"\ntitle = "Orders failing"\nwindow = "realtime"\n'
     'green = { op = "<", value = 1 }\nred = { op = ">", value = 5 }\nsource = { kind = "sql", query = "SELECT 1" }\n'
     '[report]\ncustomer_impact_kpi = "order-failures"\n',
     ["runbook.toml", "report.customer_impact_kpi", "'order-failures'", "orders-failing"]),
    ("unknown placeholder in a url", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.replace('url = "{urls.supabase}/health"', 'url = "{urls.supabase}/health?release={release}"'),
     ["runbook.toml", "checklist.sections[0].items[0].url", "{release}", "{version}"]),
    ("provider placeholder in a checklist item", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.replace('url = "{urls.supabase}/health"', 'url = "{urls.supabase}/{provider}/health"'),
     ["items[0].url", "{provider}", "not a placeholder here"]),
    ("placeholder inside sql", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.replace("WHERE state <> 'closed'", "WHERE state <> 'closed' AND env = '{environment}'"),
     ["items[1].query", "bound parameters", "{environment}"]),
    ("several databases and an item that names none", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.replace('main = "database_dsn"', 'main = "database_dsn"\nreplica = "database_dsn"'),
     ["checklist item no-open-breakers", "needs database = one of main, replica"]),
    ("a report metric naming no item", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK + '[report]\nmetrics = [{ title = "MTTR", item = "mttr" }]\n',
     ["report.metrics", "'mttr'"]),
    ("auth naming a secret the environment lacks", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.replace('url = "{urls.supabase}/health"', 'url = "{urls.supabase}/health"\nauth = { bearer = "service_key" }'),
     ["environment.secrets.service_key", "required by the runbook", "checklist item api, auth"]),
    ("auth with neither bearer nor apikey", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK.replace('url = "{urls.supabase}/health"', 'url = "{urls.supabase}/health"\nauth = {}'),
     ["items[0](id=api).auth", "bearer, apikey or both"]),
    ("the burst's own key missing from the environment", GOOD_CONFIG.replace('burst_api_key = "SUPABASE_BURST_KEY"\n', ""), None,
     ["environment.secrets.burst_api_key", "required by the runbook", "rate-limits"]),
    ("a view without its query", GOOD_CONFIG.replace('"default"', '"runbook.toml"'),
     MINIMAL_RUNBOOK + '[views.breakers]\npoll_s = 5\n', ["views.breakers.query", "is required"]),
    ("a shared journal on a database the runbook lacks", GOOD_CONFIG + '[journal]\nstore = "postgres"\ndatabase = "control"\n',
     None, ["journal.database", "'control'", "defined: main"]),
    ("a shared journal on a secret the environment lacks", GOOD_CONFIG + '[journal]\nstore = "postgres"\ndsn_secret = "control_dsn"\n',
     None, ["journal.dsn_secret", "'control_dsn' is not in [environment.secrets]"]),
    ("a shared journal with two databases", GOOD_CONFIG + '[journal]\nstore = "postgres"\ndatabase = "main"\ndsn_secret = "database_dsn"\n',
     None, ["journal", "database or dsn_secret, not both"]),
    ("an unknown journal store", GOOD_CONFIG + '[journal]\nstore = "s3"\n', None, ["journal.store", "'file' or 'postgres'"]),
    ("a shared journal behind a transaction pooler", GOOD_CONFIG.replace("production = false", 'production = false\npooler = "transaction"')
     + '[journal]\nstore = "postgres"\n', None,
     ["journal.store", "use session mode (port 5432) or a direct connection", 'pooler = "transaction"']),
]


def test_a_shared_journal_on_the_transaction_pooler_port_is_refused_in_one_line(tmp_path: Path) -> None:
    config = GOOD_CONFIG.replace('runbook = "default"', 'runbook = "default"\nenv_file = "secrets.env"')
    path = write(tmp_path, config + '[journal]\nstore = "postgres"\n', None)
    (tmp_path / "secrets.env").write_text("CR_DATABASE_DSN=postgresql://postgres.abc:pw@aws-0.pooler.supabase.com:6543/postgres\n")
    for command in (["validate", "--config", str(path)], ["--config", str(path), "--write"], ["status", "--config", str(path)]):
        result = subprocess.run([sys.executable, "-m", "controlroom", *command], capture_output=True, text=True,
                                timeout=60, env={k: v for k, v in os.environ.items() if k != "CR_DATABASE_DSN"})
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "port 6543, Supabase's transaction pooler" in lines[0], lines
        assert "use session mode (port 5432) or a direct connection" in lines[0]
        assert "pw@" not in result.stderr  # the DSN is a secret


@pytest.mark.parametrize("name, config, runbook, fragments", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_a_bad_file_gives_one_line_and_exit_code_2(tmp_path: Path, name: str, config: str, runbook: str | None, fragments: list[str]) -> None:
    path = write(tmp_path, config, runbook)
    result = subprocess.run(
        [sys.executable, "-m", "controlroom", "validate", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("controlroom: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def test_a_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controlroom", "--config", str(tmp_path / "absent.toml")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "absent.toml: no such file" in result.stderr


def test_the_documented_minimal_runbook_is_valid(tmp_path: Path) -> None:
    docs = (Path(__file__).parent.parent / "docs" / "runbook.md").read_text()
    minimal = docs.split("## A minimal runbook to start from", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    config = GOOD_CONFIG.replace('runbook = "default"', 'runbook = "runbook.toml"').replace(
        'supabase = "https://example.supabase.co"', 'api = "https://api.example"'
    )
    loaded = load_config(write(tmp_path, config, minimal))
    assert loaded.runbook.name == "payments API release"
    assert [item.id for _, item in loaded.runbook.items()] == ["api", "no-open-breakers", "on-call"]


def test_env_file_that_is_not_text_is_one_config_error(tmp_path: Path) -> None:
    (tmp_path / "secrets.env").write_bytes(b"KEY=\xff\xfe\n")
    path = write(tmp_path, 'env_file = "secrets.env"\n' + GOOD_CONFIG)
    result = subprocess.run(
        [sys.executable, "-m", "controlroom", "validate", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "env_file" in result.stderr and "not UTF-8" in result.stderr and "Traceback" not in result.stderr


def test_home_in_a_runbook_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "rb.toml").write_text(MINIMAL_RUNBOOK)
    monkeypatch.setenv("HOME", str(home))
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    loaded = load_config(write(config_dir, GOOD_CONFIG.replace('runbook = "default"', 'runbook = "~/rb.toml"')))
    assert loaded.runbook.name == "tiny"


@pytest.mark.parametrize("kind, extra", [
    ("prometheus", 'query = "up"\npass_when = { op = ">", value = 0 }'),
    ("alert_rules", 'rules = ["Up"]'),
])
def test_a_prometheus_url_is_a_checked_template(tmp_path: Path, kind: str, extra: str) -> None:
    item = 'kind = "http"\nurl = "{urls.supabase}/health"'
    assert item in MINIMAL_RUNBOOK
    runbook = MINIMAL_RUNBOOK.replace(item, f'kind = "{kind}"\nurl = "{{urls.prometheus}}"\n{extra}')
    config = GOOD_CONFIG.replace('runbook = "default"', 'runbook = "runbook.toml"')
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, config, runbook))
    assert "environment.urls.prometheus" in str(raised.value), raised.value
    loaded = load_config(write(tmp_path, config, runbook.replace("{urls.prometheus}", "{urls.metrics}")))
    assert loaded.runbook.items()[0][1].kind == kind


# -- URLs: read as httpx reads them, without importing httpx before the first frame ----------


def httpx_problem(value: str) -> str | None:
    """What url_problem said when it asked httpx itself (before issue 13 moved httpx's import
    out of the control room's start-up)."""
    import httpx

    try:
        url = httpx.URL(value)
        if url.scheme not in {"http", "https"}:
            return "scheme"
        if not url.host:
            return "host"
    except (httpx.InvalidURL, ValueError) as error:  # idna's errors are ValueErrors
        return str(error)
    return "credentials" if url.userinfo else None


URL_PIECES = ["http", "https", "HTTPS", "ftp", ":", "//", "/", "@", "[", "]", "::1", "127.0.0.1", "999.1.1.1", "1.2.3",
              "example.com", "ex ample", "bücher.de", "xn--bcher-kva.de", "xn--", "?", "#", "%", "%41", "80", "99999",
              "-1", "user", "pw", ".", "..", "\\", "\t", "\x7f", " ", "ß", "☃"]


@pytest.mark.parametrize(("url", "accepted"), [
    ("https://example.supabase.co", True), ("http://127.0.0.1:8080/api?x=1#y", True), ("http://[::1]:9090/", True),
    ("https://bücher.de/", True), ("https://xn--bcher-kva.de", True), ("HTTPS://Example.COM", True),
    ("http://@example.com", True), ("http://example.com:/", True),
    ("ftp://example.com", False), ("example.com", False), ("http://", False), ("http:///path", False),
    ("http://user:pw@example.com", False), ("http://:@example.com", False), ("http://example.com:port", False),
    ("http://999.1.1.1", False), ("http://[::1]x/", False), ("http://[:::1]/", False), ("http://exa\tmple.com", False),
    ("http://xn--a.com", False), ("http://1.2.3[::1]a", False), ("http://example.com:99999", False),
])
def test_url_problem_answers_as_httpx_did(url: str, accepted: bool) -> None:
    from controlroom.config.models import url_problem

    assert (url_problem(url) is None) == accepted
    if url != "http://example.com:99999":  # httpx takes any number (the connection fails later)
        assert (httpx_problem(url) is None) == accepted


def test_whatever_url_problem_accepts_httpx_reads_with_that_scheme_and_host() -> None:
    """Accepted here means httpx parses it, http(s), with a host and no credentials: the
    probes, the feeds and the notifiers never meet a config URL their client refuses."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from controlroom.config.models import url_problem

    @settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(["http://", "https://", "http:", "HTTP://", ""]), st.lists(st.sampled_from(URL_PIECES),
                                                                                      max_size=10).map("".join))
    def accepted_alike(scheme: str, rest: str) -> None:
        url = scheme + rest
        if url_problem(url) is None:
            assert httpx_problem(url) is None, url

    accepted_alike()
