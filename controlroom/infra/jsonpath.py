"""A very small JSON path: `$`, then `.key` and `[index]` steps (`$.data.p95_ms`,
`$.items[0].value`, `$["odd key"]`). Enough to point at one number in an answer; no
wildcards, filters or slices."""

from __future__ import annotations

import json
import re
from typing import Any

_STEP = re.compile(r"""\.(?P<key>[A-Za-z_][A-Za-z0-9_-]*)|\[(?P<index>-?\d+)\]|\[(?P<quoted>"(?:[^"\\]|\\.)*")\]""")


class PathNotFound(LookupError):
    """The path does not lead to a value; the message names where it stopped and what was there."""


def parse_path(path: str) -> tuple[str | int, ...]:
    """The steps of `path`; ValueError saying what is wrong with it."""
    if not path.startswith("$"):
        raise ValueError(f"a JSON path starts with $ (like $.data.p95_ms), got {path!r}")
    steps: list[str | int] = []
    at = 1
    while at < len(path):
        match = _STEP.match(path, at)
        if match is None:
            raise ValueError(f"JSON path {path!r}: cannot read {path[at:]!r} (use .key, [index] or [\"key\"])")
        if match["key"] is not None:
            steps.append(match["key"])
        elif match["index"] is not None:
            steps.append(int(match["index"]))
        else:
            steps.append(json.loads(match["quoted"]))
        at = match.end()
    return tuple(steps)


def show_path(steps: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", s)
                         else f"[{json.dumps(s)}]" for s in steps)


def resolve(document: Any, path: str) -> Any:
    """The value at `path` in `document`; PathNotFound naming the step that failed and what
    the document had there."""
    steps = parse_path(path)
    node = document
    for depth, step in enumerate(steps):
        where = show_path(steps[:depth])
        if isinstance(step, int):
            if not isinstance(node, list):
                raise PathNotFound(f"{path}: {where} is {_kind(node)}, not a list")
            if not -len(node) <= step < len(node):
                raise PathNotFound(f"{path}: {where} has {len(node)} element(s), no [{step}]")
            node = node[step]
        else:
            if not isinstance(node, dict):
                raise PathNotFound(f"{path}: {where} is {_kind(node)}, not an object")
            if step not in node:
                keys = ", ".join(list(node)[:8]) or "none"
                raise PathNotFound(f"{path}: {where} has no key {step!r} (its keys: {keys})")
            node = node[step]
    return node


def _kind(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return f"{type(value).__name__ if value is not None else 'null'} {text[:40]}"
