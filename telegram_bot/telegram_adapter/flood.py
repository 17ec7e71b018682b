"""Waiting before sending again: flood control on every Bot API call, transient failures on a
delivery. One mechanism, bounded, and cut short by shutdown.

python-telegram-bot lets one `BaseRateLimiter` see every request; `FloodWait` does no rate
limiting of its own. It answers `RetryAfter` ("flood control exceeded, retry in N seconds") by
waiting and sending again, up to `MAX_WAITS` times and `MAX_FLOOD_WAIT` seconds in all: a
reply to /help or a button press is not lost to a burst, but an hour of flood control is not
waited out (the call fails at once, as it would without the wait, and its caller drops that
one message with a log line). A delivery (`sendMessage`, and the sender's final edits) also
survives a transient failure (a proxy's 502, any 5xx, a network error or a timeout): it is
sent again after `DELIVERY_BACKOFF`; a message whose confirmation was lost may then arrive
twice, which beats not at all.

Calls whose pace the reply sender manages itself pass straight through: a streaming preview
(draft or edit) skips an update rather than queueing behind a wait, and a typing indicator is
not worth waiting for; the sender waits for its final edits with the same `with_flood_wait`.
Polling handles its faults on its own.

From `begin_shutdown` on, no wait may end after the shutdown grace period: a wait that would
is given up at once, so SIGTERM ends the process within SHUTDOWN_GRACE even while a delivery
waits. The clock is the event loop's.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, Final, TypeVar

from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError
from telegram.ext import BaseRateLimiter

log = logging.getLogger(__name__)

T = TypeVar("T")
Result = bool | dict[str, Any] | list[dict[str, Any]]

PACED_BY_SENDER = frozenset({"getupdates", "sendmessagedraft", "editmessagetext", "sendchataction"})
DELIVERIES = frozenset({"sendmessage"})  # every answer and every line reaches a chat so
MAX_WAITS: Final = 3  # flood-control waits of one call
MAX_FLOOD_WAIT: Final = 60.0  # seconds one call may wait for flood control, its waits together
DELIVERY_BACKOFF: Final = (0.25, 0.5, 1.0, 2.0)  # seconds before each new try (±20%)


def retry_seconds(exc: RetryAfter) -> float:
    """How long Telegram asks to wait (a timedelta with PTB_TIMEDELTA, else seconds)."""
    delay: float | timedelta = exc.retry_after
    return delay.total_seconds() if isinstance(delay, timedelta) else float(delay)


def is_transient(exc: TelegramError) -> bool:
    """A failure that sending again may cure: 5xx, a network error, a timeout (PTB raises all
    of them as NetworkError, but also BadRequest, which sending again never cures)."""
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)


class FloodWait(BaseRateLimiter[None]):
    def __init__(self, max_flood_wait: float = MAX_FLOOD_WAIT) -> None:
        self.max_flood_wait = max_flood_wait
        self._stopping = asyncio.Event()
        self._deadline = float("inf")  # loop time after which no wait may end

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    def begin_shutdown(self, grace: float) -> None:
        """No wait may end later than `grace` seconds from now; longer ones give up at once."""
        self._deadline = asyncio.get_running_loop().time() + grace
        self._stopping.set()

    def may_wait(self, seconds: float, until: float | None = None) -> bool:
        """Whether a wait of `seconds` ends by `until` (loop time; by default MAX_FLOOD_WAIT
        from now) and by the shutdown deadline."""
        now = asyncio.get_running_loop().time()
        limit = now + self.max_flood_wait if until is None else until
        return now + seconds <= min(limit, self._deadline)

    async def pause(self, seconds: float, until: float | None = None) -> bool:
        """Waits `seconds` if `may_wait`; False, without waiting on, when it may not (also when
        shutdown begins during the wait and the wait would outlast its grace period)."""
        if not self.may_wait(seconds, until):
            return False
        loop = asyncio.get_running_loop()
        end = loop.time() + max(seconds, 0.0)
        if not self._stopping.is_set():
            try:
                async with asyncio.timeout_at(end):
                    await self._stopping.wait()
            except TimeoutError:
                return True
            if end > self._deadline:
                return False
        await asyncio.sleep(max(end - loop.time(), 0.0))
        return True

    async def with_flood_wait(
        self, call: Callable[[], Awaitable[T]], what: str = "a request", *, delivery: bool = False
    ) -> T:
        """Runs a Bot API call, waiting out flood control (and, for a delivery, transient
        failures) within the bounds above; otherwise the call's error propagates."""
        flood_until = asyncio.get_running_loop().time() + self.max_flood_wait
        waits = tries = 0
        while True:
            try:
                return await call()
            except RetryAfter as exc:
                seconds = retry_seconds(exc)
                if waits < MAX_WAITS and self.may_wait(seconds, flood_until):
                    log.warning(
                        "Flood control on %s: waiting %.1f s, then sending again", what, seconds
                    )
                    waits += 1
                    if await self.pause(seconds, flood_until):
                        continue
                log.warning("Flood control on %s (retry after %.0f s): giving up", what, seconds)
                raise
            except TelegramError as exc:
                if not delivery or not is_transient(exc) or tries >= len(DELIVERY_BACKOFF):
                    raise
                delay = DELIVERY_BACKOFF[tries] * random.uniform(0.8, 1.2)
                tries += 1
                log.warning("%s failed (%s); sending again in %.1f s", what, exc, delay)
                if not await self.pause(delay):
                    raise

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Result]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: None,
    ) -> Result:
        name = endpoint.lower()
        if name in PACED_BY_SENDER:
            return await callback(*args, **kwargs)
        return await self.with_flood_wait(
            lambda: callback(*args, **kwargs), endpoint, delivery=name in DELIVERIES
        )
