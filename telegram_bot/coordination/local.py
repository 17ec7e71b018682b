"""The in-process coordination: per-chat locks, the replies running here, a rate window.

Everything lives in this process's memory, which is exactly right for one process (the
default): nothing to set up, nothing to go stale. Entries vanish as soon as they are idle, so
ten thousand chats leave no ten thousand locks or windows behind. A restart forgives one
burst of the per-minute window, which is harmless.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..models import ChatKey, Status
from . import Coordination, OnStop, StopOutcome

WINDOW = 60.0  # seconds: RATE_LIMIT_PER_MINUTE counts messages in a sliding minute


class KeyedLocks:
    """Per-key asyncio locks that disappear when nobody holds or waits for them.

    asyncio.Lock wakes waiters first-in, first-out, so one key's holders run in arrival order
    while different keys run concurrently.
    """

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass(slots=True)
class _Running:
    author_id: int | None
    on_stop: OnStop
    stopped: bool = False


class LocalReplies:
    """The replies this process is writing, by chat (one at a time per chat)."""

    def __init__(self) -> None:
        self._running: dict[ChatKey, _Running] = {}

    async def begin(self, chat: ChatKey, author_id: int | None, on_stop: OnStop) -> None:
        self._running[chat] = _Running(author_id, on_stop)

    async def end(self, chat: ChatKey) -> None:
        self._running.pop(chat, None)

    async def stop(
        self, chat: ChatKey, by_user: int | None, notice: str | None = None
    ) -> StopOutcome:
        running = self._running.get(chat)
        if running is None or running.stopped:
            return StopOutcome.NOTHING
        if by_user is not None and running.author_id not in (None, by_user):
            return StopOutcome.NOT_YOURS
        running.stopped = True
        running.on_stop(Status.STOPPED, notice)
        return StopOutcome.STOPPED

    def interrupt_local(self) -> int:
        count = 0
        for running in list(self._running.values()):
            if not running.stopped:
                running.stopped = True
                running.on_stop(Status.PARTIAL, None)
                count += 1
        return count

    @property
    def local_count(self) -> int:
        return len(self._running)


class SlidingWindow:
    """At most `per_minute` messages per user in any sliding minute (0 = unlimited)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._seen: dict[int, deque[float]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    async def take(self, user_id: int) -> float | None:
        return self.take_now(user_id)

    def take_now(self, user_id: int) -> float | None:
        """`take` without the await (the decision is in memory)."""
        if self.per_minute <= 0:
            return None
        now = self._clock()
        seen = self._seen.setdefault(user_id, deque())
        while seen and seen[0] <= now - WINDOW:
            seen.popleft()
        if len(seen) >= self.per_minute:
            return seen[0] + WINDOW - now
        seen.append(now)
        self._forget_idle(now)
        return None

    def _forget_idle(self, now: float) -> None:
        """Drops users with no message in the window, so the dict never grows without bound."""
        if len(self._seen) < 1024:
            return
        for user_id in [u for u, s in self._seen.items() if not s or s[-1] <= now - WINDOW]:
            del self._seen[user_id]


def local_coordination(rate_limit_per_minute: int) -> Coordination:
    return Coordination(KeyedLocks(), LocalReplies(), SlidingWindow(rate_limit_per_minute))
