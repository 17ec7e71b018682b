"""Flood control for every Bot API call: wait as long as Telegram says, then send again.

python-telegram-bot lets one `BaseRateLimiter` see every request; this one does no rate
limiting of its own, it only answers `RetryAfter` ("flood control exceeded, retry in N
seconds") by waiting and retrying a few times, so a reply to /help or a button press is not
lost to a burst. Calls whose pace the reply sender manages itself are passed straight through:
a streaming preview (draft or edit) skips an update rather than queueing behind the wait, and
a typing indicator is not worth waiting for. Polling handles flood control on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

log = logging.getLogger(__name__)

Result = bool | dict[str, Any] | list[dict[str, Any]]

PACED_BY_SENDER = frozenset({"getupdates", "sendmessagedraft", "editmessagetext", "sendchataction"})
MAX_WAITS = 3


def retry_seconds(exc: RetryAfter) -> float:
    delay: float | timedelta = exc.retry_after
    return delay.total_seconds() if isinstance(delay, timedelta) else float(delay)


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
        for attempt in itertools.count():
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                if attempt >= MAX_WAITS:
                    raise
                seconds = retry_seconds(exc)
                log.warning(
                    "Flood control on %s: waiting %.1f s, then sending again", endpoint, seconds
                )
                await asyncio.sleep(seconds)
        raise AssertionError("unreachable")  # pragma: no cover
