"""One way to judge a measured number, for every item that measures one (SQL `expect =
"value"`, HTTP `value`, Prometheus): fail_when → fail, pass_when → pass, otherwise warn; no
number → when_null. The evidence shows the number with its unit and the threshold:
"412 ms (< 500 ms)", "712 ms (not < 500 ms, fails > 1000 ms)", "1200 ms (> 1000 ms: fails)".
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from controlroom.checks.base import Outcome, ProbeError, format_value
from controlroom.config.models import Judged


def judge_number(rule: Judged, raw: Any, *, what: str = "the value", label: str = "") -> Outcome:
    """`raw` judged by `rule`. `label` goes before the number ("p95 = "); `what` names where
    the number came from when it is not one."""
    unit = f" {rule.unit}" if rule.unit else ""
    if raw is None or (isinstance(raw, float) and not math.isfinite(raw)):
        shown = "no value (NULL)" if raw is None else f"no number ({raw})"
        return Outcome(rule.when_null, f"{label}{shown}", {"value": None})
    if isinstance(raw, bool) or not isinstance(raw, (int, float, Decimal)):
        raise ProbeError(f"expected a number in {what}, got {type(raw).__name__} {format_value(raw)!r}")
    value = float(raw)
    shown = f"{label}{format_value(raw)}{unit}"
    measured = {"value": value}
    assert rule.pass_when is not None  # the models guarantee it where a number is judged
    if rule.fail_when is not None and rule.fail_when.holds(value):
        return Outcome("fail", f"{shown} ({rule.fail_when}{unit}: fails)", measured)
    if rule.pass_when.holds(value):
        return Outcome("pass", f"{shown} ({rule.pass_when}{unit})", measured)
    limit = f", fails {rule.fail_when}{unit}" if rule.fail_when is not None else ""
    return Outcome("warn", f"{shown} (not {rule.pass_when}{unit}{limit})", measured)
