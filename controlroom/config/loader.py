"""Reading config and runbook files: TOML → strict models → one clear error, or a Loaded."""

from __future__ import annotations

import shlex
import stat
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from controlroom.errors import ConfigError
from controlroom.config.models import ConfigFile, Environment, JournalStore, PagerDutyOncallItem, Runbook, url_problem
from controlroom.config.placeholders import URL_PREFIX, fill, names_in, template_problem, url_quote
from controlroom.config.secrets import SecretStore, read_env_file

DEFAULT_RUNBOOK = "default"
M = TypeVar("M", bound=BaseModel)
MAX_FILE_BYTES = 1024 * 1024  # no config, runbook or env file is this big; /dev/zero is
# What a URL is checked with at load time, where {version} and {provider} are not known yet.
SAMPLE_VALUES = {"version": "v1.0.0", "provider": "provider"}


@dataclass(frozen=True)
class LoadedConfig:
    """Everything the control room needs about one environment and its runbook."""

    config_path: Path
    runbook_source: str  # a path, or "default (built in)"
    environment: Environment
    runbook: Runbook
    secrets: SecretStore
    journal: JournalStore = JournalStore()

    def journal_dsn_secret(self) -> str:
        """The secret holding the shared journal store's DSN (store = "postgres")."""
        journal = self.journal
        if journal.dsn_secret is not None:
            return journal.dsn_secret
        return self.runbook.databases[self.runbook.database(journal.database, where="journal.database")]

    def journal_behind_transaction_pooler(self) -> str | None:
        """Why the shared store cannot work on its DSN (a transaction-mode pooler: neither
        advisory locks nor LISTEN/NOTIFY), or None. From the config and the DSN's port; the
        store also probes the connection itself when it opens."""
        from controlroom.infra.pg import SUPABASE_TRANSACTION_POOLER_PORT, dsn_ports

        if not self.journal.shared:
            return None
        secret = self.journal_dsn_secret()
        if self.journal.dsn_secret is None and self.environment.statement_cache_off:
            return (f'[environment] pooler = "transaction", and the shared journal uses database '
                    f"{self.runbook.database(self.journal.database)!r} through it")
        if self.secrets.has(secret) and SUPABASE_TRANSACTION_POOLER_PORT in dsn_ports(self.secrets.get(secret)):
            return f"its DSN ({secret}) uses port {SUPABASE_TRANSACTION_POOLER_PORT}, Supabase's transaction pooler"
        return None

    def pooler_warnings(self) -> list[str]:
        """Hints about the databases' pooler mode (port 6543 without `pooler` set), for the
        DSNs whose secrets are set; shown by `validate` and when the control room starts."""
        from controlroom.infra.pg import pooler_warnings

        dsns = {name: self.secrets.get(secret) for name, secret in self.runbook.databases.items()
                if self.secrets.has(secret)}
        return pooler_warnings(self.environment.pooler_chosen, dsns)

    def values(self, values: Mapping[str, str] | None = None) -> dict[str, str]:
        """The placeholder values known here: {environment}, and those given ({version},
        {provider})."""
        return {"environment": self.environment.name, **{k: v for k, v in (values or {}).items() if v}}

    def url(self, template: str, values: Mapping[str, str] | None = None) -> str:
        """A URL with its placeholders filled in: {urls.NAME} as the base URL, {environment}
        and the given values ({version}) percent-encoded, as a path segment or a query
        parameter. MissingValue when one is not known here."""
        return fill(template, self.values(values), self.environment.urls, quote_value=url_quote,
                    quote_url=lambda base: base)

    def shell(self, template: str, values: Mapping[str, str] | None = None, *, keep_missing: bool = False) -> str:
        """A command line with its placeholders filled in: {urls.NAME}, {environment} and the
        given values ({version}), each shell-quoted, so a value is one word however it is
        spelled (`&`, `;`, spaces). MissingValue when one is not known, unless `keep_missing`
        (a preview shows it as written)."""
        return fill(template, self.values(values), self.environment.urls, quote_value=shlex.quote,
                    keep_missing=keep_missing)

    def text(self, template: str, values: Mapping[str, str] | None = None) -> str:
        """A message or a JSON value with its placeholders filled in as they are; one whose
        value is not known here stays as written."""
        return fill(template, self.values(values), self.environment.urls, keep_missing=True)


