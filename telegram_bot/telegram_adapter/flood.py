"""Flood control for every Bot API call: wait as long as Telegram says, then send again.

One mechanism, used two ways. python-telegram-bot lets one `BaseRateLimiter` see every
request; `FloodWait` does no rate limiting of its own, it only answers `RetryAfter` ("flood
control exceeded, retry in N seconds") by waiting and retrying a few times (`with_flood_wait`),
so a reply to /help or a button press is not lost to a burst. Calls whose pace the reply
sender manages itself pass straight through: a streaming preview (draft or edit) skips an
update rather than queueing behind the wait, and a typing indicator is not worth waiting for;
the sender waits for its final edits with the same `with_flood_wait`. Polling handles flood
control on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

log = logging.getLogger(__name__)

T = TypeVar("T")
Result = bool | dict[str, Any] | list[dict[str, Any]]

PACED_BY_SENDER = frozenset({"getupdates", "sendmessagedraft", "editmessagetext", "sendchataction"})
MAX_WAITS = 3


def retry_seconds(exc: RetryAfter) -> float:
    """How long Telegram asks to wait (a timedelta with PTB_TIMEDELTA, else seconds)."""
    delay: float | timedelta = exc.retry_after
    return delay.total_seconds() if isinstance(delay, timedelta) else float(delay)


async def with_flood_wait(call: Callable[[], Awaitable[T]], what: str = "a request") -> T:
    """Runs a Bot API call, waiting out flood control up to MAX_WAITS times."""
    for attempt in itertools.count():
        try:
            return await call()
        except RetryAfter as exc:
            if attempt >= MAX_WAITS:
                raise
            seconds = retry_seconds(exc)
            log.warning("Flood control on %s: waiting %.1f s, then sending again", what, seconds)
            await asyncio.sleep(seconds)
    raise AssertionError("unreachable")  # pragma: no cover


class FloodWait(BaseRateLimiter[None]):
    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Result]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: None,
    ) -> Result:
        if endpoint.lower() in PACED_BY_SENDER:
            return await callback(*args, **kwargs)
        return await with_flood_wait(lambda: callback(*args, **kwargs), endpoint)
