"""Placeholders in runbook strings: `{urls.NAME}`, `{environment}`, `{version}`, `{provider}`.

    names_in("{urls.api}/v/{version}")                  # ["urls.api", "version"]
    fill("{urls.api}/v/{version}", values, quote=url_quote)

Which names a string may use depends on where it is (`allowed_names`): `{version}` is the
release being deployed (known once a deployment starts), `{provider}` only in rollback steps
and messages. `{{` and `}}` are literal braces; `${VAR}` (shell) is left alone. SQL never
gets a placeholder as text: its values are bound parameters (`$1` with `params`), so a
placeholder inside a query is a configuration error (`sql_problem`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from urllib.parse import quote

from controlroom.errors import ControlRoomError

# `{name}` not preceded by `$` (shell's ${VAR}); `{{` / `}}` are escapes for literal braces.
_TOKEN = re.compile(r"\{\{|\}\}|(?<!\$)\{([A-Za-z_][A-Za-z0-9_.-]*)\}")
URL_PREFIX = "urls."

# Where a string is, by the last part of its key, and what it may use.
CHECK_NAMES = frozenset({"environment", "version"})
STEP_NAMES = frozenset({"environment", "version", "provider"})
# Keys whose strings are templates: URLs, commands, messages (and a JSON body's values).
TEMPLATE_KEYS = frozenset({"url", "issue_url", "rotate_url", "probe_url", "events_url", "run", "message",
                           "command", "deploy_command", "rollback_command"})
TEMPLATE_PARENTS = frozenset({"json_body"})
SQL_KEYS = frozenset({"query", "count_query", "location_query", "rotations_query", "breakers_query",
                      "providers_query"})
KNOWN_NAMES = STEP_NAMES


class MissingValue(ControlRoomError):
    """A placeholder whose value is not known here (e.g. {version} before a deployment)."""

    exit_code = 2

    def __init__(self, name: str) -> None:
        when = {"version": "known once a deployment has started", "provider": "chosen when a rollback step needs one"}
        super().__init__(f"{{{name}}} has no value here ({when.get(name, 'not defined')})")
        self.name = name


def names_in(text: str) -> list[str]:
    """The placeholder names used in `text`, in order (escapes are not placeholders)."""
    return [m.group(1) for m in _TOKEN.finditer(text) if m.group(1)]


def fill(
    text: str,
    values: Mapping[str, str],
    urls: Mapping[str, str],
    *,
    quote_value: Callable[[str], str] = lambda value: value,
    quote_url: Callable[[str], str] | None = None,
    keep_missing: bool = False,
) -> str:
    """`text` with its placeholders replaced: `{urls.NAME}` from `urls`, the others from
    `values`, each passed through its quoting. MissingValue when one has no value, unless
    `keep_missing` (a message: the placeholder stays as written)."""
    url_quoting = quote_url or quote_value

    def replace(match: re.Match[str]) -> str:
        token, name = match.group(0), match.group(1)
        if name is None:
            return token[0]  # {{ -> {, }} -> }
        if name.startswith(URL_PREFIX):
            base = urls.get(name.removeprefix(URL_PREFIX))
            if base is None:
                if keep_missing:
                    return token
                raise MissingValue(name)
            return url_quoting(base)
        value = values.get(name)
        if not value:
            if keep_missing:
                return token
            raise MissingValue(name)
        return quote_value(value)

    return _TOKEN.sub(replace, text)


def url_quote(value: str) -> str:
    """A value inside a URL (a path segment or a query parameter): percent-encoded."""
    return quote(value, safe="")


def allowed_names(key: str) -> frozenset[str] | None:
    """What the string at runbook key `key` may use; None when it is not a template."""
    parts = key.replace("]", "").replace("[", ".").split(".")
    last = parts[-1]
    is_template = last in TEMPLATE_KEYS or any(p in TEMPLATE_PARENTS for p in parts[:-1])
    if not is_template:
        return None
    if parts[0] in ("deployment", "rollback", "environment"):
        return STEP_NAMES
    return CHECK_NAMES


def template_problem(key: str, text: str, urls: Mapping[str, str]) -> str | None:
    """Why the string at `key` uses a placeholder it may not, or None."""
    allowed = allowed_names(key)
    if allowed is None:
        return sql_problem(key, text)
    for name in names_in(text):
        if name.startswith(URL_PREFIX):
            continue  # checked against the environment's urls by the loader
        if name not in allowed:
            usable = ", ".join("{" + n + "}" for n in sorted(allowed)) + ", {urls.NAME}"
            return (f"uses {{{name}}}, which is not a placeholder here (usable: {usable}; "
                    f"write {{{{ and }}}} for literal braces)")
    return None


def sql_problem(key: str, text: str) -> str | None:
    """A placeholder inside SQL: values go in as bound parameters, never as text."""
    last = key.replace("]", "").replace("[", ".").split(".")[-1]
    if last not in SQL_KEYS:
        return None
    used = [n for n in names_in(text) if n in KNOWN_NAMES or n.startswith(URL_PREFIX)]
    if used:
        return (f"SQL takes values as bound parameters, not placeholders: write $1 … and list them in "
                f"params (found {{{used[0]}}})")
    return None
