"""Whether a replica's listening connection hears NOTIFYs at all.

LISTEN needs a session of its own. Through PgBouncer in transaction mode it is accepted, but the
server connection that ran it goes back to PgBouncer's pool at once, so no NOTIFY ever reaches
the replica: turns still pass (waiters poll), while a /stop sent to another replica is lost
without a word. `check_listening` finds that out at start, by sending the replica a NOTIFY of
its own on the pool (the way the other replicas send theirs), and says so in one ERROR line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from ..config import describe_database_url
from ..storage.postgres.connection import Database

log = logging.getLogger(__name__)

PROBE_CHANNEL = "telegram_bot_probe"
PROBE_TIMEOUT = 5.0  # seconds: a NOTIFY straight from PostgreSQL arrives in milliseconds


async def check_listening(
    listener: asyncpg.Connection, database: Database, replica_id: str, listen_url: str
) -> bool:
    """Whether a NOTIFY sent on `database`'s pool reaches `listener`; logs one line if not."""
    heard = asyncio.Event()

    def on_probe(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == replica_id:  # another replica's probe is not ours
            heard.set()

    await listener.add_listener(PROBE_CHANNEL, on_probe)
    try:
        await database.execute("SELECT pg_notify($1, $2)", PROBE_CHANNEL, replica_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(heard.wait(), PROBE_TIMEOUT)
    finally:
        with contextlib.suppress(Exception):  # the check is done either way
            await listener.remove_listener(PROBE_CHANNEL, on_probe)
    if not heard.is_set():
        log.error(
            "Replica %s: a NOTIFY did not arrive on the listening connection (%s) within %.0f s: "
            "LISTEN needs a session of its own, which PgBouncer in transaction mode does not "
            "give; point DATABASE_LISTEN_URL straight at PostgreSQL. Until then a /stop sent to "
            "another replica does not stop the answer, and a chat's next message may wait up to "
            "a second longer for its turn",
            replica_id,
            describe_database_url(listen_url),
            PROBE_TIMEOUT,
        )
    return heard.is_set()
