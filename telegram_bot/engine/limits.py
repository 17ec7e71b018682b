"""Usage limits: messages per minute per user, tokens per day per user and per chat.

The decisions are small pure pieces (`daily_refusal`, `Refusal`) so they are tested alone;
`Limits` puts them together with the store and the per-minute window (a coordination
interface: in memory for one process, shared by replicas). The daily token totals come from
the store's usage table, so they survive restarts. A day is a UTC day. Owners (`OWNER_IDS`) are
exempt. The engine checks a message before anything is stored or sent to the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ..clock import seconds_to_midnight, today

if TYPE_CHECKING:
    from ..config import Settings
    from ..coordination import RateWindow
    from ..storage import Store


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
    def __init__(self, store: Store, settings: Settings, rate: RateWindow) -> None:
        self.store = store
        self.settings = settings
        self.rate = rate

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
        wait = await self.rate.take(user_id)
        if wait is not None:
            return Refusal("rate", s.rate_limit_per_minute, wait)
        return None
