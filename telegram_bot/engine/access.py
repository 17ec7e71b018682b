"""Who may use the bot, and who may change a chat: pure decisions, no Telegram types.

The rules (README, "Personas and admin control"):

- `OWNER_IDS` may do everything, everywhere; owners always pass the allowlists.
- A private chat is allowed when its user is allowed: `ALLOWED_USER_IDS` is empty (open) or
  lists them, or `ALLOWED_CHAT_IDS` lists the chat (a private chat's id is the user's id).
- A group listed in `ALLOWED_CHAT_IDS` is open to all its members: the group is the unit of
  trust, its admins decide who is in it. When `ALLOWED_CHAT_IDS` is non-empty, any other group
  is left. When it is empty, groups are open, but each speaker must be an allowed user.
- Changing a chat (/reset, /persona): owners anywhere; the user in their private chat; in a
  group, its administrators (an anonymous admin posting as the group counts as one).

The handlers feed these functions plain ids and flags, so every rule is testable alone. The
two small stateful helpers here (`RefusalLimiter`, `AdminCache`) take the clock as a function
for the same reason.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from .personas import Preset


class Verdict(Enum):
    ALLOW = "allow"
    REFUSE_USER = "refuse_user"  # tell the user (once in a while) their id, do nothing else
    LEAVE_CHAT = "leave_chat"  # a group the bot is not enabled for: say so and leave


@dataclass(frozen=True, slots=True)
class Policy:
    owners: frozenset[int] = frozenset()
    allowed_users: frozenset[int] = frozenset()
    allowed_chats: frozenset[int] = frozenset()

    def user_allowed(self, user_id: int | None) -> bool:
        if not self.allowed_users:
            return True
        return user_id is not None and (user_id in self.owners or user_id in self.allowed_users)

    def group_allowed(self, chat_id: int) -> bool:
        """Whether the bot may stay in this group at all."""
        return not self.allowed_chats or chat_id in self.allowed_chats

    def decide(self, *, chat_id: int | None, private: bool, user_id: int | None) -> Verdict:
        """The verdict for one update. `user_id` is None for a message posted as a chat
        (an anonymous admin, a linked channel): it passes only where the group is open to all."""
        if user_id is not None and user_id in self.owners:
            return Verdict.ALLOW
        if chat_id is None or private:
            allowed = self.user_allowed(user_id) or (
                chat_id is not None and chat_id in self.allowed_chats
            )
            return Verdict.ALLOW if allowed else Verdict.REFUSE_USER
        if not self.group_allowed(chat_id):
            return Verdict.LEAVE_CHAT
        if chat_id in self.allowed_chats or not self.allowed_users:
            return Verdict.ALLOW
        return Verdict.ALLOW if self.user_allowed(user_id) else Verdict.REFUSE_USER

    def may_manage(
        self, *, private: bool, user_id: int | None, is_admin: bool, as_the_chat: bool
    ) -> bool:
        """Whether this sender may /reset the chat or change its persona."""
        if user_id is not None and user_id in self.owners:
            return True
        if private:
            return True  # the user's own chat
        return as_the_chat or is_admin


@dataclass(slots=True)
class RefusalLimiter:
    """Answers a refused user (or a group being left, or a group member over a limit) at most
    once per `interval` seconds per key.

    Without it, a stranger could make the bot send one message per message they send: a spam
    and flood-control vector. Entries expire, so the memory it uses stays bounded.
    """

    interval: float
    clock: Callable[[], float] = time.monotonic
    _last: dict[Hashable, float] = field(default_factory=dict)
    # Several replicas: the decision is the database's (coordination/postgres.py).
    shared: Callable[[Hashable], Awaitable[bool]] | None = None

    async def answer_now(self, key: Hashable) -> bool:
        """`should_answer`, across every replica when `shared` is set."""
        if self.shared is not None:
            return await self.shared(key)
        return self.should_answer(key)

    def should_answer(self, key: Hashable) -> bool:
        now = self.clock()
        if len(self._last) > 10_000:
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last[key] = now
        return True


RECHECK_AFTER = 10.0  # a refusal re-asks Telegram when the cached list is at least this old


@dataclass(slots=True)
class AdminCache:
    """The administrators of each group, fetched with one getChatAdministrators call and kept
    for `ttl` seconds. A user missing from a list older than `RECHECK_AFTER` seconds triggers
    one fresh fetch, so a newly promoted admin is not refused for the whole `ttl`."""

    ttl: float
    clock: Callable[[], float] = time.monotonic
    _lists: dict[int, tuple[float, frozenset[int]]] = field(default_factory=dict)

    async def is_admin(
        self, chat_id: int, user_id: int, fetch: Callable[[int], Awaitable[frozenset[int]]]
    ) -> bool:
        now = self.clock()
        cached = self._lists.get(chat_id)
        if cached is not None:
            age = now - cached[0]
            if age < self.ttl and (user_id in cached[1] or age < RECHECK_AFTER):
                return user_id in cached[1]
        admins = await fetch(chat_id)
        self._lists[chat_id] = (now, admins)
        return user_id in admins

    def forget(self, chat_id: int) -> None:
        self._lists.pop(chat_id, None)


@dataclass(slots=True)
class Guard:
    """The access state of one running bot: rules, refusal pacing, admin lists, presets."""

    policy: Policy
    refusals: RefusalLimiter
    admins: AdminCache
    presets: dict[str, Preset]

    def follow_migration(self, old_chat_id: int, new_chat_id: int) -> bool:
        """A group became a supergroup: if the old id was allowed, the new one is too (until
        restart; the caller tells the owner to update ALLOWED_CHAT_IDS). True if it was added."""
        policy = self.policy
        if old_chat_id not in policy.allowed_chats or new_chat_id in policy.allowed_chats:
            return False
        self.policy = replace(policy, allowed_chats=policy.allowed_chats | {new_chat_id})
        return True

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        from .personas import load_presets

        return cls(
            Policy(settings.owner_ids, settings.allowed_user_ids, settings.allowed_chat_ids),
            RefusalLimiter(settings.refusal_interval),
            AdminCache(settings.admin_cache_seconds),
            load_presets(settings.personas_file, max_chars=settings.max_persona_chars),
        )
