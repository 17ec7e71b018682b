"""Local stand-ins for Telegram's Bot API and an OpenAI-compatible server.

Tests run the real bot against these on 127.0.0.1 (there is no network). Exports are loaded
lazily so `python -m tests.fakes.telegram` does not import the module twice (runpy warns).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .openai import ChatRequest, Chunks, Endless, Error, FakeOpenAI, Hang, Reply
    from .telegram import Call, FakeTelegram

__all__ = [
    "Call",
    "ChatRequest",
    "Chunks",
    "Endless",
    "Error",
    "FakeOpenAI",
    "FakeTelegram",
    "Hang",
    "Reply",
]

_HOMES = {
    "Call": ".telegram",
    "FakeTelegram": ".telegram",
    "ChatRequest": ".openai",
    "Chunks": ".openai",
    "Endless": ".openai",
    "Error": ".openai",
    "FakeOpenAI": ".openai",
    "Hang": ".openai",
    "Reply": ".openai",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
