"""`SQLiteStore`: the `Store` interface over one SQLite file.

A thin async layer: each method is one trip to the connection's thread (`connection.py`), either
one statement or one plain function of `messages.py` / `memory.py` run there as a whole, so the
hot path of a message costs three trips: store it (`add_user_turn`), read what its prompt needs
(`backlog`), store the reply and its usage (`add_reply`). The small reads and writes of chats,
settings, usage and token factors are single statements, here. Every query is parameterised.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from ...models import (
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
from . import inbox, memory, messages, rows
from .connection import Connection

# Seconds the inbox waits for another process's lock before it gives way.
INBOX_WAIT = 0.2


class SQLiteStore:
    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._conn = Connection(path, busy_timeout)

    async def open(self) -> None:
        await self._conn.open()

    async def close(self) -> None:
        await self._conn.close()

    # -- messages ----------------------------------------------------------------------------

    async def add_user_turn(self, turn: NewTurn, *, chat_kind: str = "private") -> StoredTurn:
        now = time.time()
        return await self._conn.transaction(
            lambda db: messages.add_user_turn(db, turn, chat_kind, now)
        )

    async def add_overheard(
        self, turn: NewTurn, *, keep: int, chat_kind: str = "group"
    ) -> StoredTurn:
        now = time.time()
        return await self._conn.transaction(
            lambda db: messages.add_overheard(db, turn, keep, chat_kind, now)
        )

    async def add_reply(
        self, turn: NewTurn, *, user_id: int | None, day: date, chat_kind: str = "private"
    ) -> int:
        now = time.time()
        return await self._conn.transaction(
            lambda db: messages.add_reply(db, turn, user_id, day, chat_kind, now)
        )

    async def mark_delivered(self, turn_id: int, tg_message_id: int | None) -> None:
        await self._conn.execute(
            "UPDATE messages SET undelivered = 0, tg_message_id = ? WHERE id = ?",
            (tg_message_id, turn_id),
        )

    async def archive(self, chat: ChatKey) -> int:
        return await self._conn.execute(
            "UPDATE messages SET archived = 1 WHERE chat_id = ? AND thread_id = ? AND archived = 0",
            (chat.chat_id, chat.thread_id),
        )

    async def last_exchange(self, chat: ChatKey) -> tuple[Turn, list[Turn]] | None:
        return await self._conn.read(lambda db: messages.last_exchange(db, chat))

    async def supersede(self, turn_ids: Sequence[int], by: int) -> None:
        await self._conn.transaction(lambda db: messages.supersede(db, turn_ids, by))

    async def move_chat(self, old_chat_id: int, new_chat_id: int) -> int:
        return await self._conn.transaction(
            lambda db: messages.move_chat(db, old_chat_id, new_chat_id)
        )

    # -- chats and their settings ------------------------------------------------------------

    async def set_chat_active(self, chat_id: int, active: bool) -> None:
        await self._conn.execute(
            "UPDATE chats SET active = ?, updated_at = ? WHERE chat_id = ?",
            (int(active), time.time(), chat_id),
        )

    async def get_persona(self, chat_id: int) -> str | None:
        row = await self._conn.row(
            "SELECT persona FROM chat_settings WHERE chat_id = ?", (chat_id,)
        )
        return row[0] if row else None

    async def set_persona(self, chat_id: int, persona: str | None, by_user: int | None) -> None:
        await self._conn.execute(
            "INSERT INTO chat_settings (chat_id, persona, updated_by, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (chat_id) DO UPDATE SET persona = excluded.persona, "
            "updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            (chat_id, persona, by_user, time.time()),
        )

    # -- usage -------------------------------------------------------------------------------

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
        chat_id = chat.chat_id if isinstance(chat, ChatKey) else chat
        booking = (day.isoformat(), chat_id, user_id or 0)
        costs = (prompt_tokens, completion_tokens, audio_seconds, reasoning_tokens, cached_tokens)
        await self._conn.execute(messages.BOOK_USAGE, (*booking, *costs))

    async def usage_totals(
        self,
        first_day: date,
        last_day: date,
        *,
        user_id: int | None = None,
        chat_id: int | None = None,
    ) -> UsageTotals:
        sql = (
            "SELECT COALESCE(SUM(calls), 0), COALESCE(SUM(prompt_tokens), 0), "
            "COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(audio_seconds), 0), "
            "COALESCE(SUM(reasoning_tokens), 0), COALESCE(SUM(cached_tokens), 0) "
            "FROM usage WHERE day BETWEEN ? AND ?"
        )
        params: list[Any] = [first_day.isoformat(), last_day.isoformat()]
        if user_id is not None:
            sql += " AND user_id = ?"
            params.append(user_id)
        if chat_id is not None:
            sql += " AND chat_id = ?"
            params.append(chat_id)
        row = await self._conn.row(sql, params)
        return UsageTotals(*(int(v) for v in row)) if row else UsageTotals()

    async def top_chats(
        self, first_day: date, last_day: date, limit: int
    ) -> list[tuple[int, UsageTotals]]:
        found = await self._conn.rows(
            "SELECT chat_id, SUM(calls), SUM(prompt_tokens), SUM(completion_tokens), "
            "SUM(audio_seconds), SUM(reasoning_tokens), SUM(cached_tokens) FROM usage "
            "WHERE day BETWEEN ? AND ? GROUP BY chat_id "
            "ORDER BY SUM(prompt_tokens) + SUM(completion_tokens) DESC, chat_id LIMIT ?",
            (first_day.isoformat(), last_day.isoformat(), limit),
        )
        return [(int(r[0]), UsageTotals(*(int(v) for v in r[1:]))) for r in found]

    # -- memory: summaries and recall ----------------------------------------------------------

    async def unsummarised_turns(self, chat: ChatKey, max_tokens: int | None = None) -> list[Turn]:
        return await self._conn.read(lambda db: memory.unsummarised_turns(db, chat, max_tokens))

    async def current_summary(self, chat: ChatKey) -> Summary | None:
        return await self._conn.read(lambda db: memory.current_summary(db, chat))

    async def backlog(self, chat: ChatKey, max_tokens: int) -> Backlog:
        # Runs before every model call: every read in one trip.
        return await self._conn.read(lambda db: memory.backlog(db, chat, max_tokens))

    async def save_summary(self, summary: NewSummary) -> Summary:
        now = time.time()
        return await self._conn.transaction(lambda db: memory.save_summary(db, summary, now))

    async def search_turns(
        self, chat: ChatKey, words: Sequence[str], *, before_id: int, limit: int = 8
    ) -> list[Turn]:
        query = rows.fts_query(words)
        if not query or limit <= 0:
            return []
        return await self._conn.read(
            lambda db: memory.search_turns(db, chat, query, before_id, limit)
        )

    # -- token counting --------------------------------------------------------------------------

    async def token_factors(self) -> dict[str, float]:
        found = await self._conn.rows("SELECT model, factor FROM token_factors")
        return {row[0]: float(row[1]) for row in found}

    async def set_token_factor(self, model: str, factor: float) -> None:
        await self._conn.execute(
            "INSERT INTO token_factors (model, factor, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (model) DO UPDATE SET factor = excluded.factor, "
            "updated_at = excluded.updated_at",
            (model, factor, time.time()),
        )

    # -- the inbox -------------------------------------------------------------------------------

    async def inbox_add(self, updates: Sequence[InboxUpdate]) -> list[int]:
        if not updates:
            return []
        # The inbox gives way to another process's lock: the caller handles the updates
        # without it rather than hold every chat's updates back (telegram_adapter/inbox.py).
        return await self._conn.transaction(lambda db: inbox.add(db, updates), wait=INBOX_WAIT)

    async def inbox_done(
        self, update_ids: Sequence[int], *, forget_before: float | None = None
    ) -> None:
        if update_ids or forget_before is not None:
            await self._conn.transaction(
                lambda db: inbox.done(db, update_ids, forget_before), wait=INBOX_WAIT
            )

    async def inbox_pending(self) -> list[InboxUpdate]:
        return await self._conn.read(inbox.pending)
