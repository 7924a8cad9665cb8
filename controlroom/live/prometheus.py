"""Reading a number out of a Prometheus HTTP API answer (`/api/v1/query`), and a history
out of a `/api/v1/query_range` answer.

Every result type is understood: `vector` (one number per series), `scalar`, `matrix` (the
latest sample of each series) and `string`. Several series are an error naming how many,
unless the runbook says how to reduce them (`reduce = "max" | "min" | "sum" | "avg"`): a
number picked from one series at random is not a measurement. The answer's `warnings` and
`infos` travel with the number; a 4xx's `error` is the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

REDUCERS = {
    "max": max,
    "min": min,
    "sum": sum,
    "avg": lambda values: sum(values) / len(values),
}


class PrometheusAnswerError(ValueError):
    """The answer holds no usable number; the message says why."""


@dataclass(frozen=True)
class PrometheusNumber:
    value: float | None  # None: no series (no data in the window)
    series: int
    notes: tuple[str, ...] = ()  # the answer's warnings and infos


def read_answer(body: Any, *, reduce: str | None = None) -> PrometheusNumber:
    if not isinstance(body, dict):
        raise PrometheusAnswerError("not a JSON object")
    notes = tuple(f"{kind[:-1]}: {text}" for kind in ("warnings", "infos")
                  for text in body.get(kind) or [] if isinstance(text, str))
    if body.get("status") != "success":
        raise PrometheusAnswerError(f"query failed: {body.get('errorType', '')} {body.get('error', body.get('status'))}".strip())
    data = body.get("data")
    if not isinstance(data, dict):
        raise PrometheusAnswerError("no data in the answer")
    kind, result = data.get("resultType"), data.get("result")
    if kind in ("scalar", "string"):
        return PrometheusNumber(_sample(result), 1, notes)
    if kind == "vector":
        values = [_sample(series.get("value")) for series in _series(result)]
    elif kind == "matrix":
        values = [_sample((series.get("values") or [None])[-1]) for series in _series(result)]
    else:
        raise PrometheusAnswerError(f"unknown resultType {kind!r}")
    if not values:
        return PrometheusNumber(None, 0, notes)
    if len(values) == 1:
        return PrometheusNumber(values[0], 1, notes)
    if reduce is None:
        raise PrometheusAnswerError(f"{len(values)} series answered; the runbook's source must aggregate them "
                                    "(sum by (), max(…)) or say reduce = \"max\" | \"min\" | \"sum\" | \"avg\"")
    present = [value for value in values if value is not None]
    return PrometheusNumber(REDUCERS[reduce](present) if present else None, len(values), notes)


def read_range(body: Any, *, reduce: str | None = None) -> list[tuple[float, float]]:
    """A `query_range` answer (a matrix) as (time, value) pairs, oldest first: one series as
    it is, several reduced per timestamp as `reduce` says (else an error naming how many);
    NaN and ±Inf samples are left out."""
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", body.get("status")) if isinstance(body, dict) else "not a JSON object"
        raise PrometheusAnswerError(f"query failed: {error}")
    data = body.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        kind = data.get("resultType") if isinstance(data, dict) else None
        raise PrometheusAnswerError(f"expected a matrix, got resultType {kind!r}")
    series = _series(data.get("result"))
    if len(series) > 1 and reduce is None:
        raise PrometheusAnswerError(f"{len(series)} series answered; the runbook's source must aggregate them "
                                    "or say reduce = \"max\" | \"min\" | \"sum\" | \"avg\"")
    by_time: dict[float, list[float]] = {}
    for one in series:
        for sample in one.get("values") or []:
            value = _sample(sample)
            if value is not None:
                by_time.setdefault(float(sample[0]), []).append(value)
    combine = REDUCERS[reduce] if reduce else (lambda values: values[0])
    return [(moment, combine(values)) for moment, values in sorted(by_time.items())]


def _series(result: Any) -> Sequence[dict[str, Any]]:
    if not isinstance(result, list) or not all(isinstance(series, dict) for series in result):
        raise PrometheusAnswerError("result is not a list of series")
    return result


def _sample(sample: Any) -> float | None:
    """[timestamp, "value"] → the value; NaN and ±Inf are no number."""
    if not isinstance(sample, list) or len(sample) != 2:
        raise PrometheusAnswerError("a sample is not [time, value]")
    try:
        value = float(sample[1])
    except (TypeError, ValueError):
        raise PrometheusAnswerError(f"the sample {str(sample[1])[:40]!r} is not a number") from None
    return value if math.isfinite(value) else None