def load_config(path: str | Path, *, environ: dict[str, str] | None = None, env_file: bool = True) -> LoadedConfig:
    """Read and validate a config file and its runbook; raise ConfigError on anything wrong.
    With env_file=False the secrets come from the environment alone, not from the config's
    env_file (a browser session of `controlroom serve`: its parent passed it what it needs)."""
    import os

    config_path = Path(path).expanduser()
    config = _parse(config_path, ConfigFile)
    if config.runbook == DEFAULT_RUNBOOK:
        runbook, runbook_source = load_default_runbook(), "default (built in)"
    else:
        runbook_path = config_path.parent / Path(config.runbook).expanduser()
        runbook, runbook_source = _parse(runbook_path, Runbook), str(runbook_path)
    _check_references(config_path, runbook_source, config.environment, runbook)

    file_values: dict[str, str] = {}
    if config.env_file and env_file:
        env_path = config_path.parent / Path(config.env_file).expanduser()
        try:
            _check_file(env_path)
            file_values = read_env_file(env_path)
        except ConfigError as error:
            raise ConfigError(config_path, "env_file", f"{env_path} {error.message}") from None
        except OSError as error:
            raise ConfigError(config_path, "env_file", f"cannot read {env_path}: {error.strerror}") from None
        except (UnicodeDecodeError, ValueError):
            raise ConfigError(config_path, "env_file", f"{env_path} is not UTF-8 KEY=VALUE text") from None
    secrets = SecretStore(config.environment.secrets, dict(os.environ if environ is None else environ), file_values)
    loaded = LoadedConfig(config_path, runbook_source, config.environment, runbook, secrets, config.journal)
    _check_journal(loaded)
    return loaded


def _check_journal(loaded: LoadedConfig) -> None:
    """[journal] store = "postgres": its database is defined, and not behind a transaction pooler."""
    from controlroom.infra.pg import TRANSACTION_POOLER_REFUSAL

    journal = loaded.journal
    if not journal.shared:
        return
    if journal.dsn_secret is not None and journal.dsn_secret not in loaded.environment.secrets:
        raise ConfigError(loaded.config_path, "journal.dsn_secret",
                          f"{journal.dsn_secret!r} is not in [environment.secrets]")
    try:
        loaded.journal_dsn_secret()
    except ValueError as error:
        raise ConfigError(loaded.config_path, "journal.database", str(error)) from None
    why = loaded.journal_behind_transaction_pooler()
    if why:
        raise ConfigError(loaded.config_path, "journal.store", f"{TRANSACTION_POOLER_REFUSAL} ({why})")


def load_default_runbook() -> Runbook:
    resource = resources.files("controlroom.config").joinpath("default_runbook.toml")
    return _validate(Path("default_runbook.toml"), tomllib.loads(resource.read_text("utf-8")), Runbook)


def load_runbook(path: str | Path) -> Runbook:
    return _parse(Path(path), Runbook)


