"""The storage interface the engine and the adapters depend on, and the factory that opens one.

The bot talks to storage only through `Store`, a small Protocol, so every backend runs the very
same tests in `tests/test_store.py`, which are parametrised over them. SQLite (`sqlite/`) is
the embedded default; PostgreSQL (`postgres/`) is for a database shared by several replicas. The
methods are what the bot does with its data, not tables: each is one atomic step, and a
message's hot path is four of them (`add_user_turn`, `get_persona`, `backlog`, `add_reply`;
`search_turns` too when older turns exist).

The inbox (`inbox_add`, `inbox_done`, `inbox_pending`) keeps every raw update from before
Telegram is told it arrived until it has been handled, so a crash loses nothing acknowledged.
It is shaped for replicas too: adding says which updates are new (the caller's to handle);
on PostgreSQL each is owned by the replica that added it, and a dead replica's are handed to
a live one by `inbox_pending`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import date
from typing import Protocol

from ..config import Settings
from ..models import (
    Backlog,
    ChatKey,
    InboxUpdate,
    NewSummary,
    NewTurn,
    StoredTurn,
    Summary,
    Turn,
    UsageTotals,
)


class Store(Protocol):
    async def open(self) -> None:
        """Connects and brings the schema up to date (nothing to do when open already).
        Raises StorageUnusable, whose line names the database and what is wrong with it."""

    async def close(self) -> None:
        """Closes the connection; the store can be opened again."""

    async def add_user_turn(self, turn: NewTurn, *, chat_kind: str = "private") -> StoredTurn:
        """Stores a user's message durably (committed on return), or finds it stored.

        Insert-or-get on the message's Telegram id (`turn.tg_message_id`, unique per chat):
        Telegram delivers an update again when the bot died before confirming it, and with
        several replicas two may race for it; exactly one stores it (`created`), every other
        caller gets the same id and whether it was answered (a turn whose `reply_to` is that id
        is stored). A message without a Telegram id (the console) is always stored. Either way
        it marks the chat active again (`set_chat_active`): someone who blocked the bot and now
        writes to it can be answered.

        Media (m008): the turn's `kind`, `duration` and `attachments` (metadata only: the
        platform's file ids, never bytes or URLs) are stored with it and read back on every
        `Turn` (`backlog`, `last_exchange`, `search_turns`...).
        """

    async def archive(self, chat: ChatKey) -> int:
        """Marks every live turn of the chat archived; returns how many. Nothing is deleted."""

    async def set_chat_active(self, chat_id: int, active: bool) -> None:
        """Marks a chat (every topic of it) active or not: not when the bot was blocked or
        removed, active again when it is added back or a user writes."""

    async def get_persona(self, chat_id: int) -> str | None:
        """The chat's own system prompt, or None for the default."""

    async def set_persona(self, chat_id: int, persona: str | None, by_user: int | None) -> None:
        """Sets (or with None, clears) the chat's system prompt, recording who changed it."""

    async def add_overheard(
        self, turn: NewTurn, *, keep: int, chat_kind: str = "group"
    ) -> StoredTurn:
        """Stores a group message not addressed to the bot as context for the next one that is
        (insert-or-get on its Telegram id, as `add_user_turn`: a redelivered one is stored once).

        It joins the history like any user turn, but of the overheard messages after the chat's
        last addressed turn only the newest `keep` are kept; older ones are deleted.
        """

    async def move_chat(self, old_chat_id: int, new_chat_id: int) -> int:
        """Moves everything stored for a chat (history, summaries, settings) to a new id, in one
        transaction: a group that became a supergroup. Where the new id already has a row that
        must be unique (settings), the new one wins; usage totals of the same day add up.
        Returns how many messages moved."""

    # -- reliability: usage accounting, retry, redelivered updates ---------------------------

    async def record_usage(
        self,
        chat: ChatKey | int,
        user_id: int | None,
        day: date,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        audio_seconds: int = 0,
        reasoning_tokens: int = 0,
        cached_tokens: int = 0,
    ) -> None:
        """Adds one model call's tokens to the day's totals of (chat, user).

        `user_id` None is usage no user caused (summaries); it still counts for the chat.
        `audio_seconds` books a transcription (m008's `usage.audio_seconds`: speech-to-text is
        billed by the second); `usage_totals` and `top_chats` sum it into
        `UsageTotals.audio_seconds`. `reasoning_tokens` (m012) is how many of the completion
        tokens a reasoning model spent thinking (`UsageTotals.reasoning_tokens`; `add_reply`
        books its `turn.usage.reasoning_tokens` the same way). `cached_tokens` are those of
        `prompt_tokens` the server served from its prompt cache (m011 / p008), summed into
        `UsageTotals.cached_tokens`; `add_reply` books the reply's `usage.cached_tokens` too.
        """

    async def add_reply(
        self, turn: NewTurn, *, user_id: int | None, day: date, chat_kind: str = "private"
    ) -> int:
        """Stores a model's reply (`turn.reply_to` is the user turn it answers), booking its
        `usage` (if any) on `day` for the chat and `user_id` as `record_usage` does, in the same
        transaction: the reply and what it cost are stored together or not at all, in one
        write. Returns the reply's id. A reply stored before it is sent has
        `turn.undelivered` set (and no `tg_message_id`) until `mark_delivered`."""

    async def mark_delivered(self, turn_id: int, tg_message_id: int | None) -> None:
        """The reply `turn_id` reached the chat: clears its `undelivered` mark and records the
        platform's id of its (first) message."""

    async def usage_totals(
        self,
        first_day: date,
        last_day: date,
        *,
        user_id: int | None = None,
        chat_id: int | None = None,
    ) -> UsageTotals:
        """Usage from `first_day` to `last_day` (inclusive), of one user and/or chat or all."""

    async def top_chats(
        self, first_day: date, last_day: date, limit: int
    ) -> list[tuple[int, UsageTotals]]:
        """The chats that used the most tokens in those days, busiest first."""

    async def last_exchange(self, chat: ChatKey) -> tuple[Turn, list[Turn]] | None:
        """The newest live user turn addressed to the bot (overheard group chatter is not a
        question) and the live assistant turns after it (for /retry)."""

    async def supersede(self, turn_ids: Sequence[int], by: int) -> None:
        """Archives replies that /retry replaced, linking them to their successor."""

    # -- memory (rolling summaries and recall) ---------------------------------------------

    async def unsummarised_turns(self, chat: ChatKey, max_tokens: int | None = None) -> list[Turn]:
        """Live turns not yet folded into the summary, oldest first; with `max_tokens`, only
        the newest that fit (but always the newest one)."""

    async def current_summary(self, chat: ChatKey) -> Summary | None:
        """The latest summary of the current conversation (None after /reset)."""

    async def backlog(self, chat: ChatKey, max_tokens: int) -> Backlog:
        """`current_summary` and `unsummarised_turns(chat, max_tokens)` in one read, whether
        those turns are all there are, and the id of the conversation's oldest live turn.

        Each message's prompt needs all of it: compaction can then tell from the turns alone
        whether a fold is due, and recall is not searched when no turn is older than the
        verbatim window."""

    async def save_summary(self, summary: NewSummary) -> Summary:
        """Stores a new rolling summary and, atomically, marks every live message up to its
        `last_message_id` summarised. Nothing is deleted."""

    async def search_turns(
        self, chat: ChatKey, words: Sequence[str], *, before_id: int, limit: int = 8
    ) -> list[Turn]:
        """Full-text recall: live turns of this chat (never another chat, never before a
        /reset) older than `before_id` containing any of `words`, best match first. The words
        are plain text, never query syntax."""

    async def token_factors(self) -> dict[str, float]:
        """The learned token-count correction factor of every model seen."""

    async def set_token_factor(self, model: str, factor: float) -> None:
        """Stores a model's learned correction factor, replacing the previous one."""

    # -- the inbox: nothing Telegram handed over is lost --------------------------------------

    async def inbox_add(self, updates: Sequence[InboxUpdate]) -> list[int]:
        """Keeps raw updates durably, all in one write (committed on return), before Telegram
        is told they arrived; returns the ids of those that were new, in the order given.

        An update already kept (Telegram delivered it again; handled or still pending) is not
        stored again and not returned, so whoever adds it first handles it and nobody else
        does. A backend for replicas makes the new ones the caller's to handle (a lease)."""

    async def inbox_done(
        self, update_ids: Sequence[int], *, forget_before: float | None = None
    ) -> None:
        """Marks updates handled, in one write (unknown ids are ignored). A handled update
        keeps only its id, to recognise a late redelivery; with `forget_before`, handled
        updates received before that time (seconds since the epoch) are forgotten."""

    async def inbox_pending(self) -> list[InboxUpdate]:
        """The updates kept but not handled (what a crash left undone), in update_id order,
        which is the order Telegram sent them in. With several replicas (PostgreSQL) only
        those no live replica owns, and they become the caller's (p007)."""


def open_store(settings: Settings) -> Store:
    """The store the settings name, not yet open: PostgreSQL at `settings.database_url` when
    it is set, else SQLite at `settings.database_path`."""
    # A backend's modules load only when it is chosen (PostgreSQL's driver is an optional extra).
    if settings.database_url:
        from .postgres.store import PostgresStore

        return PostgresStore(
            settings.database_url,
            pool_size=settings.database_pool_size,
            pgbouncer=settings.database_pgbouncer,
        )
    from .sqlite.store import SQLiteStore

    return SQLiteStore(settings.database_path, busy_timeout=settings.database_busy_timeout)


def claim_database(settings: Settings) -> AbstractContextManager[None]:
    """While held, no other bot process can claim the database the settings name; raises
    `AlreadyRunning` (naming the other process) if one holds it. SQLite serves one bot
    process (two would both fetch the same updates): an exclusive lock on a file beside the
    database, which the system releases however the process ends. PostgreSQL, made for
    replicas, claims nothing. The console and the sqlite3 shell never claim, so they can look
    in."""
    if settings.database_url:
        return nullcontext()
    from .sqlite.lock import ProcessLock

    return ProcessLock(settings.database_path)
