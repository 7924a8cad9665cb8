"""The `:` command line's words without the UI (controlroom.release.command_line): what a
line means, the one-line errors, and what Tab completes."""

from __future__ import annotations

import pytest

from controlroom.release.command_line import CommandLineError, Names, Parsed, complete, parse

NAMES = Names(
    views=(("checklist", "c"), ("deploy", "d"), ("kpis", "k"), ("breakers", "b"), ("rollback", "R")),
    items=("on-call", "oncall-probe", "db-health"),
    manual_items=("on-call",),
    steps=("verify-alerts", "verify-api", "switch-version"),
)


def test_views_by_name_and_by_their_keys() -> None:
    assert parse(":rollback", NAMES) == Parsed("rollback", view=True)
    assert parse("R", NAMES) == Parsed("rollback", view=True)
    assert parse(":r", NAMES) == Parsed("rollback", view=True)
    assert parse(" :c ", NAMES) == Parsed("checklist", view=True)


def test_commands_with_ids_and_a_reason() -> None:
    assert parse(":attest on-call", NAMES) == Parsed("attest", ("on-call",))
    assert parse("notmet on-call", NAMES) == Parsed("notmet", ("on-call",))
    assert parse(":skip verify-alerts alerts are muted  today", NAMES) == Parsed(
        "skip", ("verify-alerts", "alerts are muted  today"))
    assert parse(":skip verify-alerts", NAMES) == Parsed("skip", ("verify-alerts",))  # the dialog asks why
    assert parse(":run verify-api", NAMES) == Parsed("run", ("verify-api",))
    assert parse(":rerun", NAMES) == Parsed("rerun")
    assert parse(":rerun db-health", NAMES) == Parsed("rerun", ("db-health",))
    assert parse(":q", NAMES) == Parsed("quit") == parse(":quit", NAMES)
    for word in ("report", "help", "keys", "shell"):
        assert parse(f":{word}", NAMES) == Parsed(word)


@pytest.mark.parametrize(("line", "said"), [
    (":rollbak", "unknown command :rollbak (did you mean rollback?)"),
    (":atest on-call", "unknown command :atest (did you mean attest?)"),
    (":zzzz", "unknown command :zzzz"),
    (":attest on-cal", "no checklist item 'on-cal' in the runbook (did you mean on-call?)"),
    (":run verify-alert", "no step 'verify-alert' in the runbook (did you mean verify-alerts?)"),
    (":attest", ":attest MANUAL-ITEM-ID: which manual item? (Tab lists them)"),
    (":run verify-api now", ":run STEP-ID: 'now' is one word too many"),
    (":rollback now", ":rollback takes nothing after it"),
    (":", "type a command"),
])
def test_a_line_that_names_nothing_is_one_line_naming_it(line: str, said: str) -> None:
    with pytest.raises(CommandLineError) as raised:
        parse(line, NAMES)
    assert str(raised.value).startswith(said)
    assert "\n" not in str(raised.value)


def test_tab_completes_commands_then_ids() -> None:
    assert complete("roll", NAMES).line == "rollback "
    assert complete(":roll", NAMES).line == ":rollback "
    both = complete("re", NAMES)
    assert both.candidates == ("report", "rerun") and both.line == "re"
    assert complete("attest ", NAMES).candidates == ("on-call",)  # manual items only
    assert complete("attest ", NAMES).line == "attest on-call "
    assert complete("rerun o", NAMES).candidates == ("on-call", "oncall-probe")
    assert complete("rerun o", NAMES).line == "rerun on"
    assert complete("skip verify-a", NAMES).candidates == ("verify-alerts", "verify-api")
    assert complete("skip verify-al", NAMES).line == "skip verify-alerts "
    assert complete("skip verify-alerts mut", NAMES).candidates == ()  # a reason is free text
    assert complete("nothing", NAMES).candidates == ()
    assert "checklist" in complete("", NAMES).candidates and "q" not in complete("", NAMES).candidates
