"""The runbook and environment model: strict pydantic models for the TOML files.

Two files describe a control room: a *config* file (which environment: its name, whether it
is production, its base URLs, the names of the environment variables that hold its secrets,
and which runbook to use) and a *runbook* file (the checklist, the verdict rules, the
deployment phases, the KPIs, the rollback plans, the escalation ladder and the notification
targets). Unknown keys are errors everywhere, and no model accepts a secret's value: secrets
are referred to by a logical name that the environment maps to an environment variable.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, Union
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

ENV_VAR_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
SLUG = r"^[a-z0-9][a-z0-9_-]*$"
_IPV4_STYLE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$")  # httpx validates such a host as IPv4

Slug = Annotated[str, Field(pattern=SLUG, max_length=64)]
Minutes = Annotated[float, Field(gt=0, le=24 * 60)]
TimeoutSeconds = Annotated[float, Field(gt=0, le=600)]
NonEmpty = Annotated[str, Field(min_length=1)]


def _env_var_name(value: str) -> str:
    if not ENV_VAR_NAME.match(value):
        raise ValueError(
            "expected the name of an environment variable (like SLACK_WEBHOOK_URL), "
            "not the secret itself"
        )
    return value


EnvVarName = Annotated[str, AfterValidator(_env_var_name)]


def url_problem(value: str) -> str | None:
    """Why `value` is not a usable http(s) URL, or None. Credentials inside a URL would be
    shown wherever the URL is, so they belong in a secret.

    Parsed with the standard library, by httpx's rules (the client every URL goes to): its
    length limit, no control characters, a port that is a number, IPv4 / IPv6 / IDNA hosts
    valid. Importing httpx here would put ~50 ms before the control room's first frame;
    tests/test_config_validation.py checks that whatever is accepted here httpx reads alike."""
    if len(value) > 65536:
        return "expected an http:// or https:// URL (too long)"
    control = next((char for char in value if char.isascii() and not char.isprintable()), None)
    if control is not None:
        return f"expected an http:// or https:// URL (a control character, {control!r}, at position {value.index(control)})"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
        host = parts.hostname or ""
        hostport = parts.netloc.rpartition("@")[2]  # after the last "@", as httpx splits it
        if hostport.startswith("["):  # an IPv6 address: up to the last "]", then a port or nothing
            end = hostport.rfind("]")
            if hostport[end + 1:end + 2] not in ("", ":"):
                raise ValueError(f"invalid host and port {hostport!r}")
            ipaddress.IPv6Address(hostport[1:end])
        elif "[" in hostport or "]" in hostport:
            raise ValueError(f"invalid host {hostport!r}")
        elif _IPV4_STYLE.match(host):
            ipaddress.IPv4Address(host)
        elif not host.isascii() or host.startswith("xn--"):  # an IDNA host name, as httpx reads it
            import idna  # httpx's own IDNA rules (its dependency); only for such a host name

            idna.decode(idna.encode(host) if not host.isascii() else host)  # IDNAError is a ValueError
    except ValueError as error:
        return f"expected an http:// or https:// URL ({error})"
    if parts.scheme not in {"http", "https"}:
        return "expected an http:// or https:// URL"
    if not host:
        return "expected a URL with a host name"
    if parts.netloc.rpartition("@")[0]:  # user info, even an empty password (":@"), as httpx reads it
        return "must not carry credentials (user:password@); use a secret"
    return None


class Model(BaseModel):
    """Strict: unknown keys are errors and no value is silently coerced ("5" is not 5).
    Validators are built on first use (`defer_build`), not at import: loading a config builds
    those of the file's models in one go (ConfigFile, Runbook); the others, used alone, when
    first used. Importing the TUI thus costs ~50 ms less."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


# -- thresholds ------------------------------------------------------------------------


