"""JSON control API of the fake OpenAI server, for drivers running in another process.

POST /_control/enqueue    one behaviour or a list; a behaviour is a string (reply text) or
                          {"reply": {...Reply fields}} / {"error": {...Error fields}} /
                          {"hang": seconds} / {"endless": {...Endless fields}} /
                          {"chunks": {...Chunks fields}}
GET  /_control/requests   ?since=<index> -> {"requests": [{index, body, at}], "next": n}
POST /_control/config     {"latency": 1.0, "chunk_chars": 8, "chunk_delay": 0.01,
                           "token_factor": 1.3, "context_window": 8192, "api_key": null,
                           "reject_stream_options": false}
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
    from .openai import Behaviour, FakeOpenAI

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CONFIGURABLE = frozenset(
    {
        "latency",
        "chunk_chars",
        "chunk_delay",
        "token_factor",
        "context_window",
        "api_key",
        "reject_stream_options",
        "models",
    }
)


def control_routes(ai: FakeOpenAI) -> list[web.RouteDef]:
    return [
        web.post("/_control/enqueue", _guard(lambda body: _enqueue(ai, body))),
        web.get("/_control/requests", functools.partial(_requests, ai)),
        web.post("/_control/config", _guard(lambda body: _config(ai, body))),
        web.post("/_control/reset", _guard(lambda _body: _reset(ai))),
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


def behaviour_from_json(item: Any) -> Behaviour:
    from .openai import Chunks, Endless, Error, Hang, Reply

    if isinstance(item, str):
        return item
    if isinstance(item, dict) and len(item) == 1:
        [(kind, value)] = item.items()
        if kind == "reply":
            return Reply(**value) if isinstance(value, dict) else Reply(str(value))
        if kind == "error":
            return Error(**value)
        if kind == "hang":
            return Hang(float(value))
        if kind == "endless" and isinstance(value, dict):
            return Endless(**value)
        if kind == "chunks" and isinstance(value, dict):
            return Chunks(**value)
    raise ValueError(f"not a behaviour: {item!r}")


def _enqueue(ai: FakeOpenAI, body: Any) -> int:
    items = body if isinstance(body, list) else [body]
    ai.enqueue(*(behaviour_from_json(item) for item in items))
    return ai.queued


async def _requests(ai: FakeOpenAI, request: web.Request) -> web.StreamResponse:
    since = int(request.query.get("since", 0))
    requests = ai.requests
    selected = [
        {
            "index": index,
            "body": chat.body,
            "at": chat.at,
            "prompt_tokens": chat.prompt_tokens,
            "first_token_at": chat.first_token_at,
        }
        for index, chat in enumerate(requests[since:], start=since)
    ]
    return json_response({"requests": selected, "next": len(requests)})


def _config(ai: FakeOpenAI, body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - _CONFIGURABLE
    if unknown:
        raise KeyError(f"not configurable: {sorted(unknown)}")
    for key, value in body.items():
        setattr(ai, key, value)
    return {key: getattr(ai, key) for key in sorted(_CONFIGURABLE)}


def _reset(ai: FakeOpenAI) -> bool:
    ai.reset()
    return True
