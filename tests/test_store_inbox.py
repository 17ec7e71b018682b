"""The inbox part of the storage contract, run against every backend of tests/test_store.py
(a backend joins there, by one entry in `BACKENDS`, and must pass these too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from telegram_bot.models import ChatKey, InboxUpdate
from telegram_bot.storage import Store
from telegram_bot.storage.sqlite.store import SQLiteStore
from tests import test_store

# The parametrised fixtures of the storage contract: every backend there runs these too.
backend = test_store.backend
store = test_store.store

CHAT = ChatKey(42)
TOPIC = ChatKey(-100_123, 7)


def update(update_id: int, chat: ChatKey | None = CHAT, at: float = 1000.0) -> InboxUpdate:
    body = json.dumps({"update_id": update_id, "message": {"text": f"m{update_id}"}})
    return InboxUpdate(update_id, chat, body, at)


async def test_a_batch_is_kept_and_only_new_updates_are_reported(store: Store) -> None:
    assert await store.inbox_add([update(1), update(2, TOPIC), update(3, None)]) == [1, 2, 3]
    assert await store.inbox_add([update(2), update(4), update(3)]) == [4], "redelivered: not new"
    pending = await store.inbox_pending()
    assert [(u.update_id, u.chat) for u in pending] == [(1, CHAT), (2, TOPIC), (3, None), (4, CHAT)]
    assert json.loads(pending[1].body)["update_id"] == 2
    assert await store.inbox_add([]) == []


async def test_pending_updates_come_back_in_telegrams_order(store: Store) -> None:
    await store.inbox_add([update(9), update(3)])
    await store.inbox_add([update(5)])
    assert [u.update_id for u in await store.inbox_pending()] == [3, 5, 9]


async def test_a_handled_update_is_not_pending_and_not_new_when_it_comes_again(
    store: Store,
) -> None:
    await store.inbox_add([update(1), update(2), update(3)])
    await store.inbox_done([1, 3, 99])  # an unknown id is ignored
    assert [u.update_id for u in await store.inbox_pending()] == [2]
    assert await store.inbox_add([update(1)]) == [], "a late redelivery is recognised"


async def test_handled_updates_are_forgotten_after_a_while(store: Store) -> None:
    await store.inbox_add([update(1, at=100.0), update(2, at=200.0), update(3, at=150.0)])
    await store.inbox_done([1, 2], forget_before=150.0)
    assert await store.inbox_add([update(1, at=300.0)]) == [1], "forgotten: it is new again"
    assert await store.inbox_add([update(2)]) == [], "handled after the cut: remembered"
    assert [u.update_id for u in await store.inbox_pending()] == [1, 3], "pending: never forgotten"


async def test_the_inbox_survives_reopening(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "bot.sqlite3")
    await first.open()
    await first.inbox_add([update(1), update(2)])
    await first.inbox_done([1])
    await first.close()
    again = SQLiteStore(tmp_path / "bot.sqlite3")
    await again.open()
    try:
        assert [u.update_id for u in await again.inbox_pending()] == [2]
    finally:
        await again.close()


@pytest.mark.parametrize("count", [1, 700, 1500])
async def test_large_batches_are_one_call(store: Store, count: int) -> None:
    ids = list(range(1, count + 1))
    assert await store.inbox_add([update(i) for i in ids]) == ids
    await store.inbox_done(ids)
    assert await store.inbox_pending() == []