def _check_file(path: Path) -> None:
    """A regular file of sane size: a FIFO would hang the read, /dev/zero would never end."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(path, None, "no such file") from None
    except OSError as error:
        raise ConfigError(path, None, f"cannot be read: {error.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(path, None, "is a directory, expected a file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(path, None, "is not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise ConfigError(path, None, f"is {info.st_size} bytes; expected at most {MAX_FILE_BYTES}")


def _parse(path: Path, model: type[M]) -> M:
    _check_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, "no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "is not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(path, None, f"cannot be read: {error.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, None, f"is not valid TOML: {error}") from None
    return _validate(path, data, model)


def _validate(path: Path, data: dict[str, Any], model: type[M]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = error.errors(include_url=False)
        first = problems[0]
        message = _explain(first)
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
        raise ConfigError(path, _key_path(data, first["loc"]), message) from None


def _explain(problem: dict[str, Any]) -> str:
    kind, message = problem["type"], problem["msg"]
    if kind == "missing":
        return "is required but missing"
    if kind == "extra_forbidden":
        return "is not a known key (check the spelling)"
    if kind in {"float_type", "float_parsing", "int_type", "int_parsing"}:
        return f"expected a number, got {problem['input']!r}"
    if kind == "string_type":
        return f"expected a string, got {problem['input']!r}"
    if kind == "bool_type":
        return f"expected true or false, got {problem['input']!r}"
    if kind in {"list_type", "dict_type", "model_type"}:
        expected = {"list_type": "a list", "dict_type": "a table", "model_type": "a table"}[kind]
        return f"expected {expected}, got {problem['input']!r}"
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    return f"expected {message[0].lower()}{message[1:]}".replace("expected input should be", "expected")


def _key_path(data: Any, loc: tuple[Any, ...]) -> str:
    """`checklist.sections[0].items[2]` — with the element's id when it has one, so the
    reader finds it without counting."""
    parts: list[str] = []
    node: Any = data
    for key in loc:
        if isinstance(key, int):
            identifier = node[key].get("id") if isinstance(node, list) and key < len(node) and isinstance(node[key], dict) else None
            parts.append(f"[{key}]" + (f"(id={identifier})" if identifier else ""))
            node = node[key] if isinstance(node, list) and key < len(node) else None
        elif isinstance(node, dict) and key in node:
            parts.append(f".{key}" if parts else str(key))
            node = node[key]
        elif isinstance(node, dict) and node.get("kind") == key:
            continue  # a discriminated union's tag, not a key the user wrote
        else:
            parts.append(f".{key}" if parts else str(key))
            node = None
    return "".join(parts)


def _check_references(config_path: Path, runbook_source: str, environment: Environment, runbook: Runbook) -> None:
    """Every {urls.X} and every secret the runbook names must exist in the environment —
    except those of an item this environment leaves to an operator's attestation (on-call
    coverage where PagerDuty is not configured)."""
    data = runbook.model_dump()
    attested = attested_instead(runbook, environment)
    skipped = {f"checklist.sections[{s}].items[{i}].url" for s, section in enumerate(runbook.checklist.sections)
               for i, item in enumerate(section.items) if item.id in attested}
    strings = [(runbook_source, key, text) for key, text in _strings(data) if key not in skipped]
    strings += [(config_path, f"environment.{key}", text) for key, text in _strings(environment.model_dump())
                if key in ("deploy_command", "rollback_command")]
    for source, key, text in strings:
        for name in names_in(text):
            if name.startswith(URL_PREFIX) and name.removeprefix(URL_PREFIX) not in environment.urls:
                raise ConfigError(
                    config_path, f"environment.{name}",
                    f"is required by the runbook ({runbook_source}, {key}) but not defined",
                )
        problem = template_problem(key, text, environment.urls)
        if problem:
            raise ConfigError(source, key, problem)
        if key.endswith(("url", "_url")) and text:
            values = {"environment": environment.name, **SAMPLE_VALUES}
            expanded = fill(text, values, environment.urls, quote_value=url_quote, quote_url=lambda base: base)
            problem = url_problem(expanded)
            if problem:
                raise ConfigError(source, key, f"{problem}: {expanded!r}")
    for key, secret in _secret_references(runbook, skip=attested):
        if secret not in environment.secrets:
            raise ConfigError(
                config_path, f"environment.secrets.{secret}",
                f"is required by the runbook ({runbook_source}, {key}) but not defined",
            )


def _strings(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(node, str):
        found.append((prefix, node))
    elif isinstance(node, dict):
        for key, value in node.items():
            found += _strings(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _strings(value, f"{prefix}[{index}]")
    return found


def attested_instead(runbook: Runbook, environment: Environment) -> dict[str, list[str]]:
    """Item id -> what the environment lacks, for the items it does not probe at all (a
    pagerduty_oncall item without its URL and token): an operator attests them instead."""
    return {item.id: missing for _, item in runbook.items()
            if isinstance(item, PagerDutyOncallItem) and (missing := item.unconfigured_in(environment))}


def _secret_references(runbook: Runbook, skip: Collection[str] = ()) -> list[tuple[str, str]]:
    refs = [(f"databases.{name}", secret) for name, secret in runbook.databases.items()]
    for section, item in runbook.items():
        where = f"checklist item {item.id}"
        if item.id in skip:
            continue
        for secret in getattr(item, "secret_headers", {}).values():
            refs.append((where, secret))
        if getattr(item, "auth", None) is not None:
            refs += [(f"{where}, auth", secret) for secret in item.auth.secret_names()]
        for attribute in ("api_key_secret", "zombie_token_secret", "token_secret"):
            if getattr(item, attribute, None):
                refs.append((where, getattr(item, attribute)))
        refs += [(where, secret) for secret in getattr(item, "secrets", [])]
    for plan_or_phase in [*runbook.deployment.phases, *runbook.rollback.plans]:
        for step in plan_or_phase.steps:
            refs += [(f"step {step.id}", secret) for secret in getattr(step.action, "secrets", [])]
    notifications = runbook.notifications
    if notifications.slack:
        refs.append(("notifications.slack", notifications.slack.webhook_secret))
        # (bot_token_secret is optional: unmapped or unset, Slack goes through the webhook)
    if notifications.pagerduty:
        refs.append(("notifications.pagerduty", notifications.pagerduty.routing_key_secret))
    if notifications.statuspage:
        refs.append(("notifications.statuspage", notifications.statuspage.api_key_secret))
    for level in runbook.escalation.levels:
        if level.pagerduty_routing_key_secret:
            refs.append((f"escalation level {level.level}", level.pagerduty_routing_key_secret))
    return refs
