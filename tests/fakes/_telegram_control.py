"""JSON control API of the fake Telegram server, for drivers running in another process.

A benchmark or soak driver starts `python -m tests.fakes.telegram`, then injects updates and
reads back what the bot sent over plain HTTP:

    POST /_control/updates     [update, ...] or {"updates": [...]} -> {"update_ids": [...]}
    POST /_control/send_text   {"chat_id": 1, "text": "hi", ...make_message options} -> update
    GET  /_control/calls       ?method=sendMessage&since=<index> -> {"calls": [...], "next": n}
    POST /_control/fail        FakeTelegram.fail() arguments; "when": {param: value} matches
    POST /_control/delay       {"method": "sendMessage", "seconds": 0.2}
    POST /_control/drop        {"method": "getUpdates", "times": 1}
    POST /_control/config      {"privacy_off": true, "chat_admins": {"-100": [1]}, ...}
    POST /_control/reset
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._server import json_response

if TYPE_CHECKING:
    from .telegram import Call, FakeTelegram

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CONFIGURABLE = frozenset(
    {
        "bot_username",
        "bot_first_name",
        "privacy_off",
        "drafts_supported",
        "draft_error_status",
        "draft_error_description",
        "check_reply_targets",
    }
)
_FAIL_ARGS = frozenset(
    {"status", "description", "retry_after", "migrate_to_chat_id", "times", "raw_body"}
)


def control_routes(tg: FakeTelegram) -> list[web.RouteDef]:
    return [
        web.post("/_control/updates", _guard(lambda body: _updates(tg, body))),
        web.post("/_control/send_text", _guard(lambda body: tg.send_text(**body))),
        web.get("/_control/calls", functools.partial(_calls, tg)),
        web.post("/_control/fail", _guard(lambda body: _fail(tg, body))),
        web.post("/_control/delay", _guard(lambda body: _delay(tg, body))),
        web.post("/_control/drop", _guard(lambda body: _drop(tg, body))),
        web.post("/_control/config", _guard(lambda body: _config(tg, body))),
        web.post("/_control/reset", _guard(lambda _body: _reset(tg))),
    ]


def _guard(action: Callable[[Any], Any]) -> Handler:
    """Wrap a sync action on the JSON body: 400 with the reason on bad input, else its result."""

    async def handler(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
            result = action(body)
        except (ValueError, TypeError, KeyError) as exc:
            return json_response({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 400)
        return json_response({"ok": True, "result": result})

    return handler


def _updates(tg: FakeTelegram, body: Any) -> list[int]:
    updates = body.get("updates") if isinstance(body, dict) else body
    if not isinstance(updates, list):
        raise TypeError("expected a list of updates")
    return [tg.push_update(update)["update_id"] for update in updates]


def call_to_json(index: int, call: Call) -> dict[str, Any]:
    return {
        "index": index,
        "method": call.method,
        "params": call.params,
        "at": call.at,
        "failed": call.failed,
        "error": call.error,
        "result": call.result,
    }


async def _calls(tg: FakeTelegram, request: web.Request) -> web.StreamResponse:
    since = int(request.query.get("since", 0))
    method = request.query.get("method", "").lower()
    calls = tg.calls
    selected = [
        call_to_json(index, call)
        for index, call in enumerate(calls[since:], start=since)
        if not method or call.method.lower() == method
    ]
    return json_response({"calls": selected, "next": len(calls)})


def _fail(tg: FakeTelegram, body: dict[str, Any]) -> bool:
    method = body["method"]
    when_params = body.get("when")
    kwargs = {key: value for key, value in body.items() if key in _FAIL_ARGS}
    if isinstance(when_params, dict):
        expected = dict(when_params)
        kwargs["when"] = lambda params: all(params.get(k) == v for k, v in expected.items())
    tg.fail(method, **kwargs)
    return True


def _delay(tg: FakeTelegram, body: dict[str, Any]) -> bool:
    tg.delay(body["method"], float(body["seconds"]))
    return True


def _drop(tg: FakeTelegram, body: dict[str, Any]) -> bool:
    tg.drop_connection(body["method"], int(body.get("times", 1)))
    return True


def _config(tg: FakeTelegram, body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - _CONFIGURABLE - {"chat_admins", "chat_creators"}
    if unknown:
        raise KeyError(f"not configurable: {sorted(unknown)}")
    for key in _CONFIGURABLE & set(body):
        setattr(tg, key, body[key])
    if "chat_admins" in body:
        tg.chat_admins = {int(chat): set(users) for chat, users in body["chat_admins"].items()}
    if "chat_creators" in body:
        tg.chat_creators = {int(chat): int(user) for chat, user in body["chat_creators"].items()}
    return {key: getattr(tg, key) for key in sorted(_CONFIGURABLE)}


def _reset(tg: FakeTelegram) -> bool:
    tg.reset()
    return True
