"""The sandbox's Slack Web API: `chat.postMessage` with a bot token, one channel, threads.

As Slack answers (docs.slack.dev, chat.postMessage): HTTP 200 for every answer of the method
itself, `{"ok": true, "channel", "ts", "message"}` or `{"ok": false, "error": CODE}`; HTTP 429
with Retry-After only when rate limited (here: an injected fault). A JSON body must carry the
token in `Authorization: Bearer`; a form body may carry it as `token`. A JSON body without a
charset gets Slack's `missing_charset` warning. Every call is recorded in the `slack_api` sink,
with the `ts` it was given.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from controlroom.sandbox.http.sinks import SinkRecorder, fault_response

CHANNEL_ID = "C0SANDBOX01"
CHANNEL_NAME = "incidents"
TEAM_ID = "T0SANDBOX01"
BOT_ID = "B0SANDBOX01"
BOT_USER_ID = "U0SANDBOX01"
APP_ID = "A0SANDBOX01"
SINK = "slack_api"

TEXT_MAX = 40_000        # Slack truncates beyond this; the API refuses with msg_too_long
BLOCKS_MAX = 50          # blocks in one message
SECTION_TEXT_MAX = 3000
HEADER_TEXT_MAX = 150
FIELDS_MAX = 10
FIELD_TEXT_MAX = 2000
CONTEXT_ELEMENTS_MAX = 10
BLOCK_ID_MAX = 255
BLOCK_TYPES = frozenset({"actions", "context", "divider", "file", "header", "image", "input", "markdown",
                         "rich_text", "section", "table", "video"})
TEXT_TYPES = ("plain_text", "mrkdwn")
TS = re.compile(r"^\d{9,10}\.\d{6}$")


class SlackWebApi:
    """One workspace with one channel (#incidents, CHANNEL_ID) and its messages, by ts."""

    def __init__(self, recorder: SinkRecorder, bot_token: str, clock: Callable[[], float] = time.time) -> None:
        self.recorder = recorder
        self.bot_token = bot_token
        self.clock = clock
        self.messages: dict[str, dict[str, Any]] = {}  # ts -> message, replies included
        self._last_ts = 0  # microseconds; every ts is later than the one before

    async def method(self, request: Request) -> Response:
        name = request.path_params["method"]
        if name != "chat.postMessage":
            return JSONResponse({"ok": False, "error": "unknown_method"})
        raw = await request.body()
        args, token, warnings = _arguments(request, raw)
        fault = self.recorder.take_fault(SINK)
        if fault is not None:
            response = fault_response(SINK, fault)
            self._record(request, args, fault.status, json.loads(response.body), "injected fault")
            return response
        answer = self._post(args, token)
        if warnings:
            answer["warning"] = ",".join(warnings)
            answer.setdefault("response_metadata", {})["warnings"] = warnings
        self._record(request, args, 200, answer, None if answer["ok"] else answer["error"])
        return JSONResponse(answer)

    def _record(self, request: Request, args: dict[str, Any] | None, status: int, answer: dict[str, Any],
                reason: str | None) -> None:
        """One shape for every call: what was posted (ts, thread) is null unless it was."""
        ok = answer["ok"]
        self.recorder.record(
            SINK, request, _shown(args), status, reason, accepted=ok,
            ok=ok, error=answer.get("error"), channel=answer.get("channel"), ts=answer.get("ts"),
            thread_ts=(args or {}).get("thread_ts") if ok else None,
            reply_broadcast=bool((args or {}).get("reply_broadcast")) if ok else None,
        )

    def _post(self, args: dict[str, Any] | None, token: str | None) -> dict[str, Any]:
        if not token:
            return _refused("not_authed")
        if not hmac.compare_digest(token.encode(), self.bot_token.encode()):
            return _refused("invalid_auth")
        if args is None:
            return _refused("invalid_json")
        if _channel_id(args.get("channel")) is None:
            return _refused("channel_not_found")
        problem = _arguments_problem(args)
        if problem is not None:
            return problem
        thread_ts = args.get("thread_ts")
        if thread_ts is not None:
            if not isinstance(thread_ts, str) or not TS.match(thread_ts):
                return _refused("invalid_thread_ts", messages=[f"[ERROR] {str(thread_ts)[:40]} is not a valid thread_ts"])
            parent = self.messages.get(thread_ts)
            if parent is None or "thread_ts" in parent:  # a reply's ts is no thread
                return _refused("thread_not_found")
        ts = self._next_ts()
        message = {"user": BOT_USER_ID, "type": "message", "ts": ts, "bot_id": BOT_ID, "app_id": APP_ID,
                   "text": args.get("text") or "", "team": TEAM_ID}
        if args.get("blocks"):
            message["blocks"] = args["blocks"]
        if thread_ts is not None:
            message.update(thread_ts=thread_ts, parent_user_id=BOT_USER_ID)
            if args.get("reply_broadcast"):
                message["subtype"] = "thread_broadcast"
            self.messages[thread_ts].setdefault("reply_count", 0)
            self.messages[thread_ts]["reply_count"] += 1
        self.messages[ts] = message
        return {"ok": True, "channel": CHANNEL_ID, "ts": ts, "message": dict(message)}

    def _next_ts(self) -> str:
        micros = max(int(self.clock() * 1_000_000), self._last_ts + 1)
        self._last_ts = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _arguments(request: Request, raw: bytes) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """(the method's arguments or None when unreadable, the token, warnings) from a JSON or a
    form body, as Slack reads them."""
    content_type = request.headers.get("content-type", "")
    bearer = _bearer(request)
    if content_type.startswith("application/json"):
        warnings = [] if "charset" in content_type else ["missing_charset"]
        try:
            args = json.loads(raw) if raw else {}
        except ValueError:
            return None, bearer, warnings
        return (args if isinstance(args, dict) else None), bearer, warnings
    try:
        form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return None, bearer, []
    token = bearer or form.pop("token", None)
    form.pop("token", None)
    if "reply_broadcast" in form:
        form["reply_broadcast"] = form["reply_broadcast"].lower() in ("true", "1")
    return form, token, []


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _shown(args: dict[str, Any] | None) -> dict[str, Any] | None:
    """The arguments as recorded: a token passed in the body is a secret, never kept."""
    return None if args is None else {k: v for k, v in args.items() if k != "token"}


def _channel_id(channel: Any) -> str | None:
    if channel in (CHANNEL_ID, CHANNEL_NAME, f"#{CHANNEL_NAME}"):
        return CHANNEL_ID
    return None


def _refused(error: str, *, messages: list[str] | None = None, errors: list[str] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"ok": False, "error": error}
    if errors:
        answer["errors"] = errors
    if messages:
        answer["response_metadata"] = {"messages": messages}
    return answer


def _arguments_problem(args: dict[str, Any]) -> dict[str, Any] | None:
    """The first thing Slack would refuse in the message's content, or None."""
    text, blocks = args.get("text"), args.get("blocks")
    if isinstance(blocks, str):  # form bodies, and JSON bodies that send it encoded
        try:
            args["blocks"] = blocks = json.loads(blocks) if blocks else None
        except ValueError:
            return _refused("invalid_blocks_format")
    if "reply_broadcast" in args and not isinstance(args["reply_broadcast"], bool):
        return _refused("invalid_arguments", messages=["[ERROR] expected boolean for argument `reply_broadcast`"])
    if text is not None and not isinstance(text, str):
        return _refused("invalid_arguments", messages=["[ERROR] expected string for argument `text`"])
    if not text and not blocks and not args.get("attachments"):
        return _refused("no_text")
    if text and len(text) > TEXT_MAX:
        return _refused("msg_too_long")
    if blocks:
        errors = blocks_errors(blocks)
        if errors:
            return _refused("invalid_blocks", errors=errors, messages=[f"[ERROR] {e}" for e in errors])
    return None


def blocks_errors(blocks: Any) -> list[str]:
    """Block Kit, lightly: a list of at most 50 objects of a known type; sections, headers
    and context elements with text objects of the right type and length. Each error ends
    with its JSON pointer, as Slack's do."""
    if not isinstance(blocks, list):
        return ["must provide an array [json-pointer:/blocks]"]
    if len(blocks) > BLOCKS_MAX:
        return [f"must provide an array with no more than {BLOCKS_MAX} items [json-pointer:/blocks]"]
    errors: list[str] = []
    for n, block in enumerate(blocks):
        where = f"/blocks/{n}"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            errors.append(f"unsupported type: {block.get('type') if isinstance(block, dict) else block!r} [json-pointer:{where}/type]")
            continue
        block_id = block.get("block_id")
        if block_id is not None and (not isinstance(block_id, str) or len(block_id) > BLOCK_ID_MAX):
            errors.append(f"must be a string of at most {BLOCK_ID_MAX} characters [json-pointer:{where}/block_id]")
        errors.extend(_block_errors(block, where))
    return errors


def _block_errors(block: dict[str, Any], where: str) -> list[str]:
    kind = block["type"]
    if kind == "section":
        if "text" not in block and "fields" not in block:
            return [f"must provide text or fields [json-pointer:{where}]"]
        errors = _text_errors(block["text"], f"{where}/text", SECTION_TEXT_MAX) if "text" in block else []
        fields = block.get("fields")
        if fields is not None:
            if not isinstance(fields, list) or len(fields) > FIELDS_MAX:
                errors.append(f"must provide an array with no more than {FIELDS_MAX} items [json-pointer:{where}/fields]")
            else:
                for n, item in enumerate(fields):
                    errors.extend(_text_errors(item, f"{where}/fields/{n}", FIELD_TEXT_MAX))
        return errors
    if kind == "header":
        return _text_errors(block.get("text"), f"{where}/text", HEADER_TEXT_MAX, types=("plain_text",))
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= CONTEXT_ELEMENTS_MAX:
            return [f"must provide an array of 1 to {CONTEXT_ELEMENTS_MAX} items [json-pointer:{where}/elements]"]
        return [error for n, element in enumerate(elements)
                if not (isinstance(element, dict) and element.get("type") == "image")
                for error in _text_errors(element, f"{where}/elements/{n}", SECTION_TEXT_MAX)]
    return []


def _text_errors(obj: Any, where: str, limit: int, *, types: tuple[str, ...] = TEXT_TYPES) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in types:
        return [f"must be a text object of type {' or '.join(types)} [json-pointer:{where}/type]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be a non-empty string [json-pointer:{where}/text]"]
    if len(text) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{where}/text]"]
    return []
