"""A model server's prompt cache: the key that routes a chat to it, the tokens it reused.

Prompts are laid out so consecutive turns share a long prefix (`memory/compose.py`). OpenAI
caches such prefixes and routes calls that carry the same `prompt_cache_key` to the same cache;
llama.cpp keeps the previous prompt in its slot. Both report how much they reused, in different
places; `cached_tokens` reads either, and the bot books it beside the prompt tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)
FIELD = "prompt_cache_key"


def cache_key(settings: Settings, chat: str) -> str:
    """The chat's `prompt_cache_key`: stable, so every call of a chat lands on the provider's
    cache of its prefix, and not reversible to the chat's id (an HMAC keyed with the bot
    token, which the model provider never sees; chat ids are small enough to guess)."""
    secret = (settings.telegram_bot_token or str(settings.database_path)).encode()
    digest = hmac.new(secret, f"prompt-cache:{chat}".encode(), hashlib.sha256).hexdigest()
    return f"chat-{digest[:32]}"


def cache_fields(settings: Settings, chat: str) -> dict[str, Any]:
    """The request fields for a chat's calls (none without a chat)."""
    return {FIELD: cache_key(settings, chat)} if chat else {}


class CacheKeys:
    """Servers that refused the field: a strict one (some validate every field) is asked again
    without it, and it is not sent there again until a restart; the key is only a hint."""

    def __init__(self) -> None:
        self._refused: set[str] = set()  # base URLs

    def body_for(self, base: str, body: dict[str, Any]) -> dict[str, Any]:
        if FIELD in body and base in self._refused:
            return {k: v for k, v in body.items() if k != FIELD}
        return body

    def refused(self, base: str, body: dict[str, Any], exc: BaseException) -> bool:
        """Whether `exc` is the server refusing the field (then remembered)."""
        if FIELD not in body or FIELD not in str(exc):
            return False
        log.info("The model server rejects prompt_cache_key; it is no longer sent")
        self._refused.add(base)
        return True


def cached_tokens(raw: Any, body: Any = None) -> int:
    """Prompt tokens the server reports it reused from its prompt cache: OpenAI's
    `usage.prompt_tokens_details.cached_tokens`, else llama.cpp's `timings.cache_n` (in the
    reply's body, or a stream's last chunk); 0 when it says neither."""
    details = raw.get("prompt_tokens_details") if isinstance(raw, dict) else None
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        return max(0, details["cached_tokens"])
    timings = body.get("timings") if isinstance(body, dict) else None
    if isinstance(timings, dict) and isinstance(timings.get("cache_n"), int):
        return max(0, timings["cache_n"])
    return 0
