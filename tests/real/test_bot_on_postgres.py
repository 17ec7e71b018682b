"""What a user notices when the bot's PostgreSQL goes away and comes back.

The real bot (the harness, the fakes) reaches a real PostgreSQL through a TCP proxy
(tests/real/wire.py); stopping the proxy cuts every connection and refuses new ones, as a
failover or a restarting server does. The chat and group behaviour on PostgreSQL is covered by
the same end-to-end tests as SQLite (tests/test_private_chat.py, test_groups.py,
test_memory.py run on both).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from telegram_bot.errors import DatabaseUnavailable
from tests.databases import PostgresDatabase
from tests.fakes import FakeOpenAI, FakeTelegram
from tests.harness import RunningBot, eventually
from tests.real.wire import counting
from tests.test_private_chat import ALICE, ask

pytestmark = pytest.mark.real_server


async def test_a_database_outage_is_one_line_and_the_bot_recovers_by_itself(
    bot_factory: Callable[..., RunningBot], tg: FakeTelegram, ai: FakeOpenAI, pg_dsn: str
) -> None:
    database = PostgresDatabase(pg_dsn)  # read directly, not through the proxy
    async with counting(pg_dsn) as (proxy, through):
        bot = await bot_factory(database_url=through).start()
        try:
            [reply] = await ask(tg, ALICE, "hello")
            assert tg.visible_text(reply) == "Echo: hello"
            # A reply is stored just after it is delivered: wait for it, then cut the database.
            stored = "SELECT count(*) FROM messages"
            await eventually(lambda: database.query(stored), lambda rows: rows == [(2,)])
            port = proxy.port
            await proxy.stop()  # the database goes away

            [notice] = await ask(tg, ALICE, "are you there?")
            assert tg.visible_text(notice) == DatabaseUnavailable.user_message()
            assert len(ai.requests) == 1, "a message that could not be stored is not answered"

            await proxy.start(port)  # and comes back: no restart of the bot needed
            [reply] = await ask(tg, ALICE, "back again?")
            assert tg.visible_text(reply) == "Echo: back again?"
            assert [m["content"] for m in ai.requests[-1].messages[1:]] == [
                "hello",
                "Echo: hello",
                "back again?",
            ], "the history is intact"
        finally:
            await bot.stop()
