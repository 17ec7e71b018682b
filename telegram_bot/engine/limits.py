"""Usage limits: messages per minute per user, tokens per day per user and per chat.

The decisions are small pure pieces (`RateWindow`, `daily_refusal`) so they are tested alone;
`Limits` puts them together with the store. The per-minute window lives in memory (a restart
forgives one burst, which is harmless); the daily token totals come from the store's usage
table, so they survive restarts. A day is a UTC day. Owners (`OWNER_IDS`) are exempt. A message
over a limit is refused before anything is stored or sent to the model. Nothing here imports
`telegram`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from ..storage import Store

WINDOW = 60.0  # seconds: RATE_LIMIT_PER_MINUTE counts messages in a sliding minute


def today(now: datetime | None = None) -> date:
    """The UTC day usage is booked on."""
    return (now or datetime.now(UTC)).date()


def seconds_to_midnight(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (midnight - now).total_seconds()


def humanize(seconds: float) -> str:
    """ "45 s", "12 min", "3 h 5 min": how long until a limit resets."""
    seconds = max(1, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = (seconds + 59) // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is not answered, and in how many seconds that changes."""

    kind: str  # "rate", "user_tokens" or "chat_tokens"
    limit: int
    resets_in: float

    def message(self) -> str:
        wait = humanize(self.resets_in)
        if self.kind == "rate":
            return (
                f"You're sending messages faster than I may answer ({self.limit} a minute). "
                f"Please try again in {wait}."
            )
        whose = "You have" if self.kind == "user_tokens" else "This chat has"
        return (
            f"{whose} used today's allowance of {self.limit:,} tokens. It resets at "
            f"00:00 UTC, in {wait}."
        )


class RateWindow:
    """At most `per_minute` messages per user in any sliding minute (0 = unlimited)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._seen: dict[int, deque[float]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def take(self, user_id: int) -> float | None:
        """Counts one message; returns None if allowed, else seconds until a slot frees up."""
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

    def give_back(self, user_id: int) -> None:
        """Uncounts the user's latest message: it was refused before reaching the model."""
        seen = self._seen.get(user_id)
        if seen:
            seen.pop()

    def _forget_idle(self, now: float) -> None:
        """Drops users with no message in the window, so the dict never grows without bound."""
        if len(self._seen) < 1024:
            return
        for user_id in [u for u, s in self._seen.items() if not s or s[-1] <= now - WINDOW]:
            del self._seen[user_id]


def daily_refusal(
    used_by_user: int, used_by_chat: int, settings: Settings, now: datetime | None = None
) -> Refusal | None:
    """The daily token limits, checked against what was used so far today."""
    user_limit, chat_limit = settings.daily_token_limit_user, settings.daily_token_limit_chat
    if user_limit and used_by_user >= user_limit:
        return Refusal("user_tokens", user_limit, seconds_to_midnight(now))
    if chat_limit and used_by_chat >= chat_limit:
        return Refusal("chat_tokens", chat_limit, seconds_to_midnight(now))
    return None


class Limits:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.rate = RateWindow(settings.rate_limit_per_minute)

    def is_owner(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.settings.owner_ids

    async def check(self, user_id: int | None, chat_id: int) -> Refusal | None:
        """None if this user may ask the model now (and counts the message); else why not.

        A message with no person behind it (`user_id` None: an anonymous admin posting as the
        group) has no user limits, but the chat's daily limit still holds for it."""
        if self.is_owner(user_id):
            return None
        s = self.settings
        if s.daily_token_limit_user or s.daily_token_limit_chat:
            day = today()
            by_user = by_chat = 0
            if s.daily_token_limit_user and user_id is not None:
                by_user = (await self.store.usage_totals(day, day, user_id=user_id)).total
            if s.daily_token_limit_chat and chat_id < 0:
                by_chat = (await self.store.usage_totals(day, day, chat_id=chat_id)).total
            refusal = daily_refusal(by_user, by_chat, s)
            if refusal is not None:
                return refusal
        if user_id is None:
            return None
        wait = self.rate.take(user_id)
        if wait is not None:
            return Refusal("rate", s.rate_limit_per_minute, wait)
        return None

    def refund(self, user_id: int | None) -> None:
        """A message `check` counted turned out to ask nothing of the model (a /retry with
        nothing to retry, or of someone else's question): it must not count against the user."""
        if user_id is not None and not self.is_owner(user_id):
            self.rate.give_back(user_id)
