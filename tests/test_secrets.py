"""Secrets: found by logical name, scrubbed from any text, whatever their shape."""

from __future__ import annotations

from controlroom.infra.identity import current_operator
from controlroom.config.secrets import REDACTED, SecretStore


def store(**values: str) -> SecretStore:
    names = {name: name.upper() for name in values}
    return SecretStore(names, {name.upper(): value for name, value in values.items()}, {})


def test_a_dsn_password_is_redacted_alone_and_inside_the_dsn() -> None:
    secrets = store(dsn="postgresql://app:pa%40ss-w0rd@db.internal:5432/pos")
    text = "connect postgresql://app:pa%40ss-w0rd@db.internal:5432/pos failed; password pa@ss-w0rd rejected"
    redacted = secrets.redact(text)
    assert "pa%40ss-w0rd" not in redacted and "pa@ss-w0rd" not in redacted
    assert redacted.count(REDACTED) == 2


def test_a_password_urlsplit_refuses_does_not_crash_and_is_still_redacted() -> None:
    secrets = store(dsn="postgresql://app:Xy[9z!pw@db:5432/pos")  # urlsplit: "Invalid IPv6 URL"
    assert "Xy[9z!pw" not in secrets.redact("auth failed for Xy[9z!pw")


def test_a_webhook_path_is_redacted() -> None:
    secrets = store(slack="https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXX")
    assert "T000/B000/XXXXXXXXXXXX" not in secrets.redact("POST /services/T000/B000/XXXXXXXXXXXX -> 404")


def test_short_values_are_not_scrubbed_from_ordinary_words() -> None:
    assert store(pin="ab").redact("about abc") == "about abc"


def test_operator_is_the_real_user_with_the_ssh_address() -> None:
    operator = current_operator({"USER": "mallory", "SSH_CLIENT": "192.0.2.4 5000 22",
                                 "CONTROLROOM_HOST": "bastion 2\x1b[31m"}, uid=0)
    assert operator.user == "root" and operator.address == "192.0.2.4"
    # The host label keeps letters, digits and . _ : - only: other operators see it (no escape, no markup).
    assert operator.as_record() == {"user": "root", "ssh_client": "192.0.2.4", "host": "bastion231m"}
    assert str(operator) == "root@bastion231m"
    assert current_operator({}, uid=0).host  # the machine's own name by default