class Threshold(Model):
    """A comparison such as `{ op = ">", value = 98 }` (the seed's ">98 %")."""

    op: Literal["<", "<=", ">", ">=", "=="]
    value: float

    def holds(self, measured: float) -> bool:
        return {
            "<": measured < self.value,
            "<=": measured <= self.value,
            ">": measured > self.value,
            ">=": measured >= self.value,
            "==": measured == self.value,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


# -- environment -----------------------------------------------------------------------


class Environment(Model):
    name: NonEmpty
    production: bool = False
    description: str = ""
    # Base URLs, referred to in the runbook as {urls.NAME}.
    urls: dict[Slug, NonEmpty] = Field(default_factory=dict)
    # Logical secret name -> the NAME of the environment variable that holds the secret.
    secrets: dict[Slug, EnvVarName] = Field(default_factory=dict)
    # Modifying actions are refused unless the app is started with --write, or this is true.
    write_by_default: bool = False
    # How a version is deployed to this environment; {version} is replaced by the tag.
    deploy_command: str = ""
    # The logical secrets the deploy and rollback commands get, under their variable names;
    # no other secret is in their environment.
    deploy_secrets: list[Slug] = Field(default_factory=list)
    # How a rollback deploys the previous stable version ({version} is replaced by the tag);
    # empty: the deploy_command is used for rollbacks too.
    rollback_command: str = ""
    # The previous stable version of this environment, when it is known here (e.g. from the
    # CD system); wins over [rollback.previous_version] of the runbook. Empty: that finds it.
    previous_version: str = ""
    # What the database DSNs go through: "transaction" (pgbouncer, Supavisor in transaction
    # mode, Supabase's port 6543): consecutive statements may reach different server
    # connections, so asyncpg's statement cache is off; "session" (Supavisor in session mode,
    # port 5432 of the pooler) or "none" (a direct connection): prepared statements work.
    pooler: Literal["transaction", "session", "none"] = "none"
    # The older spelling of pooler = "transaction"; kept as an alias.
    transaction_pooler: bool = False

    @model_validator(mode="after")
    def _pooler_alias(self) -> "Environment":
        if self.transaction_pooler and self.pooler == "session":
            raise ValueError('transaction_pooler = true contradicts pooler = "session" (set only pooler)')
        if self.transaction_pooler or self.pooler == "transaction":  # one truth for both spellings
            object.__setattr__(self, "pooler", "transaction")
            object.__setattr__(self, "transaction_pooler", True)
        return self

    @property
    def statement_cache_off(self) -> bool:
        """Transaction mode (either spelling): no prepared statement may be cached."""
        return self.pooler == "transaction" or self.transaction_pooler

    @property
    def pooler_chosen(self) -> bool:
        """Whether the config says what its DSNs go through (either spelling)."""
        return bool({"pooler", "transaction_pooler"} & self.model_fields_set)

    @model_validator(mode="after")
    def _deploy_secrets_are_declared(self) -> "Environment":
        unknown = [name for name in self.deploy_secrets if name not in self.secrets]
        if unknown:
            raise ValueError(f"deploy_secrets: {', '.join(unknown)} not in [environment.secrets]")
        return self

    @field_validator("urls")
    @classmethod
    def _urls_are_http(cls, urls: dict[str, str]) -> dict[str, str]:
        for name, value in urls.items():
            problem = url_problem(value)
            if problem:
                raise ValueError(f"urls.{name}: {problem}")
        return {name: value.rstrip("/") for name, value in urls.items()}


class JournalStore(Model):
    """Where a release's journal lives. "file" (the default): a file on this machine, no
    database needed. "postgres": the shared store, one journal per release for every control
    room open on the environment, from any machine (one drives, the others watch live); each
    record is mirrored to the local file as well."""

    store: Literal["file", "postgres"] = "file"
    # The database the shared store lives in: a runbook [databases] name (the platform's own
    # database; optional when the runbook defines exactly one), or instead `dsn_secret`, a
    # secret of [environment.secrets] holding the DSN of a separate control database.
    database: Slug | None = None
    dsn_secret: Slug | None = None

    @model_validator(mode="after")
    def _one_database(self) -> "JournalStore":
        if self.database is not None and self.dsn_secret is not None:
            raise ValueError("give database or dsn_secret, not both")
        return self

    @property
    def shared(self) -> bool:
        return self.store == "postgres"


class ConfigFile(Model):
    """The file given to `controlroom --config`."""

    # "default" is the POS release runbook shipped with controlroom; otherwise a path,
    # relative to this file.
    runbook: NonEmpty = "default"
    # Optional KEY=VALUE file (relative to this file) consulted for secrets that are not in
    # the process environment; the real environment wins.
    env_file: str | None = None
    environment: Environment
    journal: JournalStore = Field(default_factory=JournalStore)


# -- checklist items -------------------------------------------------------------------


class ItemBase(Model):
    id: Slug
    title: NonEmpty
    description: str = ""
    # What a failure of this item does to the verdict ("info": shown, decides nothing).
    on_fail: Literal["no-go", "delayed", "info"] = "no-go"
    # The decision-matrix criterion this item answers, as the runbook words it.
    criterion: str = ""
    # What a warning does ("delayed": the seed's minor degradation / non-critical issues).
    on_warn: Literal["delayed", "info"] = "delayed"
    warn_criterion: str = ""
    # Required items must pass (or be attested) before the verdict can be GO.
    required: bool = True
    timeout_s: TimeoutSeconds = 10.0


class Judged(Model):
    """How a measured number is judged (SQL `expect = "value"`, HTTP `value`, Prometheus):
    fail_when → fail, pass_when → pass, otherwise warn; no number → when_null."""

    pass_when: Threshold | None = None
    fail_when: Threshold | None = None
    unit: str = ""
    # The status when there is no number (NULL, no row, no series, NaN).
    when_null: Literal["pass", "warn", "fail"] = "warn"


class Auth(Model):
    """The credentials a request carries, by logical secret name: `bearer` is sent as
    `Authorization: Bearer <secret>` (a JWT: Supabase's anon or service_role key, what an edge
    function's gateway verifies), `apikey` as the `apikey` header (any key, the
    `sb_publishable_…` / `sb_secret_…` keys included, which are not JWTs). Either or both."""

    bearer: Slug | None = None
    apikey: Slug | None = None

    @model_validator(mode="after")
    def _something(self) -> "Auth":
        if self.bearer is None and self.apikey is None:
            raise ValueError("set bearer, apikey or both (logical secret names)")
        return self

    def secret_names(self) -> list[str]:
        return [name for name in (self.bearer, self.apikey) if name is not None]


class HttpItem(ItemBase, Judged):
    kind: Literal["http"]
    method: Literal["GET", "POST", "HEAD", "PUT"] = "GET"
    url: NonEmpty
    # Header name -> logical secret name, e.g. { apikey = "supabase_api_key" }.
    secret_headers: dict[str, Slug] = Field(default_factory=dict)
    auth: Auth | None = None
    json_body: dict[str, object] | None = None
    expect_status: list[int] = Field(default_factory=lambda: [200], min_length=1)
    max_latency_ms: Annotated[float, Field(gt=0)] | None = None
    # Top-level JSON fields that must equal these values to pass.
    expect_json: dict[str, object] = Field(default_factory=dict)
    # Top-level JSON fields that, when equal to these values, make the item a warning.
    warn_json: dict[str, object] = Field(default_factory=dict)
    warn_latency_ms: Annotated[float, Field(gt=0)] | None = None
    # A JSON path into the body ("$.data.p95_ms": `$`, `.key`, `[index]`) whose number is
    # judged by pass_when / fail_when / when_null.
    value: str | None = None

    @field_validator("value")
    @classmethod
    def _path_parses(cls, value: str | None) -> str | None:
        if value is not None:
            from controlroom.infra.jsonpath import parse_path

            parse_path(value)
        return value

    @model_validator(mode="after")
    def _value_needs_threshold(self) -> "HttpItem":
        if self.value is not None and self.pass_when is None:
            raise ValueError("value needs pass_when (and optionally fail_when)")
        if self.value is None and (self.pass_when or self.fail_when):
            raise ValueError("pass_when / fail_when judge a number: set value = \"$.path.to.it\"")
        return self


class PrometheusItem(ItemBase, Judged):
    """An instant query's number, judged like an SQL value: GET {url}/api/v1/query."""

    kind: Literal["prometheus"]
    url: NonEmpty  # the Prometheus base URL; /api/v1/query is appended
    query: NonEmpty
    # Several series answered: reduced this way; without it, several series are an error.
    reduce: Literal["max", "min", "sum", "avg"] | None = None
    secret_headers: dict[str, Slug] = Field(default_factory=dict)
    auth: Auth | None = None

    @model_validator(mode="after")
    def _needs_threshold(self) -> "PrometheusItem":
        if self.pass_when is None:
            raise ValueError("a prometheus item needs pass_when (and optionally fail_when)")
        return self


class AlertRulesItem(ItemBase):
    """The alerting rules that must be loaded in Prometheus (GET {url}/api/v1/rules?type=alert):
    each named rule present with health "ok"; a firing one is `firing` (fail or warn)."""

    kind: Literal["alert_rules"]
    url: NonEmpty  # the Prometheus base URL; /api/v1/rules is appended
    rules: list[NonEmpty] = Field(min_length=1)
    firing: Literal["fail", "warn"] = "fail"
    secret_headers: dict[str, Slug] = Field(default_factory=dict)
    auth: Auth | None = None


class FunctionMarker(Model):
    """What marks an answer as the function's own, not a gateway's in front of it: a header
    (`{ header = "x-pos-function", value = "pos-credentials-rotation" }`) or a top-level JSON
    field of the body (`{ json = "function", value = "..." }`) with this value."""

    header: str | None = Field(default=None, min_length=1)
    json_field: str | None = Field(default=None, alias="json", min_length=1)
    value: NonEmpty

    model_config = ConfigDict(populate_by_name=True)  # merged with Model's

    @model_validator(mode="after")
    def _one_place(self) -> "FunctionMarker":
        if (self.header is None) == (self.json_field is None):
            raise ValueError("set exactly one of header or json (where the function's mark is)")
        return self

    def describe(self) -> str:
        return f"header {self.header}: {self.value}" if self.header else f'JSON "{self.json_field}": {self.value}'


class TokenZombieItem(ItemBase):
    """The seed's security gate: a rotated-out token must get 401, fast, with no retries, no
    rotation attempted with it, and the circuit breakers unchanged."""

    kind: Literal["token_zombie"]
    issue_url: NonEmpty  # POST {location_id} with the API key -> {access_token}
    rotate_url: NonEmpty  # POST with Bearer token -> rotates; the old token is now a zombie
    probe_url: str = ""  # where the zombie is presented; defaults to rotate_url
    api_key_secret: Slug
    # Sent with every request of the test: `apikey` on all of them, `bearer` on the issue
    # request only (rotate and present carry the token itself as the bearer).
    auth: Auth | None = None
    # A rotated-out token kept in an environment variable, for environments where the probe
    # must not mint one; when set, issue/rotate are skipped.
    zombie_token_secret: Slug | None = None
    # The database the three queries below run on (a [databases] name); optional when the
    # runbook defines only one.
    database: Slug | None = None
    # The location to test with: first column of the first row.
    location_query: NonEmpty
    # How many rotations are recorded for a token: one row, one number; $1 is the token's
    # fingerprint (the first 16 hex digits of its SHA-256).
    rotations_query: NonEmpty
    # The circuit breakers to compare before and after: rows of (location_id, state,
    # failure_count); $1 is the location id. Return the location's own breaker and every
    # breaker that is not closed.
    breakers_query: NonEmpty
    max_latency_ms: Annotated[float, Field(gt=0)] = 100.0
    max_attempts: Annotated[int, Field(ge=1, le=5)] = 1
    # Minting a zombie rotates a real location's token: against production the probe does not
    # mint (without zombie_token_secret it is skipped, to be attested) unless allowed here.
    allow_mint_in_production: bool = False
    # What marks the function's own answer; a 401 without it came from a gateway in front of
    # the function (e.g. Supabase's JWT check) and is an error, never a pass. Without a
    # marker any 401 counts, which cannot tell the two apart.
    function_marker: FunctionMarker | None = None

    def refused_in(self, environment: Environment) -> bool:
        """Whether minting and rotating a token (for a real location) must not happen here."""
        return environment.production and not self.zombie_token_secret and not self.allow_mint_in_production


class SqlItem(ItemBase, Judged):
    kind: Literal["sql"]
    database: Slug | None = None  # a [databases] name; optional with only one
    query: NonEmpty
    # "no_rows": every row returned is a problem (listed as evidence).
    # "value": the first column of the first row is judged against pass_when / fail_when.
    expect: Literal["no_rows", "value"] = "no_rows"
    # How many offending rows to name in the evidence.
    list_limit: Annotated[int, Field(ge=1, le=50)] = 5

    @model_validator(mode="after")
    def _value_needs_threshold(self) -> "SqlItem":
        if self.expect == "value" and self.pass_when is None:
            raise ValueError("expect = 'value' needs pass_when (and optionally fail_when)")
        return self


class CorsItem(ItemBase):
    kind: Literal["cors"]
    url: NonEmpty
    foreign_origin: NonEmpty = "https://attacker.invalid"
    allowed_origin: str | None = None
    auth: Auth | None = None  # sent with the GET (never with the preflights, which carry none)


class RateLimitItem(ItemBase):
    kind: Literal["rate_limit"]
    url: NonEmpty
    secret_headers: dict[str, Slug] = Field(default_factory=dict)
    # Give the burst a key of its own (a client identity of its own at the limiter), so that
    # it uses up its own limit and never the one the other probes share.
    auth: Auth | None = None
    # Send at most this many requests; a 429 must come before the last one.
    burst: Annotated[int, Field(ge=2, le=1000)] = 100
    # Bursting a production API is itself a risk: refused there unless allowed here.
    allow_in_production: bool = False

    def refused_in(self, environment: Environment) -> bool:
        """Whether this burst must not run against this environment."""
        return environment.production and not self.allow_in_production


class CommandItem(ItemBase):
    kind: Literal["command"]
    run: NonEmpty  # run by /bin/sh in cwd; output kept (tail, secrets redacted)
    cwd: str = "."
    expect_exit: int = 0
    # Logical secrets exported to the command under their variable names; no other secret
    # of the environment reaches it.
    secrets: list[Slug] = Field(default_factory=list)


class ManualItem(ItemBase):
    kind: Literal["manual"]
    prompt: str = ""  # what the operator attests to


class PagerDutyOncallItem(ItemBase):
    """On-call coverage, asked of PagerDuty's REST API (GET /oncalls): every escalation level
    in `levels` has someone on call for the whole of the next `hours`. An environment that
    defines neither the url's {urls.NAME} nor `token_secret` does not probe it: an operator
    attests it (`prompt`), as a manual item."""

    kind: Literal["pagerduty_oncall"]
    # The whole GET /oncalls URL, the escalation policy included: usually "{urls.NAME}" whose
    # environment value is https://api.pagerduty.com/oncalls?escalation_policy_ids[]=PXXXXXX.
    url: NonEmpty
    token_secret: Slug  # a REST API key, sent as `Authorization: Token token=<key>`
    levels: list[Annotated[int, Field(ge=1, le=20)]] = Field(default_factory=lambda: [1, 2, 3, 4], min_length=1)
    hours: Annotated[float, Field(gt=0, le=24 * 90)] = 2.0
    prompt: str = ""  # what an operator attests to where PagerDuty is not configured

    @field_validator("levels")
    @classmethod
    def _distinct_levels(cls, levels: list[int]) -> list[int]:
        if len(set(levels)) != len(levels):
            raise ValueError("levels must not repeat a level")
        return sorted(levels)

    def unconfigured_in(self, environment: Environment) -> list[str]:
        """What the environment lacks for this item (`urls.NAME`, `secrets.NAME`) when it
        defines none of it — the item is then attested, not probed; [] when it defines any
        (what is still missing is a configuration error, as for any item)."""
        from controlroom.config.placeholders import URL_PREFIX, names_in

        urls = [name for name in names_in(self.url) if name.startswith(URL_PREFIX)]
        needed = [*urls, f"secrets.{self.token_secret}"]
        missing = [name for name in urls if name.removeprefix(URL_PREFIX) not in environment.urls]
        missing += [] if self.token_secret in environment.secrets else [f"secrets.{self.token_secret}"]
        return missing if missing == needed else []


ChecklistItem = Annotated[
    Union[HttpItem, PrometheusItem, AlertRulesItem, TokenZombieItem, SqlItem, CorsItem, RateLimitItem,
          CommandItem, ManualItem, PagerDutyOncallItem],
    Field(discriminator="kind"),
]


class Section(Model):
    id: Slug
    title: NonEmpty
    # Counts towards the "infrastructure health" share of the GO criteria.
    counts_for_health: bool = False
    items: list[ChecklistItem] = Field(min_length=1)


class Checklist(Model):
    sections: list[Section] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> "Checklist":
        _require_unique("checklist section", [s.id for s in self.sections])
        _require_unique("checklist item", [i.id for s in self.sections for i in s.items])
        return self


class Verdict(Model):
    """GO needs every required item passed or attested and the health share at or above
    this; see docs/runbook.md for how the share is computed."""

    health_min_percent: Annotated[float, Field(ge=0, le=100)] = 95.0


# -- actions shared by deployment steps and rollback steps -----------------------------


class CommandAction(Model):
    kind: Literal["command"]
    run: NonEmpty
    cwd: str = "."
    timeout_s: TimeoutSeconds = 120.0
    modifying: bool = True
    # Logical secrets exported to the command (under their variable names); none by default.
    secrets: list[Slug] = Field(default_factory=list)


class ProbeAction(Model):
    kind: Literal["probe"]
    items: list[Slug] = Field(min_length=1)  # checklist item ids to run again


class SqlAction(Model):
    kind: Literal["sql"]
    database: Slug | None = None  # a [databases] name; optional with only one
    query: NonEmpty  # parameterised: $1, $2 ... bound from `params`, never interpolated
    params: list[Literal["provider", "version"]] = Field(default_factory=list)
    # Shown before a modifying query runs: how many rows it will touch.
    count_query: str | None = None
    modifying: bool = True
    timeout_s: TimeoutSeconds = 30.0


class NotifyAction(Model):
    kind: Literal["notify"]
    channels: list[Literal["slack", "pagerduty", "statuspage"]] = Field(min_length=1)
    message: NonEmpty  # may use {version}, {provider}, {environment}
    event: Literal["trigger", "resolve", "info"] = "info"


class ManualAction(Model):
    kind: Literal["manual"]
    prompt: str = ""


class DeployAction(Model):
    """Run the environment's deploy_command for the version being released."""

    kind: Literal["deploy"]
    timeout_s: TimeoutSeconds = 300.0


class SwitchVersionAction(Model):
    """Deploy the previous stable version (see [rollback.previous_version])."""

    kind: Literal["switch_version"]
    timeout_s: TimeoutSeconds = 300.0


Action = Annotated[
    Union[CommandAction, ProbeAction, SqlAction, NotifyAction, ManualAction, DeployAction, SwitchVersionAction],
    Field(discriminator="kind"),
]


class Step(Model):
    id: Slug
    title: NonEmpty
    action: Action


class Phase(Model):
    id: Slug
    title: NonEmpty
    minutes: Minutes
    steps: list[Step] = Field(min_length=1)


DEFAULT_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,63}$"


class Deployment(Model):
    target_minutes: Minutes = 15.0
    # After a successful finish: the real-time KPIs and the breakers are watched this long;
    # a KPI off its target (or red, breach_on = "red") for breach_polls polls in a row, or a
    # breaker opening, raises the alarm and recommends `watch_rollback_plan` (default: the
    # first plan).
    watch_minutes: Annotated[float, Field(ge=0, le=24 * 60)] = 30.0
    breach_polls: Annotated[int, Field(ge=1, le=100)] = 3
    breach_on: Literal["target", "red"] = "target"
    watch_rollback_plan: Slug | None = None
    phases: list[Phase] = Field(min_length=1)
    # What a version (a tag) must look like before a deployment of it may start.
    version_pattern: str = DEFAULT_VERSION_PATTERN

    @field_validator("version_pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return pattern

    @model_validator(mode="after")
    def _unique_ids(self) -> "Deployment":
        _require_unique("deployment phase", [p.id for p in self.phases])
        _require_unique("deployment step", [s.id for p in self.phases for s in p.steps])
        return self


# -- KPIs ------------------------------------------------------------------------------


class SqlSource(Model):
    kind: Literal["sql"]
    database: Slug | None = None  # a [databases] name; optional with only one
    query: NonEmpty  # one row, one numeric column


class PrometheusSource(Model):
    kind: Literal["prometheus"]
    url: NonEmpty  # base URL; /api/v1/query is appended
    query: NonEmpty
    # Several series answered: reduced this way; without it, several series are an error.
    reduce: Literal["max", "min", "sum", "avg"] | None = None


KpiSource = Annotated[Union[SqlSource, PrometheusSource], Field(discriminator="kind")]


class Kpi(Model):
    id: Slug
    title: NonEmpty
    window: Literal["realtime", "24h"]
    unit: str = ""
    green: Threshold  # green when this holds
    red: Threshold  # red when this holds (and green does not); amber otherwise
    source: KpiSource
    poll_s: Annotated[float, Field(ge=1, le=3600)] = 15.0
    timeout_s: TimeoutSeconds = 5.0


# -- rollback --------------------------------------------------------------------------


class PreviousVersion(Model):
    """How the previous stable version is found: the command's first output line, or
    `fallback` when the command fails or prints nothing."""

    command: str = "git describe --tags --abbrev=0 HEAD^"
    repository: str = "."
    fallback: str = ""


class RollbackPlan(Model):
    id: Slug
    title: NonEmpty
    target_minutes: Minutes  # the plan should be done by then
    min_minutes: Minutes | None = None  # a graceful plan's lower bound, for display
    steps: list[Step] = Field(min_length=1)
    # Checklist items probed to verify the rollback once its steps are done. Empty: the
    # plan's own probe steps verify it; a plan with none runs the deployment's probe items.
    verify: list[Slug] = Field(default_factory=list)


class Rollback(Model):
    previous_version: PreviousVersion = Field(default_factory=PreviousVersion)
    # The providers an operator picks from when a step needs one ({provider}, $1): the
    # distinct values `providers_query` returns (first column), else this list.
    providers: list[NonEmpty] = Field(default_factory=list)
    providers_query: str = ""
    providers_database: Slug | None = None  # a [databases] name; optional with only one
    plans: list[RollbackPlan] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> "Rollback":
        _require_unique("rollback plan", [p.id for p in self.plans])
        return self


# -- escalation and notifications ------------------------------------------------------


# A Slack mention the runbook writes as Slack's own syntax: <@U0123>, <!subteam^S0123>, or
# @channel / @here (made <!channel> / <!here>). Operator text is escaped; this is not.
SLACK_MENTION = r"^(<[@#][A-Z0-9]+>|<!subteam\^[A-Z0-9]+(\|[^<>]+)?>|<!(channel|here)>|@channel|@here)$"


class EscalationLevel(Model):
    level: Annotated[int, Field(ge=1)]
    title: NonEmpty
    from_minutes: Annotated[float, Field(ge=0)]
    contacts: list[NonEmpty] = Field(min_length=1)
    # Who `e` pages when this level is the next one: a PagerDuty service (its routing key's
    # logical secret), a Slack mention, or both. Neither: `e` cannot page this level.
    pagerduty_routing_key_secret: Slug | None = None
    slack_mention: Annotated[str, Field(pattern=SLACK_MENTION)] | None = None

    @property
    def pageable(self) -> bool:
        return bool(self.pagerduty_routing_key_secret or self.slack_mention)


class Escalation(Model):
    levels: list[EscalationLevel] = Field(min_length=1)
    # Where people look during an incident (status channel, status page, customer comms).
    channels: list[NonEmpty] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ascending(self) -> "Escalation":
        starts = [level.from_minutes for level in self.levels]
        if starts != sorted(starts) or len(set(starts)) != len(starts):
            raise ValueError("levels must have strictly increasing from_minutes")
        if starts[0] != 0:
            raise ValueError("the first level must start at from_minutes = 0")
        return self


GiveUpMinutes = Annotated[float, Field(gt=0, le=24 * 60)]


class SlackTarget(Model):
    webhook_secret: Slug  # logical secret holding the incoming-webhook URL
    channel: str = "#incidents"
    # With a bot token (its logical secret set), messages go through chat.postMessage to
    # `channel` and one deployment is one thread; unset, through the incoming webhook.
    bot_token_secret: Slug | None = None
    api_url: NonEmpty = "https://slack.com/api"
    timeout_s: TimeoutSeconds = 5.0
    give_up_after_minutes: GiveUpMinutes = 5.0  # retried until then, then shown as given up


class PagerDutyTarget(Model):
    routing_key_secret: Slug
    events_url: NonEmpty = "https://events.pagerduty.com/v2/enqueue"
    # Change events (deploy markers on the service's incident page); empty: events_url's
    # /v2/enqueue made /v2/change/enqueue.
    change_url: str = ""
    source: NonEmpty = "controlroom"
    # Shown in PagerDuty as the event's sender, with a link (e.g. the runbook's wiki page).
    client: str = "controlroom"
    client_url: str = ""
    timeout_s: TimeoutSeconds = 5.0
    give_up_after_minutes: GiveUpMinutes = 10.0  # PagerDuty asks for minutes of patience on a 429


class StatuspageTarget(Model):
    """Atlassian Statuspage: an incident opened when a rollback starts, resolved when it is
    verified, with the rolled-back provider's component."""

    # The page's API URL, ending in /v1/pages/<page id> (environment-specific: {urls.NAME}).
    page_url: NonEmpty
    api_key_secret: Slug
    # provider -> component name; a provider not named here gets the component whose name
    # contains the provider's name (case-insensitive), if there is one.
    components: dict[NonEmpty, NonEmpty] = Field(default_factory=dict)
    incident_name: NonEmpty = "{environment}: degraded POS integrations, rolling back to {version}"
    timeout_s: TimeoutSeconds = 5.0
    give_up_after_minutes: GiveUpMinutes = 10.0


class Notifications(Model):
    slack: SlackTarget | None = None
    pagerduty: PagerDutyTarget | None = None
    statuspage: StatuspageTarget | None = None
    # The report's address in alert and change events' links: a URL template ({environment},
    # {release}), or empty for the report file's path.
    report_url: str = ""
    # Ignored (kept so older runbooks load): retries now last each target's give_up_after_minutes.
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 4


class ReportMetric(Model):
    """A line of the report's Metrics section: a checklist item's latest result. A value item
    (expect = "value", or a number measured) shows its number and unit; a row-listing item
    shows how many rows it found followed by `count_label` ("0 open")."""

    title: NonEmpty
    item: Slug  # a checklist item id
    count_label: str = "found"


class Report(Model):
    """The post-deployment report's fixed parts."""

    post_actions: list[NonEmpty] = Field(default_factory=list)
    # The Metrics section's lines after the Token Zombie test(s) and POS Integration Health.
    metrics: list[ReportMetric] = Field(default_factory=list)
    # The KPI (an id in [[kpis]]) that says how customers are hurt, e.g. the share of locations
    # affected: measured once whenever the POS fleet is journaled, and shown in the report's
    # POS Integration Health line with its threshold. None: the line shows the fleet only.
    customer_impact_kpi: Slug | None = None


# -- live views ------------------------------------------------------------------------


class BreakersView(Model):
    """The Breakers screen: one row per circuit breaker, from `query`.

    Columns (by name): required `location_id`, `state` (closed | open | half_open; anything
    else is shown as it is and sorted last); optional `location_name` (else the id),
    `provider`, `failure_count`, `failure_threshold`, `window_minutes`, `changed_at`,
    `opened_at` (timestamps). A missing optional column is shown as "—"."""

    database: Slug | None = None  # a [databases] name; optional with only one
    query: NonEmpty
    poll_s: Annotated[float, Field(ge=1, le=3600)] = 5.0
    timeout_s: TimeoutSeconds = 5.0


class HealthView(Model):
    """The POS health screen: one row per provider (any grouping), from `query`.

    Columns (by name): required `provider`, `total`, `connected`; optional `disconnected`
    (else total − connected), `failing` (locations failing long enough to matter, e.g. > 4 h),
    `sync_success_percent`, `mttr_minutes`. A missing optional column is shown as "—"."""

    database: Slug | None = None  # a [databases] name; optional with only one
    query: NonEmpty
    # Shown even when the query returns no row for them (0 locations), in this order first.
    providers: list[NonEmpty] = Field(default_factory=list)
    poll_s: Annotated[float, Field(ge=1, le=3600)] = 10.0
    timeout_s: TimeoutSeconds = 5.0
    # The column headers of the optional columns, as the team words them.
    failing_title: str = "Failing"
    # Colours of sync success and MTTR: green when `green` holds, red when `red` does.
    sync_green: Threshold | None = None
    sync_red: Threshold | None = None
    mttr_green: Threshold | None = None
    mttr_red: Threshold | None = None
    description: str = ""  # shown in the screen's help


class Views(Model):
    """The live views besides the KPIs. A view that is not defined is not shown."""

    breakers: BreakersView | None = None
    health: HealthView | None = None


# -- the runbook -----------------------------------------------------------------------


class Runbook(Model):
    name: NonEmpty
    version: str = ""
    description: str = ""
    owner: str = ""
    emergency_contact: str = ""
    # Logical database name -> logical secret that holds its DSN (a secret: it has a password).
    databases: dict[Slug, Slug] = Field(default_factory=dict)
    checklist: Checklist
    verdict: Verdict = Field(default_factory=Verdict)
    deployment: Deployment
    kpis: list[Kpi] = Field(default_factory=list)
    rollback: Rollback
    views: Views = Field(default_factory=Views)
    escalation: Escalation
    notifications: Notifications = Field(default_factory=Notifications)
    report: Report = Field(default_factory=Report)

    @model_validator(mode="after")
    def _references_resolve(self) -> "Runbook":
        _require_unique("kpi", [k.id for k in self.kpis])
        item_ids = {item.id for section in self.checklist.sections for item in section.items}
        steps = [s for p in self.deployment.phases for s in p.steps]
        steps += [s for plan in self.rollback.plans for s in plan.steps]
        databases: list[tuple[str, str | None]] = [
            ("checklist item " + i.id, i.database) for _, i in self.items() if isinstance(i, (SqlItem, TokenZombieItem))
        ]
        databases += [("step " + s.id, s.action.database) for s in steps if isinstance(s.action, SqlAction)]
        databases += [("kpi " + k.id, k.source.database) for k in self.kpis if isinstance(k.source, SqlSource)]
        databases += [(f"views.{name}", view.database) for name, view in self.defined_views().items()]
        if self.rollback.providers_query:
            databases.append(("rollback.providers_query", self.rollback.providers_database))
        for where, database in databases:
            self.database(database, where=where)
        for step in steps:
            if isinstance(step.action, ProbeAction):
                unknown = sorted(set(step.action.items) - item_ids)
                if unknown:
                    raise ValueError(f"step {step.id!r} probes unknown checklist items: {', '.join(unknown)}")
        for plan in self.rollback.plans:
            unknown = sorted(set(plan.verify) - item_ids)
            if unknown:
                raise ValueError(f"rollback plan {plan.id!r} verifies unknown checklist items: {', '.join(unknown)}")
        for metric in self.report.metrics:
            if metric.item not in item_ids:
                raise ValueError(f"report.metrics: {metric.title!r} names unknown checklist item {metric.item!r}")
        watch_plan = self.deployment.watch_rollback_plan
        if watch_plan is not None and watch_plan not in {p.id for p in self.rollback.plans}:
            raise ValueError(f"deployment.watch_rollback_plan {watch_plan!r} is not a rollback plan id")
        for step in steps:
            action = step.action
            if isinstance(action, NotifyAction):
                missing = [c for c in action.channels if getattr(self.notifications, c) is None]
                if missing:
                    raise ValueError(f"step {step.id!r} notifies {', '.join(missing)}, which [notifications] does not configure")
        impact = self.report.customer_impact_kpi
        if impact is not None and impact not in {k.id for k in self.kpis}:
            known = ", ".join(k.id for k in self.kpis) or "none are defined"
            raise ValueError(f"report.customer_impact_kpi {impact!r} is not a [[kpis]] id (the KPIs: {known})")
        return self

    def database(self, name: str | None, *, where: str = "") -> str:
        """The [databases] name a query runs on: `name`, or the only database when it is None.
        ValueError (naming `where`) when that is not defined."""
        defined = ", ".join(sorted(self.databases)) or "none"
        if name is None:
            if len(self.databases) == 1:
                return next(iter(self.databases))
            if not self.databases:
                raise ValueError(f"{where} runs a query but [databases] defines no database")
            raise ValueError(f"{where} needs database = one of {defined} ([databases] defines several)")
        if name not in self.databases:
            raise ValueError(f"{where} uses database {name!r}, which [databases] does not define (defined: {defined})")
        return name

    def defined_views(self) -> dict[str, BreakersView | HealthView]:
        """The live views this runbook defines, by name ("breakers", "health")."""
        return {name: view for name in ("breakers", "health") if (view := getattr(self.views, name)) is not None}

    def customer_impact_kpi(self) -> Kpi | None:
        """The KPI [report] names as the customer-impact one, or None."""
        return next((k for k in self.kpis if k.id == self.report.customer_impact_kpi), None)

    def items(self) -> list[tuple[Section, ChecklistItem]]:
        return [(section, item) for section in self.checklist.sections for item in section.items]


def _require_unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for identifier in ids:
        if identifier in seen:
            raise ValueError(f"{what} id {identifier!r} is used twice")
        seen.add(identifier)
